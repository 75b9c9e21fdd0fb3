"""Issue 11 findings on the bundle store, each a test named after it: recover follows the generation log (never
mtime) and re-verifies what it activates, a corrupt active slot is reported and load_active falls back, a mistyped
store path is an error, downgrades are refused, and with a trust store only trusted signatures install."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from store_helpers import sha as _sha
from store_helpers import slots as _slots

from edgepack.cli import main
from edgepack.runtimes import BundleCorruptError, BundleRejectedError, BundleStore, StoreStateError, read_bundle
from edgepack.runtimes.bundle import sha256_bytes, write_bundle
from edgepack.runtimes.errors import DowngradeError, StoreNotFoundError
from edgepack.runtimes.store_state import LOG, is_downgrade, parse_version


def _with_version(src: Path, dst: Path, version: str) -> Path:
    """The same real bundle under another version (consistent checksums)."""
    bundle = read_bundle(src)
    files = {n: bundle.read(n) for n in bundle.names()}
    manifest = replace(bundle.manifest, files={n: sha256_bytes(d) for n, d in files.items()}, version=version)
    return write_bundle(dst, manifest, files)


def _corrupt(path: Path) -> None:
    """Flip bytes in the middle of a slot file (bit rot, a bad SD card)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))


def test_store_recover_picks_wrong__follows_the_generation_log_not_mtime(bundles, tmp_path: Path, capsys) -> None:
    a, b = bundles
    d = tmp_path / "s"
    store = BundleStore(d)
    store.install(a)
    store.install(b)
    store.install(a)
    store.install(b)
    store.install(a)
    before = store.rollback()  # B active, A previous, generation 6
    assert before.generation == 6 and before.active and before.active.sha256 == _sha(b)
    store.rollback()  # A active, B previous, generation 7
    os.utime(d / "slots" / f"{_sha(b)}.epk")  # B is the newest file: mtime would pick it
    os.utime(d / "slots" / f"{_sha(a)}.epk", (1, 1))
    (d / "state.json").write_bytes(b"\x00garbage{")
    with pytest.raises(StoreStateError, match="corrupt"):
        store.status()
    assert main(["store", "recover", str(d)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recovered: ") and "generation 8" in out
    st = store.status()
    assert st.active and st.previous and (st.active.sha256, st.previous.sha256) == (_sha(a), _sha(b))
    assert st.generation == 8 and not st.notes  # monotonic: one above any generation seen, never back to 1
    lines = (d / LOG).read_text().splitlines()
    assert [json.loads(ln)["generation"] for ln in lines] == list(range(1, 9))


def test_store_recover_with_intact_state_and_corrupt_active_slot_activates_the_previous(bundles, tmp_path: Path,
                                                                                      capsys, caplog) -> None:
    a, b = bundles
    d = tmp_path / "s"
    store = BundleStore(d)
    store.install(a)
    store.install(b)  # B active, A previous
    _corrupt(d / "slots" / f"{_sha(b)}.epk")
    # status reports it (exit 1), instead of looking healthy
    st = BundleStore(d, read_only=True).status()
    assert len(st.notes) == 1 and "active slot" in st.notes[0] and "corrupt" in st.notes[0]
    assert main(["store", "status", str(d)]) == 1
    assert "problem:" in capsys.readouterr().out
    # load_active falls back to the previous verified slot, and says so
    reader = BundleStore(d, read_only=True)
    with caplog.at_level(logging.WARNING, logger="edgepack.runtimes.store"), reader.load_active() as session:
        assert session.bundle.path is not None and _sha(session.bundle.path) == _sha(a)
    assert reader.fallback and "running the previous one" in reader.fallback
    assert any("running the previous one" in r.getMessage() for r in caplog.records)
    with pytest.raises(BundleCorruptError, match="corrupt"):
        reader.load_active(fallback=False)
    # recover does something now: the previous good slot becomes active, the corrupt one is dropped
    rec = store.recover()
    assert rec.active and rec.active.sha256 == _sha(a) and rec.previous is None and rec.generation == 3
    assert any("corrupt" in n for n in rec.notes)
    assert _slots(d) == [f"{_sha(a)}.epk"]
    with BundleStore(d, read_only=True).load_active() as session:
        assert _sha(session.bundle.path) == _sha(a)  # type: ignore[arg-type]


def test_store_recover_on_a_healthy_store_writes_nothing(bundles, tmp_path: Path, capsys) -> None:
    a, b = bundles
    d = tmp_path / "s"
    BundleStore(d).install(a)
    BundleStore(d).install(b)
    pointer = (d / "state.json").read_bytes()
    assert main(["store", "recover", str(d)]) == 0
    assert capsys.readouterr().out.startswith("nothing to recover")
    assert (d / "state.json").read_bytes() == pointer and len((d / LOG).read_text().splitlines()) == 2


def test_store_recover_skips_a_torn_log_line(bundles, tmp_path: Path) -> None:
    a, b = bundles
    d = tmp_path / "s"
    store = BundleStore(d)
    store.install(a)
    store.install(b)
    with (d / LOG).open("ab") as fh:
        fh.write(b'{"schema": "edgepack.store/1", "act')  # a crash mid-append
    store.rollback()  # the next entry starts on a fresh line
    (d / "state.json").unlink()
    st = BundleStore(d).recover()
    assert st.active and st.active.sha256 == _sha(a) and st.generation == 4


def test_store_recover_without_a_log_refuses_to_guess_between_slots(bundles, tmp_path: Path) -> None:
    a, b = bundles
    d = tmp_path / "s"
    store = BundleStore(d)
    store.install(a)
    store.install(b)
    (d / "state.json").unlink()
    (d / LOG).unlink()  # a store written before the log existed
    with pytest.raises(StoreStateError, match="names no slot that verifies.*store install"):
        BundleStore(d).recover()
    (d / "slots" / f"{_sha(a)}.epk").unlink()
    st = BundleStore(d).recover()  # one candidate: no choice to make
    assert st.active and st.active.sha256 == _sha(b)


def test_store_status_on_a_mistyped_path_is_one_line_error(bundles, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "typo"
    for path, words in ((missing, "does not exist"), (tmp_path, "is not a bundle store")):
        assert main(["store", "status", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and "edgepack store install" in err
        assert len(err.strip().splitlines()) == 1
    assert not missing.exists()  # nothing created
    for verb in ("recover", "rollback"):
        assert main(["store", verb, str(missing)]) == 2 and not missing.exists()
    capsys.readouterr()
    with pytest.raises(StoreNotFoundError):
        BundleStore(missing, read_only=True).require_exists()
    assert BundleStore(missing, read_only=True).status().active is None  # the library: an app may poll early


def test_version_order_is_dotted_numeric() -> None:
    assert parse_version("1.2") == parse_version("1.2.0") == parse_version("v1.2")
    assert is_downgrade("9", "10") is True and is_downgrade("10", "9") is False
    assert is_downgrade("1.2.3", "1.10") is True and is_downgrade("2", "2.0") is False
    assert is_downgrade("beta", "1") is None and is_downgrade("beta", "beta") is False


def test_store_refuses_a_downgrade_unless_told_and_rollback_stays_allowed(bundles, tmp_path: Path, capsys) -> None:
    a, _ = bundles
    v1 = _with_version(a, tmp_path / "v1.epk", "1.9")
    v2 = _with_version(a, tmp_path / "v2.epk", "1.10")
    d = tmp_path / "s"
    store = BundleStore(d)
    store.install(v1)
    store.install(v2)
    assert store.status().versions == {read_bundle(a).manifest.name: "1.10"}
    st = store.rollback()  # back to its own previous slot (1.9): allowed
    assert st.active and st.active.version == "1.9"
    store.rollback()
    with pytest.raises(DowngradeError, match="older than v1.10.*--allow-downgrade"):
        store.install(v1)
    assert store.status().active.version == "1.10"  # type: ignore[union-attr]
    assert main(["store", "install", str(d), str(v1)]) == 2
    assert "allow-downgrade" in capsys.readouterr().err
    assert main(["store", "install", str(d), str(v1), "--allow-downgrade"]) == 0
    assert store.status().versions[read_bundle(a).manifest.name] == "1.9"


def _tampered(signed: Path, dst: Path) -> Path:
    """The signed bundle with a changed labels file and every digest recomputed; its signature.json kept."""
    with zipfile.ZipFile(signed) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    entries["labels.txt"] = entries["labels.txt"].replace(b"Sneaker", b"Sandal!")
    manifest = json.loads(entries["manifest.json"])
    manifest["files"]["labels.txt"] = sha256_bytes(entries["labels.txt"])
    entries["manifest.json"] = json.dumps(manifest, indent=2).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    read_bundle(dst)  # checksums agree: only the signature can tell
    return dst


def test_store_with_a_trust_store_installs_only_trusted_signed_bundles(bundles, tmp_path: Path, capsys) -> None:
    from edgepack.runtimes.signing import new_key, sign_bundle

    a, b = bundles
    keys, other = tmp_path / "keys", tmp_path / "other"
    _, _, kid = new_key("release", directory=keys)
    new_key("rogue", directory=other)
    trusted = tmp_path / "trust"
    trusted.mkdir()
    (trusted / "release.pub").write_bytes((keys / "release.pub").read_bytes())
    signed = tmp_path / "signed.epk"
    signed.write_bytes(a.read_bytes())
    sign_bundle(signed, key=keys / "release.key")
    rogue = tmp_path / "rogue.epk"
    rogue.write_bytes(b.read_bytes())
    sign_bundle(rogue, key=other / "rogue.key")
    d = tmp_path / "s"
    store = BundleStore(d, trust=trusted)
    st = store.install(signed)
    assert st.active and st.active.sha256 == _sha(signed)
    for bad, words in ((b, "not signed"), (rogue, "rogue|trust"),
                       (_tampered(signed, tmp_path / "tampered.epk"), "tampered")):
        with pytest.raises(BundleRejectedError, match=words):
            store.install(bad)
        assert _slots(d) == [f"{_sha(signed)}.epk"]  # refused before a byte was copied into a slot
    assert main(["store", "install", str(d), str(b), "--trust", str(trusted)]) == 2
    assert capsys.readouterr().err.startswith("error: refused")
    older = _with_version(a, tmp_path / "old.epk", "0")
    sign_bundle(older, key=keys / "release.key")
    assert main(["store", "install", str(d), str(older), "--trust", str(trusted)]) == 2
    assert "allow-downgrade" in capsys.readouterr().err
    (trusted / "revoked.txt").write_text(f"{kid}\n")
    with pytest.raises(BundleRejectedError, match="revoked"):
        BundleStore(d, trust=trusted).install(signed)
    assert main(["store", "install", str(d), str(signed), "--trust", str(keys)]) == 0  # keys/ has release.pub
    capsys.readouterr()
