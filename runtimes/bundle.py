"""Read, verify and write ``.epk`` bundles (zip). Reading is safe by construction.

Names are checked (no absolute paths, no ``..``), sizes are capped before reading, and every file's
sha256 is checked against the manifest before its bytes reach an interpreter.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleCorruptError, BundleError, BundleSchemaError, UnsafeBundleError
from .fileio import AtomicWriter
from .manifest import Manifest, ModelEntry, check_golden_files

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20
MAX_FILE_BYTES = 2 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_ENTRIES = 10_000


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_entry_name(name: str) -> None:
    """Refuse names that could escape an extraction directory."""
    bad = (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
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
    """A verified bundle in memory: its manifest and the bytes of every file."""

    path: Path | None
    manifest: Manifest
    _files: Mapping[str, bytes]

    def read(self, name: str) -> bytes:
        """Bytes of one file (already sha256-verified)."""
        try:
            return self._files[name]
        except KeyError:
            raise BundleError(f"bundle has no file {name!r}; it holds {sorted(self._files)}") from None

    def names(self) -> list[str]:
        """All file names except the manifest."""
        return sorted(self._files)

    def model_bytes(self, entry: ModelEntry) -> bytes:
        """Bytes of a model file."""
        return self.read(entry.file)

    def array(self, name: str) -> np.ndarray:
        """Load a ``.npy`` file of the bundle (``allow_pickle=False``)."""
        try:
            return np.load(io.BytesIO(self.read(name)), allow_pickle=False)
        except ValueError as exc:
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
        return self.read(self.manifest.labels).decode("utf-8").splitlines()


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Open and fully verify a bundle.

    Raises:
        BundleCorruptError: not a zip, truncated, or a checksum mismatch.
        UnsafeBundleError: a dangerous entry name or an oversized entry.
        BundleSchemaError: missing manifest or unsupported schema.
    """
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"bundle {p} does not exist; pass the path of a .epk file made by `edgepack convert`.")
    try:
        with zipfile.ZipFile(p) as zf:
            return _read_zip(zf, p)
    except zipfile.BadZipFile as exc:
        raise BundleCorruptError(f"{p} is not a valid bundle (bad zip: {exc}); copy it again or re-export it.") from exc
    except (EOFError, zipfile.LargeZipFile) as exc:
        raise BundleCorruptError(f"{p} is truncated or damaged ({exc}); copy it again.") from exc


def _read_zip(zf: zipfile.ZipFile, p: Path) -> Bundle:
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UnsafeBundleError(f"{p} has {len(infos)} entries (max {MAX_ENTRIES}); refusing it.")
    total = 0
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        check_entry_name(info.filename)
        if info.filename in by_name:
            raise UnsafeBundleError(f"{p} holds {info.filename!r} twice; refusing it.")
        cap = MAX_MANIFEST_BYTES if info.filename == MANIFEST else MAX_FILE_BYTES
        if info.file_size > cap:
            raise UnsafeBundleError(f"{info.filename} declares {info.file_size} bytes (cap {cap}); refusing it.")
        total += info.file_size
        by_name[info.filename] = info
    if total > MAX_TOTAL_BYTES:
        raise UnsafeBundleError(f"{p} unpacks to {total} bytes (cap {MAX_TOTAL_BYTES}); refusing it.")
    if MANIFEST not in by_name:
        raise BundleSchemaError(f"{p} has no {MANIFEST}; it is not an edgepack bundle.")
    manifest = Manifest.from_bytes(_read_capped(zf, by_name[MANIFEST]))
    listed = set(manifest.files)
    present = set(by_name) - {MANIFEST}
    if listed != present:
        extra, missing = sorted(present - listed), sorted(listed - present)
        raise BundleCorruptError(
            f"{p}: files do not match the manifest (unlisted: {extra}, missing: {missing}); "
            "the bundle was modified after export — re-export it."
        )
    files: dict[str, bytes] = {}
    for name in sorted(listed):
        data = _read_capped(zf, by_name[name])
        if sha256_bytes(data) != manifest.files[name]:
            raise BundleCorruptError(
                f"{p}: checksum mismatch for {name}; the bundle is corrupt or was tampered with — re-export it."
            )
        files[name] = data
    for entry in manifest.models:
        if entry.file not in files or entry.sha256 != manifest.files[entry.file]:
            raise BundleCorruptError(f"{p}: model {entry.file} is missing or its checksum disagrees.")
    return Bundle(path=p, manifest=manifest, _files=files)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
    except zipfile.BadZipFile as exc:
        raise BundleCorruptError(f"{info.filename} is damaged ({exc}); copy the bundle again.") from exc
    except (OSError, EOFError, ValueError) as exc:  # zlib errors surface as these
        raise BundleCorruptError(f"{info.filename} cannot be decompressed ({exc}); copy the bundle again.") from exc
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
