"""A/B bundle slots on the device: install with a self-test, switch atomically, roll back.

``DIR/state.json`` (the pointer: active + previous slot) · ``DIR/slots/<sha256>.epk`` (content-addressed
copies) · ``DIR/.lock`` (``fcntl.flock``). A new bundle is copied into its slot (temp, fsync, rename),
verified and self-tested on this device while the old one stays active; then ``state.json`` is replaced
(temp, fsync, ``os.replace``, fsync of the directory) — the single commit point. A process killed at any
moment leaves the old or the new pointer, and both name complete, verified slots. See docs/store.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .bundle import read_bundle
from .errors import (
    BackendError,
    BundleError,
    BundleRejectedError,
    ConfigError,
    InputSpecError,
    SelfTestFailedError,
    StoreBusyError,
    StoreEmptyError,
    StoreError,
    StoreNotWritableError,
    StoreStateError,
)
from .serde import from_json, to_json
from .session import Session, load

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("edgepack.runtimes.store")

SCHEMA = "edgepack.store/1"
STATE = "state.json"
SLOTS = "slots"
LOCK = ".lock"
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

    def to_json(self) -> dict[str, object]:
        """Plain JSON values (``edgepack store status --json``)."""
        out: dict[str, object] = to_json(self)
        return out


@dataclass(frozen=True)
class _State:
    schema: str
    active: SlotInfo
    previous: SlotInfo | None
    generation: int
    updated: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _phase(name: str) -> None:
    log.debug("phase %s", name, extra={"phase": name})


class BundleStore:
    """Active/previous bundle slots in one directory, safe against a kill at any point.

    Args:
        directory: the store directory; created when missing.
        read_only: open for ``status``/``load_active`` only (no lock, no clean-up, nothing created).
        lock_timeout: seconds to wait for another process's install/rollback before ``StoreBusyError``.

    Raises:
        StoreNotWritableError: the directory cannot be created or written (checked up front).
    """

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False,
                 lock_timeout: float = 60.0) -> None:
        self.directory = Path(directory)
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        if not read_only:
            self._prepare()
            self._clean_at_open()

    def status(self) -> StoreStatus:
        """The active and previous bundles (both ``None`` in an empty store).

        Raises:
            StoreStateError: ``state.json`` is corrupt or names a missing slot; run :meth:`recover`.
        """
        return self._status(self._read_state())

    def active_path(self) -> Path:
        """Path of the active bundle's slot file (never modified in place).

        Raises:
            StoreEmptyError: nothing is installed yet.
        """
        state = self._read_state()
        if state is None:
            raise StoreEmptyError(f"no bundle is installed in {self.directory}; "
                                  f"run `edgepack store install {self.directory} BUNDLE.epk` first.")
        return self._slot(state.active.sha256)

    def load_active(self, *, backend: str | None = None, delegates: Sequence[str] | None = None,
                    num_threads: int | None = None, verify_golden: bool = True) -> Session:
        """Verify and load the active bundle (arguments as :func:`edgepack.runtimes.load`)."""
        for _ in range(3):
            path = self.active_path()
            try:
                return load(path, backend=backend, delegates=delegates, num_threads=num_threads,
                            verify_golden=verify_golden)
            except (BundleError, FileNotFoundError):
                if path.is_file():
                    raise
                log.info("slot %s was retired while opening it; reading the pointer again", path.name)
        raise StoreBusyError(f"the active bundle of {self.directory} kept changing while loading it; retry.")

    def install(self, bundle_path: str | os.PathLike[str], *, backend: str | None = None,
                delegates: Sequence[str] | None = None, num_threads: int | None = None) -> StoreStatus:
        """Copy, verify and self-test a bundle on this device, then make it active (old active → previous).

        Raises:
            BundleRejectedError: the bundle is missing, corrupt or of an unknown schema.
            SelfTestFailedError: its golden outputs do not match on any delegate here.
            StoreBusyError, StoreNotWritableError, StoreStateError: the store cannot take it now.
            In every case the old active bundle stays active.
        """
        src = Path(bundle_path)
        if not src.is_file():
            raise BundleRejectedError(f"{src} does not exist; pass the path of a .epk bundle.")
        with self._locked():
            state = self._read_state()
            sha, slot = self._copy_into_slot(src)
            try:
                info = self._self_test(slot, sha, src.name, current=state, backend=backend, delegates=delegates,
                                       num_threads=num_threads)
            except BaseException:  # clean up, then re-raise whatever it was
                if sha not in _referenced(state):
                    slot.unlink(missing_ok=True)
                raise
            if state is None:
                status = self._commit(_State(SCHEMA, info, None, 1, _now()))
            else:
                prev = state.previous if state.active.sha256 == sha else state.active
                status = self._commit(_State(SCHEMA, info, prev, state.generation + 1, _now()))
        _phase("done")
        return status

    def rollback(self, *, backend: str | None = None, delegates: Sequence[str] | None = None,
                 num_threads: int | None = None) -> StoreStatus:
        """Make the previous bundle active again (the active one becomes previous), after a self-test.

        Raises:
            StoreEmptyError: there is no previous bundle.
            SelfTestFailedError, BundleRejectedError: the previous bundle no longer verifies here.
        """
        with self._locked():
            state = self._read_state()
            if state is None or state.previous is None:
                raise StoreEmptyError(f"{self.directory} has no previous bundle to roll back to.")
            prev = state.previous
            info = self._self_test(self._slot(prev.sha256), prev.sha256, prev.name, current=state,
                                   backend=backend, delegates=delegates, num_threads=num_threads)
            new = _State(SCHEMA, replace(info, installed=prev.installed), state.active, state.generation + 1, _now())
            status = self._commit(new)
        _phase("done")
        return status

    def recover(self, *, backend: str | None = None, delegates: Sequence[str] | None = None) -> StoreStatus:
        """Rebuild a corrupt or lost ``state.json`` from the slots: the newest verified one becomes active.

        A no-op when the state is readable. Slots that fail verification or the self-test are skipped.

        Raises:
            StoreEmptyError: no slot verifies.
        """
        with self._locked():
            try:
                if (state := self._read_state()) is not None:
                    return self._status(state)
            except StoreStateError as exc:
                log.warning("recovering %s: %s", self.directory, exc)
            found: list[tuple[float, SlotInfo]] = []
            for slot in self._slot_files():
                sha = _file_sha256(slot)
                try:
                    if slot.name != f"{sha}.epk":
                        raise BundleRejectedError(f"{slot.name} does not match its content (sha256 {sha})")
                    info = self._self_test(slot, sha, slot.name, current=None, backend=backend, delegates=delegates)
                except StoreError as exc:
                    log.warning("recover: skipping %s: %s", slot.name, exc)
                    continue
                mtime = slot.stat().st_mtime
                when = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
                found.append((mtime, replace(info, installed=when)))
            if not found:
                raise StoreEmptyError(f"no slot of {self.directory} verifies; install a bundle again.")
            found.sort(key=lambda item: item[0], reverse=True)
            return self._commit(_State(SCHEMA, found[0][1], found[1][1] if len(found) > 1 else None, 1, _now()))

    # -- internals ----------------------------------------------------------------------------------

    def _slot(self, sha: str) -> Path:
        return self.directory / SLOTS / f"{sha}.epk"

    def _slot_files(self) -> list[Path]:
        folder = self.directory / SLOTS
        return sorted(p for p in folder.glob("*.epk") if p.is_file()) if folder.is_dir() else []

    def _status(self, state: _State | None) -> StoreStatus:
        if state is None:
            return StoreStatus(str(self.directory), None, None)
        return StoreStatus(str(self.directory), state.active, state.previous, state.generation, state.updated)

    def _prepare(self) -> None:
        try:
            (self.directory / SLOTS).mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe-", suffix=".tmp", dir=self.directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StoreNotWritableError(
                f"bundle store {self.directory} cannot be created or written ({exc.strerror or exc}); use a "
                "writable directory (e.g. /var/lib/<app>/bundles), fix its owner/permissions, or open it read_only."
            ) from exc

    @contextmanager
    def _locked(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the store lock (yields True); with ``wait=False`` yields False at once when it is busy."""
        if self.read_only:
            raise StoreNotWritableError(f"bundle store {self.directory} was opened read_only; open it writable.")
        if fcntl is None:  # pragma: no cover - Windows
            raise StoreError("the bundle store needs POSIX file locks (Linux, macOS).")
        _phase("lock")
        try:
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreNotWritableError(f"cannot open {self.directory / LOCK} ({exc.strerror}).") from exc
        try:
            deadline = time.monotonic() + (self.lock_timeout if wait else 0.0)
            while not _try_flock(fd):
                if time.monotonic() >= deadline:
                    if not wait:
                        yield False
                        return
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise StoreBusyError(
                        f"another process (pid {holder}) holds the lock of bundle store {self.directory} "
                        f"for more than {self.lock_timeout:g} s; wait for its install/rollback and retry.")
                time.sleep(0.02)
            os.pwrite(fd, f"{os.getpid():>10}\n".encode(), 0)  # fixed width: no truncate (a journal commit)
            yield True
        finally:
            os.close(fd)  # releases the flock; the kernel does the same when the process dies

    def _read_state(self) -> _State | None:
        path = self.directory / STATE
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
            state = from_json(_State, raw, where="state")
        except (UnicodeDecodeError, json.JSONDecodeError, ConfigError) as exc:
            raise StoreStateError(
                f"{path} is corrupt ({exc}); the slot files are untouched — run "
                f"`edgepack store recover {self.directory}` to make the newest verified slot active."
            ) from exc
        for info in (state.active, state.previous):
            if info is not None and not self._slot(info.sha256).is_file():
                raise StoreStateError(f"{path} names slot {info.sha256[:16]}… ({info.name}) but its file is missing; "
                                      f"run `edgepack store recover {self.directory}` or install a bundle again.")
        return state

    def _copy_into_slot(self, src: Path) -> tuple[str, Path]:
        slots = self.directory / SLOTS
        size, free = src.stat().st_size, shutil.disk_usage(slots).free
        if size > free:
            raise StoreNotWritableError(f"{slots} has {free} bytes free; {src.name} needs {size}. Free some space.")
        try:
            with src.open("rb") as inp:
                return _durable_write(slots, iter(lambda: inp.read(_CHUNK), b""), self._slot, what="slot")
        except OSError as exc:
            raise StoreNotWritableError(f"cannot copy {src} into {slots} ({exc.strerror or exc}).") from exc

    def _self_test(self, slot: Path, sha: str, label: str, *, current: _State | None, backend: str | None,
                   delegates: Sequence[str] | None, num_threads: int | None = None) -> SlotInfo:
        active = f"{current.active.name} {current.active.version}" if current else "nothing"
        _phase("verify")
        try:
            bundle = read_bundle(slot)
        except BundleError as exc:
            raise BundleRejectedError(f"refused {label}: {exc} (the active bundle stays: {active}).") from exc
        _phase("self-test")
        start = time.perf_counter()
        try:
            session = load(bundle, backend=backend, delegates=delegates, num_threads=num_threads, verify_golden=True)
        except (BackendError, BundleError, InputSpecError) as exc:
            raise SelfTestFailedError(
                f"self-test of {label} failed on this device: {exc}\nThe active bundle stays: {active}. "
                "Re-export the bundle for this device's runtime, or add 'cpu' to the delegates."
            ) from exc
        where, precision = f"{session.backend}/{session.delegate}", session.model.precision
        session.close()
        log.info("self-test of %s passed on %s in %.3f s", label, where, time.perf_counter() - start)
        m = bundle.manifest
        return SlotInfo(sha, m.name, m.version, precision, slot.stat().st_size, _now(), where)

    def _commit(self, state: _State) -> StoreStatus:
        """Replace ``state.json`` atomically — the single commit point — then delete retired slots."""
        data = json.dumps(to_json(state), indent=2, sort_keys=True).encode("utf-8")
        try:
            _durable_write(self.directory, [data], lambda _: self.directory / STATE, what="pointer")
        except OSError as exc:
            raise StoreNotWritableError(f"cannot write {self.directory / STATE} ({exc.strerror or exc}).") from exc
        log.info("store %s: active %s %s (%s…), generation %d", self.directory, state.active.name,
                 state.active.version, state.active.sha256[:12], state.generation)
        self._collect_garbage(state)
        return self._status(state)

    def _clean_at_open(self) -> None:
        with self._locked(wait=False) as got:
            if not got:
                return  # an install/rollback is running; it cleans up after its switch
            try:
                state = self._read_state()
            except StoreStateError as exc:
                log.warning("not cleaning %s: %s", self.directory, exc)
                return
            self._collect_garbage(state)

    def _collect_garbage(self, state: _State | None) -> None:
        """Delete temp files and the slots the pointer does not name (with no pointer: temp files only)."""
        _phase("gc")
        leftovers = [*(self.directory / SLOTS).glob(".slot-*.tmp"), *self.directory.glob(".pointer-*.tmp")]
        if state is not None:
            keep = _referenced(state)
            leftovers += [p for p in self._slot_files() if p.stem not in keep]
        for path in leftovers:
            path.unlink(missing_ok=True)
            log.debug("removed %s", path.name)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _referenced(state: _State | None) -> set[str]:
    return {s.sha256 for s in (state.active, state.previous) if s is not None} if state else set()


def _durable_write(folder: Path, chunks: Iterable[bytes], dest: Callable[[str], Path], *,
                   what: str) -> tuple[str, Path]:
    """Write ``chunks`` to a temp file in ``folder``, fsync it, rename it onto ``dest(sha256)``, fsync ``folder``.

    Readers see the old file or the whole new one, never a part; a crash leaves at most a ``.tmp``.
    """
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{what}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            _phase(f"{what}-write")
            os.fchmod(out.fileno(), 0o644)  # bundles are not secrets; apps may run as another user
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            _phase(f"{what}-fsync")
            os.fsync(out.fileno())
        target = dest(digest.hexdigest())
        _phase(f"{what}-rename")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _phase(f"{what}-dirsync")
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return digest.hexdigest(), target


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
