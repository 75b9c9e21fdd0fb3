"""A/B bundle store: real bundles, real self-tests on this machine, real SIGKILLs at every phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from store_helpers import sha as _sha
from store_helpers import slots as _slots

from edgepack.cli import main
from edgepack.runtimes import (
    BundleCorruptError,
    BundleRejectedError,
    BundleStore,
    NoUsableDelegateError,
    SelfTestFailedError,
    StoreBusyError,
    StoreEmptyError,
    StoreNotWritableError,
    StoreStateError,
    read_bundle,
)
from edgepack.runtimes.bundle import npy_bytes, sha256_bytes, write_bundle


def _rebuild(src: Path, dst: Path, *, version: str | None = None, golden_shift: float = 0.0) -> Path:
    """A real bundle with consistent checksums: another version, or golden outputs shifted by ``golden_shift``."""
    bundle = read_bundle(src)
    files = {n: bundle.read(n) for n in bundle.names()}
    if golden_shift:
        for name in bundle.manifest.models[0].golden.outputs:
            files[name] = npy_bytes(bundle.array(name) + np.float32(golden_shift))
    manifest = replace(bundle.manifest, files={n: sha256_bytes(d) for n, d in files.items()},
                       version=version or bundle.manifest.version)
    return write_bundle(dst, manifest, files)


def test_install_rollback_status_and_gc(bundles, tmp_path: Path) -> None:
    a, b = bundles
    c = _rebuild(a, tmp_path / "c.epk", version="2")
    d = tmp_path / "not" / "yet"
    store = BundleStore(d)  # created
    assert store.status().active is None
    with pytest.raises(StoreEmptyError, match="store install"):
        store.load_active()
    with pytest.raises(StoreEmptyError, match="no previous"):
        store.rollback()
    st = store.install(a)
    assert st.active and st.active.sha256 == _sha(a) and st.active.precision == "fp32" and st.previous is None
    assert st.active.self_test.startswith("litert/") and st.generation == 1
    st = store.install(b)
    assert st.active and st.previous and (st.active.sha256, st.previous.sha256) == (_sha(b), _sha(a))
    assert st.active.precision == "full_int8" and st.active.name == read_bundle(b).manifest.name
    with store.load_active(delegates=("cpu",)) as session:
        assert session.bundle.path == store.active_path() == d / "slots" / f"{_sha(b)}.epk"
        assert session.delegate == "cpu"
    st = store.rollback()
    assert st.active and st.previous and (st.active.sha256, st.previous.sha256) == (_sha(a), _sha(b))
    assert st.generation == 3
    st = store.install(a)  # re-installing the active bundle keeps the rollback target
    assert st.active and st.previous and (st.active.sha256, st.previous.sha256) == (_sha(a), _sha(b))
    st = store.install(c)  # B is retired: only active + previous are kept
    assert _slots(d) == sorted([f"{_sha(c)}.epk", f"{_sha(a)}.epk"])
    assert BundleStore(d).status() == st  # a fresh open reads the same pointer
    assert json.loads((d / "state.json").read_text())["active"]["version"] == "2"


def test_corrupt_bundles_are_rejected_and_old_active_kept(bundles, tmp_path: Path) -> None:
    a, _ = bundles
    store = BundleStore(tmp_path / "s")
    before = store.install(a)
    data = a.read_bytes()
    flipped = tmp_path / "flipped.epk"
    with zipfile.ZipFile(a) as zin, zipfile.ZipFile(flipped, "w") as zout:
        for info in zin.infolist():
            raw = zin.read(info.filename)
            if info.filename.endswith(".tflite"):
                raw = raw[:100] + bytes([raw[100] ^ 1]) + raw[101:]
            zout.writestr(info.filename, raw)
    truncated = tmp_path / "truncated.epk"
    truncated.write_bytes(data[: len(data) // 2])
    for bad, cause in ((flipped, "checksum mismatch"), (truncated, "not a valid bundle|truncated")):
        with pytest.raises(BundleRejectedError, match=cause) as info:
            store.install(bad)
        assert isinstance(info.value.__cause__, BundleCorruptError)
        assert "active bundle stays" in str(info.value)
        assert store.status() == before
        assert _slots(tmp_path / "s") == [f"{_sha(a)}.epk"]  # the rejected copy is gone
    with pytest.raises(BundleRejectedError, match="does not exist"):
        store.install(tmp_path / "missing.epk")
    with store.load_active() as session:
        assert session.bundle.path is not None and _sha(session.bundle.path) == _sha(a)


def test_bundle_failing_its_self_test_is_refused(bundles, tmp_path: Path) -> None:
    a, b = bundles
    wrong = _rebuild(a, tmp_path / "wrong_golden.epk", golden_shift=0.5)
    read_bundle(wrong)  # checksums and schema pass ...
    store = BundleStore(tmp_path / "s")
    before = store.install(b)
    with pytest.raises(SelfTestFailedError, match="golden-mismatch") as info:  # ... the self-test does not
        store.install(wrong)
    assert isinstance(info.value.__cause__, NoUsableDelegateError)
    assert store.status() == before and _slots(tmp_path / "s") == [f"{_sha(b)}.epk"]


def test_store_that_cannot_be_written_fails_up_front(bundles, tmp_path: Path) -> None:
    a, _ = bundles
    afile = tmp_path / "file"
    afile.write_text("x")
    for where in (afile, afile / "store"):  # a file where a directory is expected: refused even for root
        with pytest.raises(StoreNotWritableError, match="cannot be created or written"):
            BundleStore(where)
    if Path("/sys/kernel").is_dir():  # sysfs refuses new entries even to root
        with pytest.raises(StoreNotWritableError):
            BundleStore("/sys/edgepack-store-test")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() == 0:  # root ignores permission bits; the checks above cover root
            BundleStore(ro).install(a)
        else:
            with pytest.raises(StoreNotWritableError, match="Permission denied"):
                BundleStore(ro)
    finally:
        ro.chmod(0o700)
    reader = BundleStore(tmp_path / "s", read_only=True)  # nothing created, nothing written
    assert reader.status().active is None and not (tmp_path / "s").exists()
    with pytest.raises(StoreNotWritableError, match="read_only"):
        reader.install(a)


def test_corrupt_pointer_is_a_clear_error_and_recover_rebuilds_it(bundles, tmp_path: Path, capsys) -> None:
    a, b = bundles
    d = tmp_path / "s"
    store = BundleStore(d)
    store.install(a)
    store.install(b)
    (d / "state.json").write_bytes(b'{"schema": "edgepack.store/1", "active": {"sha2')  # torn by hand
    with pytest.raises(StoreStateError, match="corrupt.*store recover"):
        BundleStore(d).status()  # opening does not clean up: both slots survive
    assert len(_slots(d)) == 2
    with pytest.raises(StoreStateError):
        store.install(a)
    assert main(["store", "status", str(d)]) == 2
    assert "error:" in capsys.readouterr().err
    os.utime(d / "slots" / f"{_sha(a)}.epk", (1, 1))  # A is the older slot
    assert main(["store", "recover", str(d)]) == 0
    st = store.status()
    assert st.active and st.previous and (st.active.sha256, st.previous.sha256) == (_sha(b), _sha(a))
    (d / "slots" / f"{_sha(a)}.epk").unlink()
    with pytest.raises(StoreStateError, match="file is missing"):
        store.status()
    assert store.recover().previous is None


def test_leftovers_are_collected_at_open(bundles, tmp_path: Path) -> None:
    a, b = bundles
    d = tmp_path / "s"
    (d / "slots").mkdir(parents=True)
    (d / "slots" / ".slot-dead.tmp").write_bytes(b"partial")
    (d / ".pointer-dead.tmp").write_bytes(b"{")
    orphan = d / "slots" / f"{_sha(b)}.epk"
    orphan.write_bytes(b.read_bytes())
    store = BundleStore(d)  # no pointer yet: temp files go, complete slots stay (recover may need them)
    assert _slots(d) == [orphan.name] and not (d / ".pointer-dead.tmp").exists()
    store.install(a)
    assert _slots(d) == [f"{_sha(a)}.epk"]


def test_concurrent_installs_are_serialised(bundles, tmp_path: Path) -> None:
    a, b = bundles
    d = tmp_path / "s"
    BundleStore(d).install(a)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\nf = open(sys.argv[1], 'a')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)", str(d / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with pytest.raises(StoreBusyError, match="holds the lock"):
            BundleStore(d, lock_timeout=0.3).install(b)
        assert 0.3 <= time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()
    errors: list[BaseException] = []

    def install(path: Path) -> None:
        try:
            BundleStore(d).install(path)
        except StoreBusyError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=install, args=(p,)) for p in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st = BundleStore(d).status()
    assert not errors and st.active and st.previous and {st.active.sha256, st.previous.sha256} == {_sha(a), _sha(b)}
    assert st.generation == 5


def test_cli_install_status_rollback(bundles, tmp_path: Path, capsys) -> None:
    a, b = bundles
    d = str(tmp_path / "s")
    assert main(["store", "install", d, str(a)]) == 0
    assert main(["store", "install", d, str(b), "--delegates", "xnnpack,cpu"]) == 0
    out = capsys.readouterr().out
    assert "installed" in out and "self-test passed on litert/xnnpack" in out
    assert main(["store", "status", d]) == 0
    out = capsys.readouterr().out
    assert "active:" in out and "full_int8" in out and "previous:" in out and "fp32" in out
    assert main(["store", "rollback", d]) == 0
    assert "rolled back" in capsys.readouterr().out
    assert main(["store", "status", d, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["active"]["sha256"], status["previous"]["sha256"]) == (_sha(a), _sha(b))
    bad = tmp_path / "bad.epk"
    bad.write_text("not a zip")
    assert main(["store", "install", d, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refused bad.epk") and "active bundle stays" in err


# ---- kill -9 at any moment of install / rollback -------------------------------------------------------
