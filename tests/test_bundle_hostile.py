"""Hostile bundles (issue 11): a zip bomb is refused in bounded memory, and every mutation ends in an EdgepackError.

The zip bomb is built here with zipfile: a ~1 MB bundle whose model entry is 1 GiB of zeros. Peak RSS is read in
a fresh subprocess (``VmHWM`` of ``/proc/self/status``, or ``ru_maxrss`` of the child for the CLI).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.runtimes import BundleCorruptError, BundleError, NoUsableDelegateError, load, read_bundle
from edgepack.runtimes.bundle import BundleLimits, npy_bytes, sha256_bytes, write_bundle
from edgepack.runtimes.errors import (
    BundleSchemaError,
    BundleTooLargeError,
    BundleUnreadableError,
    ConfigError,
    EdgepackError,
)

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_bundle  # the atheris harness: its seed bundle builder is shared with the hypothesis suite

sys.path.pop(0)

GIB = 1 << 30
MODEL = "models/m.tflite"
PEAK_LIMIT_KB = 150 * 1024
PY = sys.executable
CLI = str(Path(sys.executable).with_name("edgepack"))


def _patch_header(data: bytearray, name: bytes, *, size: int | None = None, crc: int | None = None) -> None:
    """Overwrite the uncompressed size and/or CRC-32 that the local and central headers of entry ``name`` declare."""
    for sig, name_at, crc_at, size_at in ((b"PK\x03\x04", 30, 14, 22), (b"PK\x01\x02", 46, 16, 24)):
        at = data.find(sig)
        while at >= 0 and data[at + name_at: at + name_at + len(name)] != name:
            at = data.find(sig, at + 1)
        assert at >= 0
        for value, off in ((size, size_at), (crc, crc_at)):
            if value is not None:
                data[at + off: at + off + 4] = struct.pack("<I", value)


def _patch_sizes(data: bytearray, name: bytes, size: int) -> None:
    _patch_header(data, name, size=size)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The zip bomb (honest sizes, right sha256) and its variants (lying size; wrong sha256), each ~1 MB."""
    manifest, files = fuzz_bundle.seed_files()
    zeros, digest = bytes(1 << 20), hashlib.sha256()
    for _ in range(1024):
        digest.update(zeros)
    manifest["files"][MODEL] = manifest["models"][0]["sha256"] = digest.hexdigest()
    manifest["models"][0]["bytes"] = GIB
    folder = tmp_path_factory.mktemp("bomb")
    honest = folder / "honest.epk"
    with zipfile.ZipFile(honest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("manifest.json", json.dumps(manifest), compress_type=zipfile.ZIP_STORED)
        for name, data in sorted(files.items()):
            if name != MODEL:
                zf.writestr(name, data)
        with zf.open(MODEL, "w") as fh:
            for _ in range(1024):
                fh.write(zeros)
    raw = bytearray(honest.read_bytes())
    lying = bytearray(raw)
    _patch_sizes(lying, MODEL.encode(), 4096)
    (folder / "lying.epk").write_bytes(lying)
    bad_manifest = json.dumps(manifest).replace(digest.hexdigest(), "0" * 64).encode()
    wrong = raw.replace(json.dumps(manifest).encode(), bad_manifest)  # stored: same length, new CRC below
    _patch_header(wrong, b"manifest.json", crc=zlib.crc32(bad_manifest))
    (folder / "wrong_sha.epk").write_bytes(wrong)
    return {"honest": honest, "lying": folder / "lying.epk", "wrong_sha": folder / "wrong_sha.epk"}


def _peak_in_subprocess(code: str) -> tuple[str, int]:
    """(stdout, VmHWM in kB) of ``code`` run in a fresh interpreter."""
    tail = "\nprint([ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1])"
    out = subprocess.run([PY, "-c", code + tail], capture_output=True, text=True, timeout=300, check=True).stdout
    *lines, peak = out.strip().splitlines()
    return "\n".join(lines), int(peak)


def _refused(call: str) -> str:
    return f"""
from edgepack.runtimes import load, read_bundle
from edgepack.runtimes.bundle import BundleLimits
from edgepack.runtimes.errors import EdgepackError
try:
    {call}
    print("ACCEPTED")
except EdgepackError as exc:
    print(type(exc).__name__, str(exc).splitlines()[0])
"""


def test_zip_bomb_is_refused_by_read_bundle_and_load_in_bounded_memory(bomb: dict[str, Path]) -> None:
    assert bomb["honest"].stat().st_size < 1_500_000
    for kind, call, expect in [
        ("honest", "read_bundle({p!r})", "BundleTooLargeError"),
        ("honest", "load({p!r})", "BundleTooLargeError"),
        ("lying", "read_bundle({p!r})", "BundleCorruptError"),
        ("lying", "load({p!r})", "BundleCorruptError"),
        # caps raised past the bomb: every byte is streamed through sha256, none is kept
        ("wrong_sha", "load({p!r}, limits=BundleLimits(max_model_bytes=2 << 30, max_total_bytes=2 << 30))",
         "BundleCorruptError " + str(bomb["wrong_sha"]) + ": checksum mismatch for models/m.tflite"),
    ]:
        out, peak_kb = _peak_in_subprocess(_refused(call.format(p=str(bomb[kind]))))
        assert out.startswith(expect), (kind, call, out)
        assert peak_kb < PEAK_LIMIT_KB, (kind, call, peak_kb)


def test_zip_bomb_with_right_checksums_verifies_in_constant_memory(bomb: dict[str, Path]) -> None:
    code = f"""
from edgepack.runtimes import read_bundle
from edgepack.runtimes.bundle import BundleLimits
b = read_bundle({str(bomb['honest'])!r}, limits=BundleLimits(max_model_bytes=2 << 30, max_total_bytes=2 << 30))
print(len(b.names()))
"""
    out, peak_kb = _peak_in_subprocess(code)
    assert out == "5" and peak_kb < PEAK_LIMIT_KB, (out, peak_kb)


@pytest.mark.parametrize("verb", ["verify", "run"])
def test_zip_bomb_is_refused_by_the_cli_in_bounded_memory(bomb: dict[str, Path], tmp_path: Path, verb: str) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4, 4, 1), np.float32))
    argv = [CLI, verb, str(bomb["honest"]), *([str(x)] if verb == "run" else [])]
    code = ("import resource, subprocess, sys\n"
            f"r = subprocess.run({argv!r}, capture_output=True, text=True)\n"
            "print(r.returncode, repr(r.stderr.strip()))\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    status, peak = out.strip().splitlines()
    rc, _, err = status.partition(" ")
    assert rc == "2" and "cap" in err and "\\n" not in err.strip("'"), status
    assert int(peak) < PEAK_LIMIT_KB, peak


def test_bundle_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_model_bytes"):
        BundleLimits(max_model_bytes=0)
    assert BundleLimits().max_model_bytes == 512 << 20


def test_cap_on_bytes_read_applies_to_every_file(tmp_path: Path) -> None:
    p = tmp_path / "seed.epk"
    p.write_bytes(fuzz_bundle.seed_bundle())
    assert read_bundle(p).labels() == ["cat", "dog", "bird"]
    with pytest.raises(BundleTooLargeError, match="cap"):
        read_bundle(p, limits=BundleLimits(max_file_bytes=100))
    with pytest.raises(BundleTooLargeError, match="cap"):
        read_bundle(p, limits=BundleLimits(max_model_bytes=100))
    with pytest.raises(BundleTooLargeError, match="entries"):
        read_bundle(p, limits=BundleLimits(max_entries=3))


def test_model_changed_after_verification_is_not_returned(tmp_path: Path) -> None:
    p = tmp_path / "seed.epk"
    p.write_bytes(fuzz_bundle.seed_bundle())
    bundle = read_bundle(p)
    manifest, files = fuzz_bundle.seed_files()
    files[MODEL] = b"evil" + files[MODEL][4:]
    p.write_bytes(fuzz_bundle.zip_bytes(json.dumps(manifest).encode(), files))
    with pytest.raises(BundleCorruptError, match="changed after it was verified"):
        bundle.model_bytes(bundle.manifest.models[0])


# --- unreadable paths and messages (items 5 and 8) -------------------------------------------------------------

def test_directory_given_as_bundle_says_it_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is a directory") as info:
        read_bundle(tmp_path)
    assert "does not exist" not in str(info.value)


def test_fifo_given_as_bundle_is_unreadable_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.epk"
    os.mkfifo(fifo)
    with pytest.raises(BundleUnreadableError, match="not a regular file"):
        read_bundle(fifo)


def test_unreadable_bundle_is_one_line_as_a_non_root_user(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """chmod 000, read with the effective uid of "nobody" (as root anything is readable): a real PermissionError."""
    from edgepack.cli import main

    for d in (tmp_path, *tmp_path.parents):
        if d == Path("/"):
            break
        d.chmod(d.stat().st_mode | 0o011)  # let "nobody" traverse (pytest makes its folders 0700)
    p = tmp_path / "secret.epk"
    p.write_bytes(fuzz_bundle.seed_bundle())
    p.chmod(0)
    was = os.geteuid()
    if was == 0:
        os.seteuid(65534)
    try:
        with pytest.raises(BundleUnreadableError, match="cannot be read.*Permission denied"):
            read_bundle(p)
        capsys.readouterr()
        rc = main(["inspect", str(p)])
    finally:
        os.seteuid(was)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot be read" in err, err


def test_bundle_without_models_says_so(bundle_factory, tmp_path: Path) -> None:
    bundle = read_bundle(bundle_factory("fp32"))
    files = {n: bundle.read(n) for n in bundle.names() if not n.startswith(("models/", "golden/fashion"))}
    manifest = replace(bundle.manifest, models=[], files={n: sha256_bytes(d) for n, d in files.items()})
    empty = write_bundle(tmp_path / "empty.epk", manifest, files)
    with pytest.raises(BundleSchemaError, match="holds no model") as info:
        load(empty)
    assert "install" not in str(info.value).lower()


def test_no_usable_delegate_advises_by_what_was_tried(bundle_factory, tmp_path: Path) -> None:
    bundle = read_bundle(bundle_factory("fp32"))
    entry = bundle.manifest.models[0]
    files = {n: bundle.read(n) for n in bundle.names()}
    out = entry.golden.outputs[0]
    files[out] = npy_bytes(bundle.array(out) + 10)  # no delegate can match these
    manifest = replace(bundle.manifest, files={n: sha256_bytes(d) for n, d in files.items()})
    bad = write_bundle(tmp_path / "wrong_golden.epk", manifest, files)
    with pytest.raises(NoUsableDelegateError) as tried:
        load(bad, delegates=("cpu",))
    assert "add 'cpu'" not in str(tried.value) and "even the CPU" in str(tried.value)
    with pytest.raises(NoUsableDelegateError, match="add 'cpu'"):
        load(bad, delegates=("gpu",))


# --- hypothesis mutation suite ------------------------------------------------------------------------------------

SEED = fuzz_bundle.seed_bundle()
SEED_MANIFEST, SEED_FILES = fuzz_bundle.seed_files()


def _must_be_ours(tmp_path: Path, data: bytes) -> None:
    """Read ``data`` as a bundle: success or an EdgepackError, in bounded memory, writing nothing."""
    import tracemalloc

    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    p = folder / "b.epk"
    p.write_bytes(data)
    tracemalloc.start()
    try:
        fuzz_bundle.exercise(p)
    except EdgepackError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert [q.name for q in folder.iterdir()] == ["b.epk"]


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for info, data in entries:
                zf.writestr(info, data)
    return buf.getvalue()


def _seed_entries() -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    return [("manifest.json", json.dumps(SEED_MANIFEST).encode()), *sorted(SEED_FILES.items())]


HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYP
@given(cut=st.integers(0, len(SEED)))
def test_truncation_is_an_edgepack_error(tmp_path: Path, cut: int) -> None:
    _must_be_ours(tmp_path, SEED[:cut])


@HYP
@given(flips=st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 7)), min_size=1, max_size=8))
def test_bit_flips_are_an_edgepack_error(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(SEED)
    for at, bit in flips:
        data[at] ^= 1 << bit
    _must_be_ours(tmp_path, bytes(data))


NAMES = st.sampled_from(["../x", "/etc/passwd", "models/../../x", "C:/x", "a\\b", "./x", "models/", "a//b",
                         "models/m.tflite", "manifest.json", "labels.txt", "x\x00y", ".."])


@HYP
@given(name=NAMES | st.text(min_size=1, max_size=20), data=st.binary(max_size=64),
       mode=st.sampled_from([0, 0o100644, 0o120777, 0o040755, 0o010644, 0o020644]), encrypted=st.booleans())
def test_odd_entries_are_an_edgepack_error(tmp_path: Path, name: str, data: bytes, mode: int, encrypted: bool) -> None:
    """Traversal, absolute and duplicate names; symlink, directory, FIFO and device entries; encrypted flags."""
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    info.create_system = 3
    if encrypted:
        info.flag_bits |= 0x1
    _must_be_ours(tmp_path, _zip([*_seed_entries(), (info, data)]))


@HYP
@given(entry=st.sampled_from(["manifest.json", MODEL, "labels.txt"]),
       size=st.sampled_from([0, 1, 4095, 1 << 31, (1 << 32) - 1]))
def test_lying_declared_sizes_are_an_edgepack_error(tmp_path: Path, entry: str, size: int) -> None:
    data = bytearray(_zip(_seed_entries()))
    _patch_sizes(data, entry.encode(), size)
    _must_be_ours(tmp_path, bytes(data))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3), max_leaves=8)


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(SEED_MANIFEST)[1:]


@HYP
@given(where=st.sampled_from(PATHS), value=JSON, schema=st.sampled_from([None, "edgepack.bundle/1",
                                                                         "edgepack.bundle/9", 2, ""]))
def test_wrong_types_and_schema_in_manifest_are_an_edgepack_error(tmp_path: Path, where: tuple, value: object,
                                                                  schema: object) -> None:
    manifest = json.loads(json.dumps(SEED_MANIFEST))
    node = manifest
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    if schema is not None:
        manifest["schema"] = schema
    entries = [("manifest.json", json.dumps(manifest).encode()), *sorted(SEED_FILES.items())]
    _must_be_ours(tmp_path, _zip(entries))


# --- atheris: the bounded run of make test ----------------------------------------------------------------------

def test_atheris_bounded_run_finds_only_edgepack_errors(tmp_path: Path) -> None:
    env = {**os.environ, "EDGEPACK_FUZZ_CRASHES": str(tmp_path / "crashes")}
    out = subprocess.run([PY, str(Path(__file__).with_name("fuzz_bundle.py")), "-max_total_time=20",
                          "-rss_limit_mb=1024", str(tmp_path / "corpus")],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    last = out.stdout.strip().splitlines()[-1]
    inputs = int(last.split()[1])
    assert inputs > 500 and " 0 non-EdgepackError" in last and out.returncode == 0, (last, out.stderr[-3000:])
