"""A/B bundle slots on the device: install with a self-test, switch atomically, roll back.

``DIR/state.json`` (the pointer: active + previous slot) · ``DIR/state.log`` (the generation log: every
state, appended and fsynced before the pointer) · ``DIR/slots/<sha256>.epk`` (content-addressed copies) ·
``DIR/.lock`` (``fcntl.flock``). A new bundle is copied into its slot (temp, fsync, rename),
verified and self-tested on this device while the old one stays active; then ``state.json`` is replaced
(temp, fsync, ``os.replace``, fsync of the directory) — the single commit point. A process killed at any
moment leaves the old or the new pointer, and both name complete, verified slots. ``recover`` follows the
generation log (never file times) and re-verifies what it activates. See docs/store.md.
The files themselves (pointer, slots, lock, clean-up) are read and written by :mod:`.store_state`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import store_state as ss
from .bundle import Bundle, read_bundle
from .errors import (
    BackendError,
    BundleCorruptError,
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
from .fileio import probe_writable
from .session import Session, load
from .store_state import LOCK, LOG, SCHEMA, SLOTS, STATE, SlotInfo, StoreStatus, log
from .store_state import StoreState as _State

if TYPE_CHECKING:
    from .signing import TrustStore

__all__ = ["LOCK", "LOG", "SCHEMA", "SLOTS", "STATE", "BundleStore", "SlotInfo", "StoreStatus"]


class BundleStore:
    """Active/previous bundle slots in one directory, safe against a kill at any point.

    Args:
        directory: the store directory; created when missing.
        read_only: open for ``status``/``load_active`` only (no lock, no clean-up, nothing created).
        lock_timeout: seconds to wait for another process's install/rollback before ``StoreBusyError``.
        trust: a :class:`~edgepack.runtimes.signing.TrustStore` or a folder of trusted ``.pub`` keys: every
            bundle installed, rolled back to, recovered or loaded must be signed by a trusted, unrevoked key.

    Raises:
        StoreNotWritableError: the directory cannot be created or written (checked up front).
        TrustStoreError: ``trust`` is not a usable trust store.
    """

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False,
                 lock_timeout: float = 60.0, trust: TrustStore | str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory)
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.trust: TrustStore | None = None
        if trust is not None:
            from .signing import TrustStore

            self.trust = TrustStore.coerce(trust)
        #: Set by :meth:`load_active` when it ran the previous bundle because the active one failed (else None).
        self.fallback: str | None = None
        if not read_only:
            self._prepare()
            self._clean_at_open()

    def require_exists(self) -> None:
        """Refuse a directory that is not a bundle store (``StoreNotFoundError``; ``store status`` on a typo)."""
        ss.require_store(self.directory)

    def status(self, *, check: bool = True) -> StoreStatus:
        """The active and previous bundles (both ``None`` in an empty store).

        With ``check`` the slot files are hashed: a slot whose bytes no longer match its sha256 is reported in
        ``notes`` (``recover`` repairs it; ``load_active`` falls back meanwhile).

        Raises:
            StoreStateError: ``state.json`` is corrupt or names a missing slot; run :meth:`recover`.
        """
        state = self._read_state()
        if not check or state is None:
            return self._status(state)
        try:
            notes = ss.slot_problems(self.directory, state)
        except FileNotFoundError:  # a slot was retired by a commit meanwhile: report the newer state
            return self.status(check=check)
        return replace(self._status(state), notes=tuple(notes))

    def active_path(self) -> Path:
        """Path of the active bundle's slot file (never modified in place).

        Raises:
            StoreEmptyError: nothing is installed yet.
        """
        return self._slot(self._active_state().active.sha256)

    def load_active(self, *, backend: str | None = None, delegates: Sequence[str] | None = None,
                    num_threads: int | None = None, verify_golden: bool = True, fallback: bool = True) -> Session:
        """Verify and load the active bundle (arguments as :func:`edgepack.runtimes.load`).

        When the active slot fails (its bytes no longer match its sha256, or it does not load and reproduce its
        golden outputs) and ``fallback`` is set, the previous slot is verified and loaded instead: a WARNING is
        logged and :attr:`fallback` says why. The pointer is not changed (run :meth:`recover` for that).
        """
        self.fallback = None
        for _ in range(3):
            state = self._active_state()
            path = self._slot(state.active.sha256)
            try:
                return self._load_verified(path, state.active.sha256, backend, delegates, num_threads, verify_golden)
            except (BundleError, BackendError, InputSpecError, FileNotFoundError) as exc:
                if not path.is_file():
                    log.info("slot %s was retired while opening it; reading the pointer again", path.name)
                    continue
                prev = state.previous
                if not fallback or prev is None or isinstance(exc, FileNotFoundError):
                    raise
                try:
                    session = self._load_verified(self._slot(prev.sha256), prev.sha256, backend, delegates,
                                                  num_threads, verify_golden)
                except (BundleError, BackendError, InputSpecError, FileNotFoundError):
                    raise exc from None
                self.fallback = (f"the active bundle {state.active.name} v{state.active.version} "
                                 f"({state.active.sha256[:12]}…) failed: {exc}; running the previous one, "
                                 f"{prev.name} v{prev.version} ({prev.sha256[:12]}…). Run `edgepack store recover "
                                 f"{self.directory}` to make that permanent, or install a good bundle.")
                log.warning("%s", self.fallback)
                return session
        raise StoreBusyError(f"the active bundle of {self.directory} kept changing while loading it; retry.")

    def install(self, bundle_path: str | os.PathLike[str], *, backend: str | None = None,
                delegates: Sequence[str] | None = None, num_threads: int | None = None,
                allow_downgrade: bool = False) -> StoreStatus:
        """Copy, verify and self-test a bundle on this device, then make it active (old active → previous).

        The store records the highest version installed per bundle name (dotted numbers: ``2`` < ``10``,
        ``1.2`` == ``1.2.0``); an older one is refused unless ``allow_downgrade`` (which then records it).

        Raises:
            BundleRejectedError: the bundle is missing, corrupt or of an unknown schema.
            DowngradeError: it is older than the version installed under its name (or cannot be ordered).
            SelfTestFailedError: its golden outputs do not match on any delegate here.
            StoreBusyError, StoreNotWritableError, StoreStateError: the store cannot take it now.
            In every case the old active bundle stays active.
        """
        src = Path(bundle_path)
        if not src.is_file():
            what = "is a directory" if src.is_dir() else "does not exist"
            raise BundleRejectedError(f"{src} {what}; pass the path of a .epk bundle.")
        with self._locked():
            state = self._read_state()
            self._check_signature(src, src.name, state)  # before a byte of it is copied into a slot
            versions = dict(state.versions) if state else {}
            sha, slot = ss.copy_into_slot(self.directory, src)
            try:
                info = self._self_test(slot, sha, src.name, current=state, backend=backend, delegates=delegates,
                                       num_threads=num_threads, versions=None if allow_downgrade else versions)
            except BaseException:  # clean up, then re-raise whatever it was
                if sha not in ss.referenced(state):
                    slot.unlink(missing_ok=True)
                raise
            recorded = versions.get(info.name)
            if recorded is None or allow_downgrade or ss.is_downgrade(recorded, info.version):
                versions[info.name] = info.version
            if state is None:
                status = self._commit(_State(SCHEMA, info, None, 1, ss.now(), versions))
            else:
                prev = state.previous if state.active.sha256 == sha else state.active
                status = self._commit(_State(SCHEMA, info, prev, state.generation + 1, ss.now(), versions))
        ss.phase("done")
        return status

    def rollback(self, *, backend: str | None = None, delegates: Sequence[str] | None = None,
                 num_threads: int | None = None) -> StoreStatus:
        """Make the previous bundle active again (the active one becomes previous), after a self-test.

        Allowed even when the previous bundle is an older version (the recorded versions stay).

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
            new = _State(SCHEMA, replace(info, installed=prev.installed), state.active, state.generation + 1, ss.now(),
                         dict(state.versions))
            status = self._commit(new)
        ss.phase("done")
        return status

    def recover(self, *, backend: str | None = None, delegates: Sequence[str] | None = None) -> StoreStatus:
        """Repair the store from the generation log: never from file times.

        Candidates, newest first: the state in ``state.json`` (when readable), then each state of ``state.log``;
        each names an active then a previous slot. The first slot whose bytes match its sha256 and that passes
        the self-test becomes active, the next distinct one previous. Nothing is written when ``state.json`` is
        readable and both its slots verify; otherwise a new generation (one above any seen) is committed.
        ``notes`` of the result says what was repaired (empty: nothing to do).

        Raises:
            StoreEmptyError: no slot verifies.
            StoreStateError: the log names no verifying slot and several unlogged slots verify (no safe choice).
        """
        with self._locked():
            notes: list[str] = []
            try:
                state = self._read_state()
            except StoreStateError as exc:
                state = None
                notes.append(str(exc).split(";")[0])
                log.warning("recovering %s: %s", self.directory, exc)
            history = ss.read_log(self.directory)
            candidates = ([state] if state else []) + history[::-1]
            tested: dict[str, SlotInfo | None] = {}

            def verified(info: SlotInfo) -> SlotInfo | None:
                if info.sha256 not in tested:
                    tested[info.sha256] = self._verify_slot(info, backend, delegates, notes)
                return tested[info.sha256]

            chosen: list[SlotInfo] = []
            for info in (i for c in candidates for i in (c.active, c.previous) if i is not None):
                if len(chosen) < 2 and info.sha256 not in {c.sha256 for c in chosen} and (good := verified(info)):
                    chosen.append(good)
            if not chosen:
                chosen = self._unlogged(set(tested), backend, delegates, notes)
            if state is not None and chosen[0].sha256 == state.active.sha256 and (
                    state.previous is None or state.previous.sha256 in {c.sha256 for c in chosen[1:]}):
                return self._status(state)  # healthy: nothing written
            generation = max([0, *(c.generation for c in candidates)]) + 1
            versions = dict(candidates[0].versions) if candidates else {}
            new = _State(SCHEMA, chosen[0], chosen[1] if len(chosen) > 1 else None, generation, ss.now(), versions)
            notes.append(f"activated {chosen[0].name} v{chosen[0].version} ({chosen[0].sha256[:12]}…), "
                         f"generation {generation}")
            return replace(self._commit(new), notes=tuple(notes))

    # -- internals ----------------------------------------------------------------------------------

    def _slot(self, sha: str) -> Path:
        return ss.slot_path(self.directory, sha)

    def _status(self, state: _State | None) -> StoreStatus:
        return ss.status_of(self.directory, state)

    def _active_state(self) -> _State:
        state = self._read_state()
        if state is None:
            raise StoreEmptyError(f"no bundle is installed in {self.directory}; "
                                  f"run `edgepack store install {self.directory} BUNDLE.epk` first.")
        return state

    def _load_verified(self, path: Path, sha: str, backend: str | None, delegates: Sequence[str] | None,
                       num_threads: int | None, verify_golden: bool) -> Session:
        """Load a slot after checking that its bytes still hash to its name."""
        if (got := ss.file_sha256(path)) != sha:
            raise BundleCorruptError(f"slot {path.name} is corrupt: its bytes hash to {got[:16]}…")
        if self.trust is not None:
            from .signing import verify_bundle

            verify_bundle(path, self.trust)
        return load(path, backend=backend, delegates=delegates, num_threads=num_threads, verify_golden=verify_golden)

    def _verify_slot(self, info: SlotInfo, backend: str | None, delegates: Sequence[str] | None,
                     notes: list[str]) -> SlotInfo | None:
        """``info`` refreshed by a self-test when its slot exists, hashes to its name and passes; else None."""
        slot = self._slot(info.sha256)
        try:
            if not slot.is_file():
                raise BundleRejectedError(f"slot {info.sha256[:12]}… ({info.name}) is missing")
            if (sha := ss.file_sha256(slot)) != info.sha256:
                raise BundleRejectedError(f"slot {info.sha256[:12]}… ({info.name}) is corrupt (hashes to {sha[:12]}…)")
            tested = self._self_test(slot, info.sha256, slot.name, current=None, backend=backend, delegates=delegates)
        except StoreError as exc:
            log.warning("recover: skipping %s: %s", slot.name, exc)
            notes.append(f"skipped {exc}".rstrip("."))
            return None
        return replace(tested, installed=info.installed)

    def _unlogged(self, tried: set[str], backend: str | None, delegates: Sequence[str] | None,
                  notes: list[str]) -> list[SlotInfo]:
        """With no logged slot left: the one slot that verifies (several: refuse to guess)."""
        found = []
        for slot in ss.slot_files(self.directory):
            if slot.stem not in tried:
                info = SlotInfo(slot.stem, slot.name, "?", "?", 0, ss.now(), "")
                if (good := self._verify_slot(info, backend, delegates, notes)) is not None:
                    found.append(good)
        if not found:
            raise StoreEmptyError(f"no slot of {self.directory} verifies; install a bundle again.")
        if len(found) > 1:
            names = ", ".join(f"{f.name} v{f.version} ({SLOTS}/{f.sha256}.epk)" for f in found)
            raise StoreStateError(f"{self.directory}/{LOG} names no slot that verifies, and {len(found)} unlogged "
                                  f"slots do: {names}; install the one to run with `edgepack store install "
                                  f"{self.directory} {self.directory}/{SLOTS}/<sha256>.epk`.")
        return found

    def _prepare(self) -> None:
        try:
            (self.directory / SLOTS).mkdir(parents=True, exist_ok=True)
            probe_writable(self.directory)
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
        with ss.locked(self.directory, timeout=self.lock_timeout, wait=wait) as got:
            yield got

    def _read_state(self) -> _State | None:
        return ss.read_state(self.directory)

    def _self_test(self, slot: Path, sha: str, label: str, *, current: _State | None, backend: str | None,
                   delegates: Sequence[str] | None, num_threads: int | None = None,
                   versions: dict[str, str] | None = None) -> SlotInfo:
        """Verify and self-test a slot; with ``versions``, refuse a downgrade first."""
        active = f"{current.active.name} {current.active.version}" if current else "nothing"
        ss.phase("verify")
        try:
            bundle = read_bundle(slot)
        except BundleError as exc:
            raise BundleRejectedError(f"refused {label}: {exc} (the active bundle stays: {active}).") from exc
        self._check_signature(bundle, label, current)
        m = bundle.manifest
        if versions is not None:
            ss.check_version(m.name, m.version, versions, label=label, active=active)
        ss.phase("self-test")
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
        return SlotInfo(sha, m.name, m.version, precision, slot.stat().st_size, ss.now(), where)

    def _check_signature(self, bundle: Bundle | Path, label: str, current: _State | None) -> None:
        """With a trust store: refuse an unsigned, untrusted, revoked-key or tampered bundle."""
        if self.trust is None:
            return
        from .signing import verify_bundle

        ss.phase("signature")
        active = f"{current.active.name} {current.active.version}" if current else "nothing"
        try:
            signer = verify_bundle(bundle, self.trust)
        except BundleError as exc:
            raise BundleRejectedError(f"refused {label}: {exc} (the active bundle stays: {active}).") from exc
        log.info("%s is signed by %s (%s…)", label, signer.key_name, signer.key_id[:12])

    def _commit(self, state: _State) -> StoreStatus:
        """Log the state (fsynced), replace ``state.json`` atomically — the single commit point — then delete
        retired slots."""
        ss.append_log(self.directory, state)
        ss.write_state(self.directory, state)
        log.info("store %s: active %s %s (%s…), generation %d", self.directory, state.active.name,
                 state.active.version, state.active.sha256[:12], state.generation)
        ss.collect_garbage(self.directory, state)
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
            ss.collect_garbage(self.directory, state)
