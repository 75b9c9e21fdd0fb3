"""Issue 11 item 1, "integrity is not authenticity": signed bundles and a device trust store (docs/signing.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgepack.cli import main
from edgepack.runtimes import load, read_bundle
from edgepack.runtimes.errors import (
    BadSignatureError,
    BundleSignatureError,
    RevokedKeyError,
    SigningKeyError,
    TrustStoreError,
    UnsignedBundleError,
    UntrustedKeyError,
)
from edgepack.runtimes.signing import TrustStore, new_key, read_signature, sign_bundle, verify_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two key pairs, each alone in a trust folder: ``a`` (the publisher) and ``b`` (someone else)."""
    root = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("a", "b"):
        priv, _, _ = new_key(name, directory=root / name)
        out[name] = priv
    return out


@pytest.fixture()
def signed(bundle_factory, keys: dict[str, Path], tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    path = Path(shutil.copy(bundle_factory("fp32"), tmp_path / "signed.epk"))
    sign_bundle(path, key=keys["a"])
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    """Copy a bundle entry by entry, ``edit(name, data) -> data``; signature.json is kept as it was."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))
    return dst


def _tamper_and_rehash(src: Path, dst: Path) -> Path:
    """Alter one model byte, then recompute its sha256 in manifest.files and models[].sha256: integrity holds."""
    with zipfile.ZipFile(src) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        model = manifest["models"][0]["file"]
        data = bytearray(zf.read(model))
    data[len(data) // 2] ^= 0x01
    digest = hashlib.sha256(bytes(data)).hexdigest()
    manifest["files"][model] = digest
    manifest["models"][0]["sha256"] = digest

    def edit(name: str, raw: bytes) -> bytes:
        if name == model:
            return bytes(data)
        return json.dumps(manifest, indent=2, sort_keys=True).encode() if name == "manifest.json" else raw

    return _rewrite(src, dst, edit)


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _never_climb(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record any call of the delegate ladder: a refused bundle must never get that far."""
    import edgepack.runtimes.session as session

    calls: list[object] = []
    monkeypatch.setattr(session, "climb", lambda *a, **k: calls.append(a))
    return calls


def test_signed_bundle_is_accepted_by_load_and_verify(signed: Path, keys: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    trust = keys["a"].parent
    info = verify_bundle(signed, trust)
    assert info.key_name == "a" and info.bundle_name == read_bundle(signed).manifest.name
    session = load(signed, trust=TrustStore.from_dir(trust), backend="litert")
    assert session.delegate
    code, out, _ = _cli(capsys, "verify", signed, "--trust", trust, "--backend", "litert")
    assert code == 0 and "signature OK: signed by a" in out
    assert load(signed, backend="litert").delegate  # without a trust store nothing changes


@pytest.mark.parametrize("case", ["unsigned", "untrusted", "revoked", "tampered_and_rehashed", "manifest_field"])
def test_refused_by_load_and_verify_with_a_trust_store(case: str, bundle_factory, signed: Path,  # type: ignore[no-untyped-def]
                                                       keys: dict[str, Path], tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trust = tmp_path / "trust"
    shutil.copytree(keys["a"].parent, trust)
    (trust / "a.key").unlink()
    path, expected = signed, BundleSignatureError
    if case == "unsigned":
        path, expected = bundle_factory("fp32"), UnsignedBundleError
    elif case == "untrusted":
        trust, expected = keys["b"].parent, UntrustedKeyError
    elif case == "revoked":
        kid = verify_bundle(signed, trust).key_id
        (trust / "revoked.txt").write_text(f"# leaked 2026-11\n{kid}\n")
        expected = RevokedKeyError
    elif case == "tampered_and_rehashed":
        path, expected = _tamper_and_rehash(signed, tmp_path / "t.epk"), BadSignatureError
        read_bundle(path)  # every checksum agrees: only the signature can tell
    elif case == "manifest_field":
        def edit(name: str, raw: bytes) -> bytes:
            if name != "manifest.json":
                return raw
            m = json.loads(raw)
            m["preprocessing"]["mean"] = [v + 1.0 for v in m["preprocessing"]["mean"]]
            return json.dumps(m, indent=2, sort_keys=True).encode()

        path, expected = _rewrite(signed, tmp_path / "m.epk", edit), BadSignatureError
        read_bundle(path)
    calls = _never_climb(monkeypatch)
    with pytest.raises(expected):
        load(path, trust=trust)
    assert calls == []
    code, out, err = _cli(capsys, "verify", path, "--trust", trust)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert calls == []


def test_resigning_replaces_a_keys_signature_and_a_second_key_adds_one(signed: Path, keys: dict[str, Path],
                                                                       capsys) -> None:  # type: ignore[no-untyped-def]
    sign_bundle(signed, key=keys["a"])
    assert len(read_signature(signed)["signatures"]) == 1  # type: ignore[index]
    code, out, _ = _cli(capsys, "sign", signed, "--key", keys["b"])
    assert code == 0 and "2 signature(s)" in out
    assert verify_bundle(signed, keys["a"].parent).key_name == "a"
    assert verify_bundle(signed, keys["b"].parent).key_name == "b"
    _cli(capsys, "sign", signed, "--key", keys["b"], "--replace")
    assert len(read_signature(signed)["signatures"]) == 1  # type: ignore[index]
    with pytest.raises(UntrustedKeyError):
        verify_bundle(signed, keys["a"].parent)


def test_resigning_a_changed_bundle_drops_stale_signatures(signed: Path, keys: dict[str, Path],
                                                           tmp_path: Path) -> None:
    changed = _tamper_and_rehash(signed, tmp_path / "changed.epk")
    sign_bundle(changed, key=keys["b"])
    assert [s["keyid"] for s in read_signature(changed)["signatures"]] == [  # type: ignore[index]
        verify_bundle(changed, keys["b"].parent).key_id]


def test_keys_new_refuses_to_overwrite_an_existing_key(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _cli(capsys, "keys", "new", "release", "--dir", tmp_path)
    assert code == 0 and "key id" in out
    key = (tmp_path / "release.key").read_bytes()
    assert stat.S_IMODE((tmp_path / "release.key").stat().st_mode) == 0o600
    code, out, err = _cli(capsys, "keys", "new", "release", "--dir", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err
    assert (tmp_path / "release.key").read_bytes() == key
    with pytest.raises(SigningKeyError):
        new_key("../escape", directory=tmp_path)


def test_trust_store_errors_are_typed(tmp_path: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(TrustStoreError):
        TrustStore.from_dir(tmp_path / "missing")
    with pytest.raises(TrustStoreError):
        TrustStore.from_dir(tmp_path)  # no .pub
    (tmp_path / "x.pub").write_text("not a key")
    with pytest.raises(TrustStoreError):
        TrustStore.from_dir(tmp_path)
    trust = tmp_path / "t"
    shutil.copytree(keys["a"].parent, trust)
    (trust / "revoked.txt").write_text("abc\n")
    with pytest.raises(TrustStoreError):
        TrustStore.from_dir(trust)


def test_sign_and_verify_with_litert_level_imports_only(bundle_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = Path(shutil.copy(bundle_factory("fp32"), tmp_path / "b.epk"))
    code = f"""
from edgepack.runtimes import load
from edgepack.runtimes.signing import new_key, sign_bundle, verify_bundle
import sys
priv, pub, kid = new_key("dev", directory={str(tmp_path / 'k')!r})
sign_bundle({str(path)!r}, key=priv)
assert verify_bundle({str(path)!r}, pub.parent).key_id == kid
load({str(path)!r}, trust=pub.parent, backend="litert")
heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'onnx', 'torch', 'cv2')]
print('heavy', heavy)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "heavy []" in done.stdout


_DSSE = b'{"payloadType": "application/vnd.in-toto+json", '


@pytest.mark.parametrize("garbage", [b"", b"[]", b"\xff\xfe", b'{"payloadType": "x"}',
                                     _DSSE + b'"payload": "!!", "signatures": []}',
                                     _DSSE + b'"payload": "", "signatures": "ab"}'])
def test_a_malformed_signature_is_a_typed_refusal(garbage: bytes, signed: Path, keys: dict[str, Path],
                                                  tmp_path: Path) -> None:
    path = _rewrite(signed, tmp_path / "g.epk", lambda n, raw: garbage if n == "signature.json" else raw)
    with pytest.raises(UnsignedBundleError):
        verify_bundle(path, keys["a"].parent)
    assert read_signature(path) is None or isinstance(read_signature(path), dict)
    sign_bundle(path, key=keys["a"])  # re-signing repairs it
    assert verify_bundle(path, keys["a"].parent).key_name == "a"
