"""A/B bundle slots on the device: install with a self-test, switch atomically, roll back.

``DIR/state.json`` (the pointer: active + previous slot) · ``DIR/slots/<sha256>.epk`` (content-addressed
copies) · ``DIR/.lock`` (``fcntl.flock``). A new bundle is copied into its slot (temp, fsync, rename),
verified and self-tested on this device while the old one stays active; then ``state.json`` is replaced
(temp, fsync, ``os.replace``, fsync of the directory) — the single commit point. A process killed at any
moment leaves the old or the new pointer, and both name complete, verified slots. See docs/store.md.
The files themselves (pointer, slots, lock, clean-up) are read and written by :mod:`.store_state`.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from .bundle import read_bundle
from .errors import (
    BackendError,
    BundleError,
    BundleRejectedError,
    InputSpecError,
    SelfTestFailedError,
    StoreBusyError,
    StoreEmptyError,
    StoreError,
    StoreNotWritableError,
    StoreStateError,
)
from .session import Session, load
from .store_state import (
    LOCK,
    SCHEMA,
    SLOTS,
    STATE,
    SlotInfo,
    StoreStatus,
    collect_garbage,
    copy_into_slot,
    file_sha256,
    locked,
    log,
    now,
    phase,
    read_state,
    referenced,
    slot_files,
    slot_path,
    status_of,
    write_state,
)
from .store_state import StoreState as _State

__all__ = ["LOCK", "SCHEMA", "SLOTS", "STATE", "BundleStore", "SlotInfo", "StoreStatus"]


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
            sha, slot = copy_into_slot(self.directory, src)
            try:
                info = self._self_test(slot, sha, src.name, current=state, backend=backend, delegates=delegates,
                                       num_threads=num_threads)
            except BaseException:  # clean up, then re-raise whatever it was
                if sha not in referenced(state):
                    slot.unlink(missing_ok=True)
                raise
            if state is None:
                status = self._commit(_State(SCHEMA, info, None, 1, now()))
            else:
                prev = state.previous if state.active.sha256 == sha else state.active
                status = self._commit(_State(SCHEMA, info, prev, state.generation + 1, now()))
        phase("done")
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
            new = _State(SCHEMA, replace(info, installed=prev.installed), state.active, state.generation + 1, now())
            status = self._commit(new)
        phase("done")
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
            for slot in slot_files(self.directory):
                sha = file_sha256(slot)
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
            return self._commit(_State(SCHEMA, found[0][1], found[1][1] if len(found) > 1 else None, 1, now()))

    # -- internals ----------------------------------------------------------------------------------

    def _slot(self, sha: str) -> Path:
        return slot_path(self.directory, sha)

    def _status(self, state: _State | None) -> StoreStatus:
        return status_of(self.directory, state)

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
        with locked(self.directory, timeout=self.lock_timeout, wait=wait) as got:
            yield got

    def _read_state(self) -> _State | None:
        return read_state(self.directory)

    def _self_test(self, slot: Path, sha: str, label: str, *, current: _State | None, backend: str | None,
                   delegates: Sequence[str] | None, num_threads: int | None = None) -> SlotInfo:
        active = f"{current.active.name} {current.active.version}" if current else "nothing"
        phase("verify")
        try:
            bundle = read_bundle(slot)
        except BundleError as exc:
            raise BundleRejectedError(f"refused {label}: {exc} (the active bundle stays: {active}).") from exc
        phase("self-test")
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
        return SlotInfo(sha, m.name, m.version, precision, slot.stat().st_size, now(), where)

    def _commit(self, state: _State) -> StoreStatus:
        """Replace ``state.json`` atomically — the single commit point — then delete retired slots."""
        write_state(self.directory, state)
        log.info("store %s: active %s %s (%s…), generation %d", self.directory, state.active.name,
                 state.active.version, state.active.sha256[:12], state.generation)
        collect_garbage(self.directory, state)
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
            collect_garbage(self.directory, state)
