"""Read, verify and write ``.epk`` bundles (zip). Reading is safe by construction, in bounded memory.

Names are checked (no absolute paths, no ``..``, no links, no encrypted or exotic entries), sizes are capped
by :class:`BundleLimits` on the bytes actually decompressed, and every file is streamed through sha256
before any of it is kept. :func:`read_bundle` keeps only the manifest; a file's bytes are read when asked
for (:meth:`Bundle.read`) and hashed again as they are read, so only bytes that match the manifest ever
reach an interpreter, and verifying a hostile bundle costs a constant amount of memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import (
    BundleCorruptError,
    BundleError,
    BundleSchemaError,
    BundleTooLargeError,
    BundleUnreadableError,
    ConfigError,
    UnsafeBundleError,
)
from .fileio import AtomicWriter
from .manifest import Manifest, ModelEntry, check_golden_files

MANIFEST = "manifest.json"
#: The one entry besides the manifest that ``manifest.files`` does not list: a DSSE signature (runtimes/signing.py).
SIGNATURE = "signature.json"
MAX_MANIFEST_BYTES = 4 << 20
#: The format's ceiling for one file (what the converters may write); :class:`BundleLimits` caps below it.
MAX_FILE_BYTES = 2 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_ENTRIES = 10_000
CHUNK = 1 << 20
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class BundleLimits:
    """What reading one bundle may cost, in bytes actually decompressed (declared sizes are checked too).

    The defaults fit a 1 GB Raspberry Pi: a model up to 512 MiB, 64 MiB for each other file (labels,
    golden arrays, report), 1 GiB for all files together. Raise them for a bigger model, e.g.
    ``load(path, limits=BundleLimits(max_model_bytes=1 << 30, max_total_bytes=2 << 30))``.
    """

    max_model_bytes: int = 512 << 20
    max_file_bytes: int = 64 << 20
    max_total_bytes: int = 1 << 30
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    max_entries: int = 1_000

    def __post_init__(self) -> None:
        for name in ("max_model_bytes", "max_file_bytes", "max_total_bytes", "max_manifest_bytes", "max_entries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"BundleLimits.{name} must be a positive int, got {value!r}.")


DEFAULT_LIMITS = BundleLimits()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_entry_name(name: str) -> None:
    """Refuse names that could escape an extraction directory."""
    bad = (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or "\x00" in name
        or (len(name) > 1 and name[1] == ":")
        or any(part in ("..", "") for part in name.split("/"))
        or posixpath.normpath(name) != name
    )
    if bad:
        raise UnsafeBundleError(
            f"bundle entry {name!r} is an absolute or parent-relative path; refusing the bundle "
            "(it was not made by edgepack or was tampered with)."
        )


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest; each file's bytes are read (and hashed again) when asked for.

    The file at ``path`` must stay in place while the bundle is used; if it changes, :meth:`read`
    raises :class:`BundleCorruptError` rather than return bytes the manifest does not vouch for.
    """

    path: Path | None
    manifest: Manifest
    _files: Mapping[str, bytes] = field(default_factory=dict)
    limits: BundleLimits = DEFAULT_LIMITS

    def read(self, name: str) -> bytes:
        """Bytes of one file, checked against the manifest's sha256."""
        if name in self._files:
            return self._files[name]
        if self.path is None or name not in self.manifest.files:
            raise BundleError(f"bundle has no file {name!r}; it holds {self.names()}")
        with _open_zip(self.path) as zf:
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise BundleCorruptError(f"{self.path} lost {name} after it was verified; copy it again.") from None
            data = _read_whole(zf, info, cap=_cap(self.manifest, name, self.limits))
        if sha256_bytes(data) != self.manifest.files[name]:
            raise BundleCorruptError(f"{self.path}: {name} changed after it was verified; copy the bundle again.")
        return data

    def names(self) -> list[str]:
        """All file names except the manifest."""
        return sorted(set(self._files) | set(self.manifest.files))

    def model_bytes(self, entry: ModelEntry) -> bytes:
        """Bytes of a model file."""
        return self.read(entry.file)

    def array(self, name: str) -> np.ndarray:
        """Load a ``.npy`` file of the bundle (``allow_pickle=False``)."""
        try:
            return np.load(io.BytesIO(self.read(name)), allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise BundleCorruptError(f"{name} is not a plain .npy array: {exc}") from exc

    def golden_inputs(self) -> list[np.ndarray]:
        """The golden input arrays, in model input order."""
        return [self.array(n) for n in self.manifest.golden_inputs]

    def golden_outputs(self, entry: ModelEntry) -> list[np.ndarray]:
        """The golden output arrays of one model, in output order."""
        return [self.array(n) for n in entry.golden.outputs]

    def labels(self) -> list[str]:
        """Class labels, one a line, or an empty list when the bundle has none."""
        if not self.manifest.labels:
            return []
        name = self.manifest.labels
        try:
            return self.read(name).decode("utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise BundleCorruptError(f"{name} in {self.path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                     "re-create the bundle with a UTF-8 labels file.") from exc


def read_bundle(path: str | os.PathLike[str], *, limits: BundleLimits | None = None) -> Bundle:
    """Open and fully verify a bundle, streaming every file through sha256 (memory stays constant).

    Args:
        path: the ``.epk`` file.
        limits: caps on entry count and on bytes actually decompressed (default :data:`DEFAULT_LIMITS`).

    Raises:
        BundleError: the path does not exist or is a directory.
        BundleUnreadableError: the file cannot be read (permissions, a FIFO or device, an I/O error).
        BundleCorruptError: not a zip, truncated, or a checksum mismatch.
        UnsafeBundleError: a dangerous entry (name, link, encryption, method); BundleTooLargeError: over a cap.
        BundleSchemaError: missing manifest or unsupported schema.
    """
    p = Path(path)
    lim = limits or DEFAULT_LIMITS
    with _open_zip(p) as zf:
        infos = _check_members(zf, p, lim)
        manifest = Manifest.from_bytes(_read_whole(zf, infos[MANIFEST], cap=lim.max_manifest_bytes))
        _verify_files(zf, p, manifest, infos, lim)
    return Bundle(path=p, manifest=manifest, limits=lim)


@contextmanager
def _open_zip(p: Path) -> Iterator[zipfile.ZipFile]:
    """The bundle at ``p`` as an open zip; every way the path or the archive can fail is a BundleError."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise BundleError(f"bundle {p} does not exist; pass the path of a .epk file made by "
                          "`edgepack convert`.") from None
    except OSError as exc:
        raise BundleUnreadableError(f"bundle {p} cannot be read ({exc.strerror or exc}); check its path "
                                    "and permissions.") from exc
    if stat.S_ISDIR(mode):
        raise BundleError(f"{p} is a directory, not a bundle; pass the path of a .epk file made by `edgepack convert`.")
    if not stat.S_ISREG(mode):
        raise BundleUnreadableError(f"{p} is not a regular file (a pipe, socket or device); copy the bundle "
                                    "to a file and pass that.")
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed below, after the zip
    except OSError as exc:
        raise BundleUnreadableError(f"bundle {p} cannot be read ({exc.strerror or exc}); check its "
                                    "permissions (the user running edgepack must be able to read it).") from exc
    with fh:
        try:
            zf = zipfile.ZipFile(fh)
        except zipfile.BadZipFile as exc:
            raise BundleCorruptError(f"{p} is not a valid bundle (bad zip: {exc}); copy it again or "
                                     "re-export it.") from exc
        except (EOFError, zipfile.LargeZipFile, ValueError, OverflowError, NotImplementedError) as exc:
            raise BundleCorruptError(f"{p} is truncated or damaged ({exc}); copy it again.") from exc
        except OSError as exc:
            raise BundleUnreadableError(f"bundle {p} cannot be read ({exc}); copy it again.") from exc
        with zf:
            yield zf


def _check_members(zf: zipfile.ZipFile, p: Path, lim: BundleLimits) -> dict[str, zipfile.ZipInfo]:
    """The central directory, checked before a byte is decompressed: names, kinds, methods, declared sizes."""
    infos = zf.infolist()
    if len(infos) > min(lim.max_entries, MAX_ENTRIES):
        raise BundleTooLargeError(f"{p} has {len(infos)} entries (cap {lim.max_entries}); refusing it.")
    total = 0
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        check_entry_name(name)
        if name in by_name:
            raise UnsafeBundleError(f"{p} holds {name!r} twice; refusing it.")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG):
            raise UnsafeBundleError(f"{p}: entry {name!r} is a link or special file, not a plain file; refusing it.")
        if info.flag_bits & 0x1:
            raise UnsafeBundleError(f"{p}: entry {name!r} is encrypted; edgepack bundles never are — refusing it.")
        if info.compress_type not in _METHODS:
            raise UnsafeBundleError(f"{p}: entry {name!r} uses zip method {info.compress_type} (edgepack writes "
                                    "only stored or deflated entries); refusing it.")
        cap = lim.max_manifest_bytes if name in (MANIFEST, SIGNATURE) else min(
            MAX_FILE_BYTES, max(lim.max_model_bytes, lim.max_file_bytes))
        if info.file_size > cap:
            raise BundleTooLargeError(f"{name} declares {info.file_size} bytes (cap {cap}); refusing it.")
        total += info.file_size
        by_name[name] = info
    if total > min(lim.max_total_bytes, MAX_TOTAL_BYTES):
        raise BundleTooLargeError(f"{p} unpacks to {total} bytes (cap {lim.max_total_bytes}); refusing it.")
    if MANIFEST not in by_name:
        raise BundleSchemaError(f"{p} has no {MANIFEST}; it is not an edgepack bundle.")
    return by_name


def _cap(manifest: Manifest, name: str, lim: BundleLimits) -> int:
    """The per-file cap of ``name``: models get ``max_model_bytes``, every other file ``max_file_bytes``."""
    is_model = any(m.file == name for m in manifest.models)
    return min(MAX_FILE_BYTES, lim.max_model_bytes if is_model else lim.max_file_bytes)


def _verify_files(zf: zipfile.ZipFile, p: Path, manifest: Manifest, infos: Mapping[str, zipfile.ZipInfo],
                  lim: BundleLimits) -> None:
    """Stream every listed file through sha256 under the caps; nothing is kept."""
    listed = set(manifest.files)
    present = set(infos) - {MANIFEST, SIGNATURE}  # the signature is checked by runtimes/signing.py
    if listed != present:
        extra, missing = sorted(present - listed), sorted(listed - present)
        raise BundleCorruptError(
            f"{p}: files do not match the manifest (unlisted: {extra}, missing: {missing}); "
            "the bundle was modified after export — re-export it."
        )
    for entry in manifest.models:
        if entry.file not in listed or entry.sha256 != manifest.files[entry.file]:
            raise BundleCorruptError(f"{p}: model {entry.file} is missing or its checksum disagrees.")
    total = 0
    for name in sorted(listed):
        cap = _cap(manifest, name, lim)
        if infos[name].file_size > cap:
            raise BundleTooLargeError(f"{name} declares {infos[name].file_size} bytes (cap {cap}); refusing it.")
        digest, size = _stream_sha256(zf, infos[name], cap=cap)
        total += size
        if total > lim.max_total_bytes:
            raise BundleTooLargeError(f"{p} unpacks to more than {lim.max_total_bytes} bytes; refusing it.")
        if digest != manifest.files[name]:
            raise BundleCorruptError(
                f"{p}: checksum mismatch for {name}; the bundle is corrupt or was tampered with — re-export it."
            )


@contextmanager
def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[zipfile.ZipExtFile]:
    """Open one entry; decompression errors become BundleCorruptError."""
    try:
        with zf.open(info) as fh:
            yield fh
    except zipfile.BadZipFile as exc:
        raise BundleCorruptError(f"{info.filename} is damaged ({exc}); copy the bundle again.") from exc
    except (zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise BundleCorruptError(f"{info.filename} cannot be decompressed ({exc}); copy the bundle again.") from exc


def _stream_sha256(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, cap: int) -> tuple[str, int]:
    """(sha256, size) of one entry, read in :data:`CHUNK` pieces; refused once more than ``cap`` bytes come out."""
    digest = hashlib.sha256()
    size = 0
    with _member(zf, info) as fh:
        while chunk := fh.read(CHUNK):
            size += len(chunk)
            if size > cap:
                raise BundleTooLargeError(f"{info.filename} decompresses to more than {cap} bytes; refusing it.")
            digest.update(chunk)
    if size != info.file_size:
        raise BundleCorruptError(f"{info.filename} has {size} bytes, header says {info.file_size}.")
    return digest.hexdigest(), size


def _read_whole(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, cap: int) -> bytes:
    """All bytes of one entry whose declared size is within ``cap`` (one buffer, no chunk copies)."""
    if info.file_size > cap:
        raise BundleTooLargeError(f"{info.filename} declares {info.file_size} bytes (cap {cap}); refusing it.")
    with _member(zf, info) as fh:
        data = fh.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise BundleCorruptError(f"{info.filename} has {len(data)} bytes, header says {info.file_size}.")
    return data


def npy_bytes(array: np.ndarray) -> bytes:
    """Serialise an array as ``.npy`` (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_bundle(path: str | os.PathLike[str], manifest: Manifest, files: Mapping[str, bytes]) -> Path:
    """Write a bundle atomically (:class:`~edgepack.runtimes.fileio.AtomicWriter`): the old file stays on failure.

    ``manifest.files`` must list the sha256 of every file in ``files``. The bundle gets the permissions of
    the file it replaces, or those of any new file (``0o666`` less the umask).

    Raises:
        BundleError: a checksum in ``manifest.files`` is missing or wrong (nothing is written).
        BundleSchemaError: two models share a golden output file (nothing is written).
        UnsafeBundleError: a file name is absolute or climbs out of the bundle.
        OSError: the file could not be written (no temp file is left).
    """
    p = Path(path)
    check_golden_files(manifest)
    for name, data in files.items():
        check_entry_name(name)
        if manifest.files.get(name) != sha256_bytes(data):
            raise BundleError(f"manifest checksum for {name} is missing or wrong; build it with the files.")
    if set(manifest.files) != set(files):
        raise BundleError("manifest.files must list exactly the bundle's files.")
    p.parent.mkdir(parents=True, exist_ok=True)
    with AtomicWriter(p.parent, prefix=f".{p.name}.") as out:
        with zipfile.ZipFile(out.file, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, manifest.to_bytes())
            for name in sorted(files):
                zf.writestr(name, files[name])
        return out.commit(p)
