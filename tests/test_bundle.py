"""Bundle format v1: round trip, and every way a bundle can be broken gets a typed error."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgepack.runtimes import (
    BundleCorruptError,
    BundleError,
    BundleSchemaError,
    UnsafeBundleError,
    load,
    read_bundle,
)
from edgepack.runtimes.bundle import write_bundle


def _rewrite(src: Path, dst: Path, *, edit=None, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if edit:
                data = edit(info.filename, data)
            zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


def test_round_trip_keeps_manifest_and_files(bundle_factory, tmp_path: Path) -> None:
    path = bundle_factory("fp32")
    bundle = read_bundle(path)
    m = bundle.manifest
    assert m.schema == "edgepack.bundle/2"
    assert m.models[0].format == "tflite" and m.models[0].precision == "fp32"
    assert m.target.name == "rpi4" and m.recipe.precision.value == "fp32"
    assert set(m.files) == set(bundle.names())
    assert bundle.labels()[9] == "Ankle boot"
    assert bundle.golden_inputs()[0].shape == (1, 28, 28, 1)
    report = json.loads(bundle.read("report.json"))
    assert report["models"][0]["validation"]["outputs"][0]["cosine"] > 0.9999
    copy = write_bundle(tmp_path / "copy.epk", m, {n: bundle.read(n) for n in bundle.names()})
    assert read_bundle(copy).manifest == m


def test_golden_arrays_refuse_pickles(bundle_factory, tmp_path: Path) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    bundle = read_bundle(bundle_factory("fp32"))
    files = {n: bundle.read(n) for n in bundle.names()}
    files["golden/input_0.npy"] = buf.getvalue()
    from dataclasses import replace

    from edgepack.runtimes.bundle import sha256_bytes

    manifest = replace(bundle.manifest, files={n: sha256_bytes(d) for n, d in files.items()})
    bad = write_bundle(tmp_path / "pickle.epk", manifest, files)
    with pytest.raises(BundleCorruptError, match="plain .npy"):
        read_bundle(bad).golden_inputs()


def test_flipped_byte_in_model_is_detected(bundle_factory, tmp_path: Path) -> None:
    def flip(name: str, data: bytes) -> bytes:
        if name.endswith(".tflite"):
            mid = len(data) // 2
            return data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1 :]
        return data

    bad = _rewrite(bundle_factory("fp32"), tmp_path / "flipped.epk", edit=flip)
    with pytest.raises(BundleCorruptError, match="checksum mismatch for models/"):
        read_bundle(bad)
    with pytest.raises(BundleCorruptError):
        load(bad)


def test_truncated_bundle_is_corrupt(bundle_factory, tmp_path: Path) -> None:
    data = bundle_factory("fp32").read_bytes()
    bad = tmp_path / "truncated.epk"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleCorruptError, match="not a valid bundle|truncated"):
        read_bundle(bad)


def test_not_a_zip(tmp_path: Path) -> None:
    bad = tmp_path / "x.epk"
    bad.write_text("hello")
    with pytest.raises(BundleCorruptError):
        read_bundle(bad)


def test_missing_bundle_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        read_bundle(tmp_path / "nope.epk")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "models/../../x", "C:/x", "a\\b", "./x"])
def test_dangerous_entry_names_are_refused(bundle_factory, tmp_path: Path, name: str) -> None:
    bad = _rewrite(bundle_factory("fp32"), tmp_path / "evil.epk", extra={name: b"x"})
    with pytest.raises(UnsafeBundleError):
        read_bundle(bad)


def test_unlisted_extra_file_is_refused(bundle_factory, tmp_path: Path) -> None:
    bad = _rewrite(bundle_factory("fp32"), tmp_path / "extra.epk", extra={"models/evil.tflite": b"x"})
    with pytest.raises(BundleCorruptError, match="unlisted"):
        read_bundle(bad)


def test_unknown_schema_version_is_refused(bundle_factory, tmp_path: Path) -> None:
    def bump(name: str, data: bytes) -> bytes:
        if name == "manifest.json":
            raw = json.loads(data)
            raw["schema"] = "edgepack.bundle/99"
            return json.dumps(raw).encode()
        return data

    bad = _rewrite(bundle_factory("fp32"), tmp_path / "future.epk", edit=bump)
    with pytest.raises(BundleSchemaError, match="bundle/99.*not supported"):
        read_bundle(bad)


def test_manifest_with_unknown_key_is_refused(bundle_factory, tmp_path: Path) -> None:
    def add_key(name: str, data: bytes) -> bytes:
        if name == "manifest.json":
            raw = json.loads(data)
            raw["surprise"] = 1
            return json.dumps(raw).encode()
        return data

    bad = _rewrite(bundle_factory("fp32"), tmp_path / "unknown.epk", edit=add_key)
    with pytest.raises(BundleSchemaError, match="unknown key"):
        read_bundle(bad)


def test_oversized_declared_entry_is_refused(bundle_factory, tmp_path: Path, monkeypatch) -> None:
    from edgepack.runtimes import bundle as bundle_mod

    monkeypatch.setattr(bundle_mod, "MAX_FILE_BYTES", 1000)
    with pytest.raises(UnsafeBundleError, match="cap"):
        read_bundle(bundle_factory("fp32"))


def test_failed_write_leaves_nothing_and_keeps_old_file(bundle_factory, tmp_path: Path) -> None:
    bundle = read_bundle(bundle_factory("fp32"))
    target = tmp_path / "out.epk"
    target.write_bytes(b"previous")
    files = {n: bundle.read(n) for n in bundle.names()}
    files["labels.txt"] = b"changed"  # checksum no longer matches the manifest
    with pytest.raises(BundleError):
        write_bundle(target, bundle.manifest, files)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.epk"]
