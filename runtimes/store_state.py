"""The bundle store's files: the ``state.json`` pointer, the ``state.log`` generation log,
content-addressed slots, the lock, clean-up, bundle versions.

Used by :class:`edgepack.runtimes.store.BundleStore` (the operations: install, rollback, recover); this
module only reads and writes the files, durably. Phases are logged on the store's logger (docs/store.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import (
    ConfigError,
    DowngradeError,
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    StoreNotWritableError,
    StoreStateError,
)
from .fileio import AtomicWriter, atomic_write_bytes, fsync_dir
from .serde import from_json, to_json

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("edgepack.runtimes.store")

SCHEMA = "edgepack.store/1"
STATE = "state.json"
LOG = "state.log"  # append-only JSON lines, one StoreState per commit (written before the pointer)
LOG_KEEP = 64  # entries kept when the log is compacted (at twice as many)
SLOTS = "slots"
LOCK = ".lock"
SLOT_MODE = 0o644  # bundles are not secrets; apps may run as another user
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SlotInfo:
    """One installed bundle: identity, when it was installed, where its self-test passed."""

    sha256: str
    name: str
    version: str
    precision: str
    bytes: int
    installed: str
    self_test: str


@dataclass(frozen=True)
class StoreStatus:
    """What the store holds: the active bundle, the previous one (rollback target), the commit count."""

    directory: str
    active: SlotInfo | None
    previous: SlotInfo | None
    generation: int = 0
    updated: str | None = None
    #: Highest version installed per bundle name (the downgrade check compares with it).
    versions: dict[str, str] = field(default_factory=dict)
    #: ``status()``: problems found (a slot whose bytes no longer match its sha256); ``recover()``: what it
    #: repaired. Empty: healthy / nothing to do.
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """Plain JSON values (``edgepack store status --json``)."""
        out: dict[str, object] = to_json(self)
        return out


@dataclass(frozen=True)
class StoreState:
    """The content of ``state.json``."""

    schema: str
    active: SlotInfo
    previous: SlotInfo | None
    generation: int
    updated: str
    versions: dict[str, str] = field(default_factory=dict)


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def phase(name: str) -> None:
    """Log entering a store phase (DEBUG, ``extra={"phase": name}``)."""
    log.debug("phase %s", name, extra={"phase": name})


def status_of(directory: Path, state: StoreState | None) -> StoreStatus:
    """The public view of ``state`` (empty store: both None)."""
    if state is None:
        return StoreStatus(str(directory), None, None)
    return StoreStatus(str(directory), state.active, state.previous, state.generation, state.updated,
                       dict(state.versions))


def slot_path(directory: Path, sha: str) -> Path:
    """Path of the slot holding the bundle with this sha256."""
    return directory / SLOTS / f"{sha}.epk"


def slot_files(directory: Path) -> list[Path]:
    """Every complete slot file, sorted."""
    folder = directory / SLOTS
    return sorted(p for p in folder.glob("*.epk") if p.is_file()) if folder.is_dir() else []


def referenced(state: StoreState | None) -> set[str]:
    """The sha256 of the slots ``state`` names."""
    return {s.sha256 for s in (state.active, state.previous) if s is not None} if state else set()


@contextmanager
def locked(directory: Path, *, timeout: float, wait: bool = True) -> Iterator[bool]:
    """Hold the store lock (yields True); with ``wait=False`` yields False at once when it is busy.

    Raises:
        StoreBusyError: another process holds it for more than ``timeout`` seconds.
        StoreNotWritableError: the lock file cannot be opened.
    """
    if fcntl is None:  # pragma: no cover - Windows
        raise StoreError("the bundle store needs POSIX file locks (Linux, macOS).")
    phase("lock")
    try:
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreNotWritableError(f"cannot open {directory / LOCK} ({exc.strerror}).") from exc
    try:
        deadline = time.monotonic() + (timeout if wait else 0.0)
        while not _try_flock(fd):
            if time.monotonic() >= deadline:
                if not wait:
                    yield False
                    return
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise StoreBusyError(
                    f"another process (pid {holder}) holds the lock of bundle store {directory} "
                    f"for more than {timeout:g} s; wait for its install/rollback and retry.")
            time.sleep(0.02)
        os.pwrite(fd, f"{os.getpid():>10}\n".encode(), 0)  # fixed width: no truncate (a journal commit)
        yield True
    finally:
        os.close(fd)  # releases the flock; the kernel does the same when the process dies


def read_state(directory: Path) -> StoreState | None:
    """Parse ``state.json`` (None when there is none) and check that the slots it names exist.

    Raises:
        StoreStateError: it is unreadable, corrupt, or names a missing slot.
    """
    path = directory / STATE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreStateError(f"cannot read {path} ({exc.strerror}); check its permissions.") from exc
    try:
        raw = json.loads(data.decode("utf-8"))
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise ConfigError(f"schema is not {SCHEMA!r}")
        state = from_json(StoreState, raw, where="state")
    except (UnicodeDecodeError, json.JSONDecodeError, ConfigError) as exc:
        raise StoreStateError(
            f"{path} is corrupt ({exc}); the slot files are untouched — run "
            f"`edgepack store recover {directory}` to make the newest verified slot active."
        ) from exc
    for info in (state.active, state.previous):
        if info is not None and not slot_path(directory, info.sha256).is_file():
            raise StoreStateError(f"{path} names slot {info.sha256[:16]}… ({info.name}) but its file is missing; "
                                  f"run `edgepack store recover {directory}` or install a bundle again.")
    return state


def write_state(directory: Path, state: StoreState) -> None:
    """Replace ``state.json`` atomically (temp, fsync, ``os.replace``, fsync of the folder): the commit point.

    Raises:
        StoreNotWritableError: it could not be written (the old pointer stays).
    """
    data = json.dumps(to_json(state), indent=2, sort_keys=True).encode("utf-8")
    try:
        atomic_write_bytes(directory / STATE, data, mode=SLOT_MODE, prefix=".pointer-",
                           phase=lambda step: phase(f"pointer-{step}"))
    except OSError as exc:
        raise StoreNotWritableError(f"cannot write {directory / STATE} ({exc.strerror or exc}).") from exc


def append_log(directory: Path, state: StoreState) -> None:
    """Append ``state`` to ``state.log`` and fsync it (before the pointer is written: the log is never behind).

    A line torn by a crash is skipped by :func:`read_log`; the next line starts on a fresh line. At
    ``2 * LOG_KEEP`` entries the log is rewritten atomically with the newest ``LOG_KEEP``.

    Raises:
        StoreNotWritableError: it could not be written (the old pointer stays).
    """
    path = directory / LOG
    line = json.dumps(to_json(state), sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
    phase("log-append")
    try:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, SLOT_MODE)
        try:
            size = os.fstat(fd).st_size
            if size and _last_byte(path, size) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
            phase("log-fsync")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(directory)
        entries = path.read_bytes().count(b"\n")
        if entries >= 2 * LOG_KEEP:
            keep = b"".join(path.read_bytes().splitlines(keepends=True)[-LOG_KEEP:])
            atomic_write_bytes(path, keep, mode=SLOT_MODE, prefix=".log-")
    except OSError as exc:
        raise StoreNotWritableError(f"cannot write {path} ({exc.strerror or exc}).") from exc


def read_log(directory: Path) -> list[StoreState]:
    """The states of ``state.log``, oldest first; unreadable lines (a torn last line) are skipped."""
    try:
        data = (directory / LOG).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreStateError(f"cannot read {directory / LOG} ({exc.strerror}); check its permissions.") from exc
    states = []
    for n, line in enumerate(data.splitlines(), 1):
        try:
            raw = json.loads(line.decode("utf-8"))
            if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
                raise ConfigError(f"schema is not {SCHEMA!r}")
            states.append(from_json(StoreState, raw, where="state"))
        except (UnicodeDecodeError, json.JSONDecodeError, ConfigError) as exc:
            if line.strip():
                log.warning("%s line %d skipped: %s", directory / LOG, n, exc)
    return states


def parse_version(version: str) -> tuple[int, ...] | None:
    """``"1"``, ``"1.2.3"``, ``"v2.0"`` → integers compared left to right (``1.2 == 1.2.0``); None if not numeric."""
    text = version.strip().removeprefix("v")
    parts = text.split(".")
    if not text or not all(p.isdigit() for p in parts):
        return None
    nums = [int(p) for p in parts]
    while len(nums) > 1 and nums[-1] == 0:
        nums.pop()
    return tuple(nums)


def is_downgrade(new: str, recorded: str) -> bool | None:
    """True when ``new`` is older than ``recorded``; None when they cannot be ordered (not dotted numeric)."""
    a, b = parse_version(new), parse_version(recorded)
    if a is None or b is None:
        return None if new != recorded else False
    return a < b


def check_version(name: str, version: str, versions: dict[str, str], *, label: str, active: str) -> None:
    """Refuse ``version`` of bundle ``name`` when it is older than the recorded one (or cannot be ordered with it).

    Raises:
        DowngradeError: with the flag that allows it.
    """
    recorded = versions.get(name)
    if recorded is not None and is_downgrade(version, recorded) is not False:
        raise DowngradeError(f"refused {label}: {name} v{version} is older than v{recorded} installed before (or "
                             "cannot be ordered with it: versions compare as dotted numbers); pass --allow-downgrade "
                             f"(API: allow_downgrade=True) to install it anyway. The active bundle stays: {active}.")


def require_store(directory: Path) -> None:
    """Refuse a directory that does not exist or holds neither ``state.json`` nor ``slots/``.

    Raises:
        StoreNotFoundError: naming the command that creates a store.
    """
    hint = f"create one with `edgepack store install {directory} BUNDLE.epk`"
    if not directory.is_dir():
        what = "is a file, not a folder" if directory.exists() else "does not exist"
        raise StoreNotFoundError(f"bundle store {directory} {what}; check the path, or {hint}.")
    if not (directory / STATE).exists() and not (directory / SLOTS).is_dir():
        raise StoreNotFoundError(f"{directory} is not a bundle store (no {STATE}, no {SLOTS}/); check the path, "
                                 f"or {hint}.")


def slot_problems(directory: Path, state: StoreState) -> tuple[str, ...]:
    """One line per slot of ``state`` whose bytes no longer hash to its name.

    Raises:
        FileNotFoundError: a slot vanished (retired by a commit since ``state`` was read).
    """
    notes = []
    for role, info in (("active", state.active), ("previous", state.previous)):
        if info is not None and (sha := file_sha256(slot_path(directory, info.sha256))) != info.sha256:
            notes.append(f"the {role} slot {info.sha256[:16]}… ({info.name} v{info.version}) is corrupt (its bytes "
                         f"hash to {sha[:16]}…); run `edgepack store recover {directory}`.")
    return tuple(notes)


def copy_into_slot(directory: Path, src: Path) -> tuple[str, Path]:
    """Copy ``src`` durably into ``slots/<sha256>.epk``, hashing it on the way; returns ``(sha256, slot)``.

    Raises:
        StoreNotWritableError: not enough space, or the copy failed (no temp file is left).
    """
    slots = directory / SLOTS
    size, free = src.stat().st_size, shutil.disk_usage(slots).free
    if size > free:
        raise StoreNotWritableError(f"{slots} has {free} bytes free; {src.name} needs {size}. Free some space.")
    digest = hashlib.sha256()
    try:
        with src.open("rb") as inp, AtomicWriter(slots, prefix=".slot-", mode=SLOT_MODE,
                                                 phase=lambda step: phase(f"slot-{step}")) as out:
            while chunk := inp.read(_CHUNK):
                digest.update(chunk)
                out.file.write(chunk)
            sha = digest.hexdigest()
            return sha, out.commit(slot_path(directory, sha))
    except OSError as exc:
        raise StoreNotWritableError(f"cannot copy {src} into {slots} ({exc.strerror or exc}).") from exc


def collect_garbage(directory: Path, state: StoreState | None) -> None:
    """Delete temp files and the slots ``state`` does not name (with no state: temp files only)."""
    phase("gc")
    leftovers = [*(directory / SLOTS).glob(".slot-*.tmp"), *directory.glob(".pointer-*.tmp"),
                 *directory.glob(".log-*.tmp")]
    if state is not None:
        keep = referenced(state)
        leftovers += [p for p in slot_files(directory) if p.stem not in keep]
    for path in leftovers:
        path.unlink(missing_ok=True)
        log.debug("removed %s", path.name)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(size - 1)
        return fh.read(1)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
