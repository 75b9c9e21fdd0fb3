"""Sign bundles with Ed25519 and verify them against a device's trust store (docs/signing.md).

A signature is the extra bundle entry ``signature.json``: a DSSE envelope (payload type
``application/vnd.in-toto+json``) around an in-toto Statement v1 whose predicate has the shape of the OpenSSF
model-signing v1.0 predicate: one resource (name, sha256) for ``manifest.json`` (its exact bytes) and one for
every file ``manifest.files`` lists, sorted by name; the subject digest is the sha256 of the resources' digests
concatenated. ``signature.json`` is not in ``manifest.files``; the bundle reader allows it as the one unlisted entry.

Device side: :class:`TrustStore` (``.pub`` files of a folder, less the key ids in its ``revoked.txt``) and
:func:`verify_bundle`. Host side: :func:`new_key` and :func:`sign_bundle`. ``cryptography`` is imported only
inside functions, so ``import edgepack.runtimes`` stays light.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bundle import MANIFEST, SIGNATURE, Bundle, read_bundle
from .errors import (
    BadSignatureError,
    MissingDependencyError,
    RevokedKeyError,
    SigningKeyError,
    TrustStoreError,
    UnsignedBundleError,
    UntrustedKeyError,
)
from .fileio import AtomicWriter, atomic_write_bytes, fsync_dir
from .manifest import Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
REVOKED_FILE = "revoked.txt"
MAX_SIGNATURES = 16


@dataclass(frozen=True)
class TrustedKey:
    """One public key of a trust store: its id (sha256 of the raw 32-byte key, hex) and its file's stem."""

    key_id: str
    name: str
    raw: bytes


@dataclass(frozen=True)
class SignatureInfo:
    """What :func:`verify_bundle` proved: the trusted key, and the signed manifest's digest, name and version."""

    key_id: str
    key_name: str
    manifest_sha256: str
    bundle_name: str
    bundle_version: str


class TrustStore:
    """The keys a device trusts, and the key ids it has revoked (a revoked key is refused even if trusted)."""

    def __init__(self, keys: dict[str, TrustedKey], revoked: frozenset[str] = frozenset(), *,
                 source: str = "<memory>") -> None:
        self.keys = dict(keys)
        self.revoked = frozenset(revoked)
        self.source = source

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Every ``*.pub`` (PEM Ed25519 public key) of ``path``, less the key ids listed in ``path/revoked.txt``.

        ``revoked.txt``: one key id (64 hex digits, as ``edgepack keys new`` prints) a line; ``#`` starts a comment.

        Raises:
            TrustStoreError: the folder is missing, holds no ``.pub`` file, or a file is malformed.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise TrustStoreError(f"trust store {folder} is not a folder; pass a folder of trusted .pub keys.")
        keys: dict[str, TrustedKey] = {}
        for pub in sorted(folder.glob("*.pub")):
            raw = _public_raw(load_public_key(pub))
            keys[key_id(raw)] = TrustedKey(key_id(raw), pub.stem, raw)
        if not keys:
            raise TrustStoreError(f"trust store {folder} holds no .pub key; copy a key made by "
                                  "`edgepack keys new` into it.")
        return cls(keys, _read_revoked(folder / REVOKED_FILE), source=str(folder))

    @classmethod
    def coerce(cls, trust: TrustStore | str | os.PathLike[str]) -> TrustStore:
        """A TrustStore as is, or a folder read with :meth:`from_dir`."""
        return trust if isinstance(trust, TrustStore) else cls.from_dir(trust)


def key_id(raw_public: bytes) -> str:
    """The id of a public key: hex sha256 of its raw 32 bytes."""
    return hashlib.sha256(raw_public).hexdigest()


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key.

    Raises:
        TrustStoreError: unreadable, not PEM, or not Ed25519.
    """
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise TrustStoreError(f"{path} is not a readable PEM public key ({exc}); "
                              "use a .pub written by `edgepack keys new`.") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise TrustStoreError(f"{path} is not an Ed25519 public key; edgepack signs with Ed25519 only.")
    return key


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a PEM (PKCS#8, unencrypted) Ed25519 private key.

    Raises:
        SigningKeyError: unreadable, not PEM, encrypted, or not Ed25519.
    """
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not a readable Ed25519 private key ({exc}); "
                              "make one with `edgepack keys new NAME --dir KEYS`.") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key; edgepack signs with Ed25519 only.")
    return key


def statement(manifest_bytes: bytes, files: dict[str, str], *, name: str) -> dict[str, Any]:
    """The in-toto statement signed for a bundle: the manifest's exact bytes and every listed file's sha256."""
    digests = dict(files)
    digests[MANIFEST] = hashlib.sha256(manifest_bytes).hexdigest()
    resources = [{"name": n, "algorithm": "sha256", "digest": digests[n]} for n in sorted(digests)]
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": [SIGNATURE]},
            "resources": resources,
        },
    }


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature actually covers."""
    pt = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(pt), pt, len(payload), payload)


def verify_bundle(bundle: Bundle | str | os.PathLike[str], trust: TrustStore | str | os.PathLike[str]
                  ) -> SignatureInfo:
    """Check that a trusted, unrevoked key signed exactly this bundle (its manifest bytes and every file).

    ``bundle``: a path (read and checksum-verified with :func:`read_bundle`) or a :class:`Bundle` read from a file
    (``signature.json`` and the manifest's bytes are read again from ``bundle.path`` and must parse to the same
    manifest). Reads no model byte into an interpreter; call it before loading.

    Raises:
        UnsignedBundleError: no ``signature.json``, or it is not a DSSE envelope.
        UntrustedKeyError: signed, but by no key of ``trust``.
        RevokedKeyError: signed only by keys that ``trust`` lists as revoked.
        BadSignatureError: a trusted key's signature fails, or the signed statement does not match the bundle.
        BundleError: the bundle itself cannot be read (corrupt, unsafe, bad schema).
    """
    store = TrustStore.coerce(trust)
    b = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
    if b.path is None:
        raise UnsignedBundleError("this bundle was not read from a file, so its signature cannot be checked; "
                                  "pass the .epk path.")
    manifest_bytes, envelope = _read_signed_parts(b.path)
    if Manifest.from_bytes(manifest_bytes) != b.manifest:
        raise BadSignatureError(f"{b.path} changed while it was being read; verify it again.")
    payload, sigs = _parse_envelope(envelope, b.path)
    signer = _check_signatures(payload, sigs, store, b.path)
    expected = statement(manifest_bytes, b.manifest.files, name=b.manifest.name)
    try:
        got = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadSignatureError(f"{b.path}: the signed statement is not JSON ({exc}).") from exc
    pred = got.get("predicate") if isinstance(got, dict) else None
    if not isinstance(pred, dict) or got.get("_type") != STATEMENT_TYPE or \
            got.get("predicateType") != PREDICATE_TYPE or \
            pred.get("resources") != expected["predicate"]["resources"] or got.get("subject") != expected["subject"]:
        raise BadSignatureError(
            f"{b.path}: the manifest or a file changed after it was signed by {signer.name!r} (tampered); "
            "refusing it — get the bundle again from its publisher.")
    return SignatureInfo(signer.key_id, signer.name, hashlib.sha256(manifest_bytes).hexdigest(),
                         b.manifest.name, b.manifest.version)


def read_signature(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed ``signature.json`` envelope of a bundle, or None when it is unsigned."""
    try:
        _, envelope = _read_signed_parts(Path(path))
        env = json.loads(envelope)
    except (UnsignedBundleError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return env if isinstance(env, dict) else None


def new_key(name: str, *, directory: str | os.PathLike[str]) -> tuple[Path, Path, str]:
    """Make an Ed25519 key pair: ``directory/NAME.key`` (PKCS#8 PEM, mode 0600) and ``NAME.pub``; returns both + key id.

    Raises:
        SigningKeyError: the name is not a plain file stem, or either file already exists (never overwritten).
    """
    if not name or name != Path(name).name or name.startswith("."):
        raise SigningKeyError(f"key name {name!r} must be a plain name such as 'release-2026'.")
    folder = Path(directory)
    priv, pub = folder / f"{name}.key", folder / f"{name}.pub"
    for f in (priv, pub):
        if f.exists():
            raise SigningKeyError(f"{f} already exists; refusing to overwrite a key — choose another name.")
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_new_private(priv, pem)
        atomic_write_bytes(pub, pub_pem)
    except OSError as exc:
        raise SigningKeyError(f"cannot write the key pair into {folder} ({exc}); pick a writable --dir.") from exc
    return priv, pub, key_id(_public_raw(key.public_key()))


def sign_bundle(path: str | os.PathLike[str], *, key: str | os.PathLike[str], keep_others: bool = True
                ) -> SignatureInfo:
    """Sign a bundle in place (atomically: the old file stays on failure) with the private key file ``key``.

    The bundle is fully verified first. Re-signing replaces this key's old signature; other keys' signatures
    are kept when ``keep_others`` and they cover the same statement (stale ones are dropped).

    Raises:
        SigningKeyError: ``key`` is not an Ed25519 private key.
        BundleError: the bundle cannot be read or fails its checksums.
    """
    p = Path(path)
    private = load_private_key(key)
    raw = _public_raw(private.public_key())
    kid = key_id(raw)
    b = read_bundle(p)
    with zipfile.ZipFile(p) as zf:
        infos = [i for i in zf.infolist() if i.filename != SIGNATURE]
        entries = [(i, zf.read(i)) for i in infos]
    manifest_bytes = next(data for i, data in entries if i.filename == MANIFEST)
    payload = json.dumps(statement(manifest_bytes, b.manifest.files, name=b.manifest.name), indent=2,
                         sort_keys=True).encode("utf-8")
    sigs = []
    old = read_signature(p) if keep_others else None
    if old and old.get("payload") == base64.b64encode(payload).decode("ascii"):
        sigs = [s for s in old.get("signatures") or [] if isinstance(s, dict) and s.get("keyid") != kid]
        sigs = sigs[: MAX_SIGNATURES - 1]
    sigs.append({"keyid": kid, "sig": base64.b64encode(private.sign(pae(PAYLOAD_TYPE, payload))).decode("ascii")})
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode("ascii"),
                "signatures": sigs}
    with AtomicWriter(p.parent, prefix=f".{p.name}.") as out:
        with zipfile.ZipFile(out.file, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for info, data in entries:
                zf.writestr(info, data, compress_type=info.compress_type)
            zf.writestr(SIGNATURE, json.dumps(envelope, indent=2).encode("utf-8"))
        out.commit(p)
    return SignatureInfo(kid, Path(key).stem, hashlib.sha256(manifest_bytes).hexdigest(), b.manifest.name,
                         b.manifest.version)


def _write_new_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only; never replaces a file (``os.link`` fails if one exists)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise SigningKeyError(f"{path} already exists; refusing to overwrite a key.") from exc
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _crypto() -> tuple[Any, Any]:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ModuleNotFoundError as exc:
        raise MissingDependencyError.for_module("cryptography", purpose="signing and verifying bundles") from exc
    return serialization, ed25519


def _public_raw(key: Ed25519PublicKey) -> bytes:
    serialization, _ = _crypto()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read_revoked(path: Path) -> frozenset[str]:
    if not path.exists():
        return frozenset()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustStoreError(f"{path} cannot be read ({exc}); it lists revoked key ids, one a line.") from exc
    ids = {line.split("#", 1)[0].strip().lower() for line in lines} - {""}
    bad = sorted(i for i in ids if len(i) != 64 or any(c not in "0123456789abcdef" for c in i))
    if bad:
        raise TrustStoreError(f"{path}: {bad[0]!r} is not a key id (64 hex digits, as `edgepack keys new` prints).")
    return frozenset(ids)


def _read_signed_parts(path: Path) -> tuple[bytes, bytes]:
    from .bundle import MAX_MANIFEST_BYTES

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if SIGNATURE not in names:
                raise UnsignedBundleError(f"{path} is not signed, and this device only loads signed bundles; "
                                          "sign it with `edgepack sign BUNDLE --key KEY`.")
            parts = []
            for name in (MANIFEST, SIGNATURE):
                with zf.open(name) as fh:
                    data = fh.read(MAX_MANIFEST_BYTES + 1)
                if len(data) > MAX_MANIFEST_BYTES:
                    raise UnsignedBundleError(f"{path}: {name} is larger than {MAX_MANIFEST_BYTES} bytes.")
                parts.append(data)
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error, zipfile.BadZipFile) as exc:
        raise UnsignedBundleError(f"{path}: the signature cannot be read ({exc}); copy the bundle again.") from exc
    return parts[0], parts[1]


def _parse_envelope(envelope: bytes, path: Path) -> tuple[bytes, list[tuple[str, bytes]]]:
    try:
        env = json.loads(envelope)
        if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType is not {PAYLOAD_TYPE!r}")
        payload = base64.b64decode(env["payload"], validate=True)
        sigs = [(str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True)) for s in env["signatures"]]
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError,
            binascii.Error) as exc:
        raise UnsignedBundleError(f"{path}: {SIGNATURE} is not a DSSE envelope ({exc}); "
                                  "sign the bundle again.") from exc
    if not sigs or len(sigs) > MAX_SIGNATURES:
        raise UnsignedBundleError(f"{path}: {SIGNATURE} holds {len(sigs)} signatures (1 to {MAX_SIGNATURES}).")
    return payload, sigs


def _check_signatures(payload: bytes, sigs: list[tuple[str, bytes]], store: TrustStore, path: Path) -> TrustedKey:
    """The first trusted, unrevoked key whose signature verifies; the most telling error when none does."""
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    message = pae(PAYLOAD_TYPE, payload)
    revoked, failed = [], []
    for kid, sig in sigs:
        if kid in store.revoked:
            revoked.append(kid)
            continue
        key = store.keys.get(kid)
        if key is None:
            continue
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(key.raw).verify(sig, message)
        except InvalidSignature:
            failed.append(key.name)
            continue
        return key
    if failed:
        raise BadSignatureError(f"{path}: the signature of trusted key {failed[0]!r} does not match (the bundle was "
                                "altered after signing); refusing it — get it again from its publisher.")
    if revoked:
        raise RevokedKeyError(f"{path} is signed by revoked key {revoked[0][:16]}… ({store.source}/{REVOKED_FILE}); "
                              "refusing it — ask its publisher to re-sign it with a current key.")
    ids = ", ".join(k[:16] + "…" for k, _ in sigs)
    raise UntrustedKeyError(f"{path} is signed by {ids}, which is not in the trust store {store.source}; "
                            "add its .pub there if you trust it.")
