"""Atomic file writes: readers see the old file or the whole new one, never a part.

The one way edgepack writes a file others may read (bundles, the store's pointer, caches, reports):
a temp file in the target's folder, write, flush, fsync, ``os.replace``, fsync of the folder. On any
failure before the rename the temp file is removed and the old file is left as it was.
"""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

#: Called with ``"write"``, ``"fsync"``, ``"rename"`` and ``"dirsync"`` as each step starts.
PhaseHook = Callable[[str], None]


class AtomicWriter:
    """A binary temp file in ``folder`` that :meth:`commit` renames onto its target; otherwise it is removed.

    For content whose destination is known only after writing it (e.g. named by its hash); with a known
    path use :func:`atomic_write_bytes`.

    >>> with AtomicWriter(folder, prefix=".slot-") as w:
    ...     w.file.write(data)
    ...     w.commit(folder / name)

    Args:
        folder: where the temp file goes; the target must be in the same folder (same file system).
        prefix: temp file name prefix (``PREFIX<random>.tmp``), so that leftovers can be found.
        mode: permission bits of the committed file; None keeps those of the file it replaces, or the
            usual ones for a new file (``0o666`` less the umask).
        phase: called as each step starts (see :data:`PhaseHook`).
    """

    def __init__(self, folder: str | os.PathLike[str], *, prefix: str = ".tmp-", mode: int | None = None,
                 phase: PhaseHook | None = None) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.mode = mode
        self._phase = phase or _no_phase
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None

    @property
    def file(self) -> BinaryIO:
        """The open temp file (binary, seekable)."""
        if self._file is None:
            raise ValueError("AtomicWriter is not open; use it in a `with` block.")
        return self._file

    @property
    def temp_path(self) -> Path | None:
        """Path of the temp file while it exists."""
        return self._tmp

    def __enter__(self) -> AtomicWriter:
        while True:
            tmp = self.folder / f"{self.prefix}{secrets.token_hex(6)}.tmp"
            try:  # 0o666: the kernel applies the umask, as for any new file
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:
                continue
            break
        self._tmp = tmp
        self._file = os.fdopen(fd, "w+b")
        self._phase("write")
        return self

    def commit(self, target: str | os.PathLike[str]) -> Path:
        """Flush, fsync and rename the temp file onto ``target`` (same folder), then fsync the folder.

        Raises:
            OSError: the write, fsync or rename failed; the temp file is removed, ``target`` unchanged.
        """
        out, tmp, dest = self.file, self._tmp, Path(target)
        assert tmp is not None  # internal invariant: set with _file
        try:
            mode = self.mode if self.mode is not None else _existing_mode(dest)
            if mode is not None:
                os.chmod(tmp, mode)
            out.flush()
            self._phase("fsync")
            os.fsync(out.fileno())
            out.close()
            self._phase("rename")
            os.replace(tmp, dest)
        except BaseException:
            self._discard()
            raise
        self._tmp = self._file = None
        self._phase("dirsync")
        fsync_dir(dest.parent)
        return dest

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._discard()  # a no-op after commit

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._tmp = self._file = None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                       prefix: str | None = None, phase: PhaseHook | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, ``os.replace``, fsync of the folder).

    Args:
        path: the file to create or replace; its folder must exist.
        data: the whole new content.
        mode: permission bits; None keeps those of the replaced file (new files: ``0o666`` less the umask).
        prefix: temp file name prefix (default ``.<name>.``).
        phase: called as each step starts (``write``, ``fsync``, ``rename``, ``dirsync``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the file could not be written; the old file (if any) is intact and no temp file is left.
    """
    p = Path(path)
    with AtomicWriter(p.parent, prefix=f".{p.name}." if prefix is None else prefix, mode=mode, phase=phase) as w:
        w.file.write(data)
        return w.commit(p)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      mode: int | None = None, prefix: str | None = None, phase: PhaseHook | None = None) -> Path:
    """Write ``text`` to ``path`` atomically; as :func:`atomic_write_bytes` (newlines are not translated)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode, prefix=prefix, phase=phase)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename in it survives a power loss (a no-op where unsupported: Windows)."""
    if os.name == "nt":  # pragma: no cover - directories cannot be opened there
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


def _no_phase(name: str) -> None:
    """Default phase hook: nothing."""


def probe_writable(folder: str | os.PathLike[str]) -> None:
    """Create and remove a temporary file in ``folder``: the cheap, honest test that it can be written.

    Raises:
        OSError: it cannot (missing, read-only, a pseudo file system such as ``/proc``...).
    """
    fd, probe = tempfile.mkstemp(prefix=".edgepack-probe-", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(probe)
