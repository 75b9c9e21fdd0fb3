"""The bundle store under SIGKILL: killed at any point of install or rollback, a fresh store loads a verified bundle."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from store_helpers import ENV
from store_helpers import sha as _sha
from store_helpers import slots as _slots

from edgepack.runtimes import BundleStore

CHILD = r"""
import hashlib, logging, os, signal, sys, time
directory, a, b, trace, kill_phase, kill_nth = sys.argv[1:7]
sha_a = hashlib.sha256(open(a, "rb").read()).hexdigest()
import ai_edge_litert.interpreter  # imported before "ready" so that kill delays measure store work
from edgepack.runtimes.store import BundleStore
fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
seen = {}
class Trace(logging.Handler):
    def emit(self, record):
        phase = getattr(record, "phase", None)
        if phase is None:
            return
        os.write(fd, f"{time.monotonic():.6f} {phase}\n".encode())
        os.write(1, f"{phase}\n".encode())  # the parent may aim its kill at a phase
        seen[phase] = seen.get(phase, 0) + 1
        if phase == kill_phase and seen[phase] == int(kill_nth):
            os.kill(os.getpid(), signal.SIGKILL)
log = logging.getLogger("edgepack.runtimes.store")
log.setLevel(logging.DEBUG)
log.addHandler(Trace())
log.propagate = False
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":  # started early so its imports overlap; EOF: the test is over
    sys.exit(0)
store = BundleStore(directory)
i = 0
while True:
    if i % 3 == 2:
        store.rollback()
    else:  # install the bundle that is not active: every operation switches the pointer
        store.install(b if store.status().active.sha256 == sha_a else a)
    os.write(fd, f"{time.monotonic():.6f} op-done\n".encode())
    os.write(1, b"op-done\n")
    i += 1
"""

#: Operation i of a child: install the other bundle, install the other bundle, roll back, ...
OPS = ("other", "other", "rollback")


def _apply(state: tuple[str, str | None], op: str, shas: dict[str, str]) -> tuple[str, str | None]:
    active, previous = state
    if op == "rollback":
        assert previous is not None
        return previous, active
    return (shas["B"] if active == shas["A"] else shas["A"]), active


AHEAD = 2  # children started ahead of the one being killed


class _Child:
    """A child process that loops install A / install B / rollback once told to go."""

    def __init__(self, d: Path, a: Path, b: Path, trace: Path, *, kill_phase: str = "", kill_nth: int = 0) -> None:
        self.trace = trace
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(d), str(a), str(b), str(trace), kill_phase,
                                      str(kill_nth)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=ENV)

    def run(self, *, delay: float | None, anchor: tuple[str, int] | None = None) -> list[tuple[float, str]]:
        """Let it go; SIGKILL it ``delay`` s later (None: it kills itself). Returns its (time, phase) trace.

        With ``anchor=(phase, n)`` the delay counts from the child's n-th report of entering ``phase``.
        """
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", proc.communicate()[1].decode()[-2000:]
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        t0 = time.monotonic()
        watchdog = threading.Timer(30.0, proc.kill)  # a test bug must not hang the suite
        watchdog.start()
        if anchor is not None:
            seen = 0
            while seen < anchor[1]:
                line = proc.stdout.readline()
                assert line, f"child ended before {anchor}: " + proc.communicate()[1].decode()[-2000:]
                seen += line.strip().decode() == anchor[0]
        if delay is not None:
            time.sleep(max(delay, 0.0))
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        watchdog.cancel()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        return [(float(t) - t0, p) for t, p in (ln.split() for ln in self.trace.read_text().splitlines())]


def test_sigkill_at_any_point_of_install_or_rollback_leaves_a_verified_active_bundle(bundles, tmp_path: Path,
                                                                                    capsys) -> None:
    a, b = bundles
    shas = {"A": _sha(a), "B": _sha(b)}
    d = tmp_path / "store"
    state: tuple[str, str | None] = (BundleStore(d).install(a).active.sha256, None)  # type: ignore[union-attr]
    rng = random.Random(20240607)

    # Calibration: one child killed after 1 s; its phase timeline gives the windows the timed kills aim at.
    events = _Child(d, a, b, tmp_path / "trace-calibration.log").run(delay=1.0)
    state = _check_after_kill(d, events, state, shas)
    ops = [t for t, p in events if p == "op-done"]
    assert len(ops) >= 4, events
    cycle = ops[2]  # ready → open → install A → install B → rollback
    op_seconds = np.diff(ops)
    phases = sorted({p for _, p in events if p != "op-done"})

    plans: list[tuple[str, float | None, tuple[str, int] | None, str, int]] = []
    for _ in range(35):  # uniform over three whole operations, from the moment the child starts
        plans.append(("uniform", rng.uniform(0.0, cycle), None, "", 0))
    for k in range(35):  # aimed: a random moment of a phase, timed from the start of the phase before it
        target = phases[k % len(phases)]
        j = rng.choice([j for j, (t, p) in enumerate(events[1:-1], 1) if p == target and t < cycle])
        (t_anchor, anchor), (t_target, _), (t_next, _) = events[j - 1], events[j], events[j + 1]
        nth = sum(p == anchor for _, p in events[:j])
        offset = t_target - t_anchor + rng.uniform(0.0, t_next - t_target)
        plans.append((f"aim:{target}", offset, (anchor, nth), "", 0))
    for k, target in enumerate(phases):  # the child kills itself on entering each phase
        plans.append(("self", None, None, target, 1 + k % 3))
    rng.shuffle(plans)

    hit: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    active_counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    hit_timed: Counter[str] = Counter()
    hit_self: Counter[str] = Counter()
    started = time.monotonic()
    children = [_Child(d, a, b, tmp_path / f"trace-{i}.log", kill_phase=p[3], kill_nth=p[4])
                for i, p in enumerate(plans[:AHEAD])]
    try:
        for i, (kind, delay, anchor, _, _) in enumerate(plans):
            if i + AHEAD < len(plans):  # start children early: their imports overlap this run and the checks
                p = plans[i + AHEAD]
                children.append(_Child(d, a, b, tmp_path / f"trace-{i + AHEAD}.log", kill_phase=p[3], kill_nth=p[4]))
            events = children[i].run(delay=delay, anchor=anchor)
            last = next((p for _, p in reversed(events) if p != "op-done"), "startup")
            hit[last] += 1
            (hit_self if kind == "self" else hit_timed)[last] += 1
            before, after = _pre_post(events, state, shas)
            state = _check_after_kill(d, events, state, shas)
            outcome["no-op" if before == after else "old pointer" if state == before else "new pointer"] += 1
            kinds[kind.split(":")[0]] += 1
            active_counts["A" if state[0] == shas["A"] else "B"] += 1
    finally:
        for child in children:  # after a failure: end the children still waiting
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.communicate()
    elapsed = time.monotonic() - started
    kills = sum(hit.values())
    assert kills >= 50
    must_hit = {"slot-write", "slot-fsync", "slot-rename", "self-test", "pointer-write", "pointer-rename",
                "pointer-dirsync", "gc"}
    assert must_hit <= set(hit), hit
    with capsys.disabled():
        print(f"\nkill test: {kills} SIGKILLs ({dict(kinds)}) in {elapsed:.1f} s; every one left a verified, "
              f"loadable active bundle (A {active_counts['A']}, B {active_counts['B']}; interrupted operation: "
              f"{dict(outcome)}); median operation {1000 * float(np.median(op_seconds)):.0f} ms; "
              f"phase in progress at the timed kills: {dict(sorted(hit_timed.items()))}; "
              f"self-kills on entering: {sorted(hit_self)}")


def _tail_phases(events: list[tuple[float, str]]) -> list[str]:
    """Phases logged by the interrupted operation (after the last completed one)."""
    tail: list[str] = []
    for _, p in events:
        tail = [] if p == "op-done" else [*tail, p]
    return tail


def _pre_post(events: list[tuple[float, str]], state: tuple[str, str | None],
              shas: dict[str, str]) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """Pointer state before and after the operation the kill interrupted."""
    done = sum(p == "op-done" for _, p in events)
    for i in range(done):
        state = _apply(state, OPS[i % 3], shas)
    return state, _apply(state, OPS[done % 3], shas)


def _check_after_kill(d: Path, events: list[tuple[float, str]], state: tuple[str, str | None],
                      shas: dict[str, str]) -> tuple[str, str | None]:
    """Open the store afresh after a kill: the pointer is the old or the new one, and the active bundle loads."""
    before, after = _pre_post(events, state, shas)
    store = BundleStore(d)  # cleans leftovers of the killed process
    st = store.status()
    assert st.active is not None and st.active.sha256 in shas.values()
    got = (st.active.sha256, st.previous.sha256 if st.previous else None)
    tail = _tail_phases(events)
    if "pointer-dirsync" in tail:  # os.replace returned: the new pointer must be in place
        assert got == after, events[-6:]
    elif "pointer-rename" not in tail:  # the commit point was not reached: the old pointer must be
        assert got == before, events[-6:]
    assert got in (before, after), events[-6:]
    with store.load_active() as session:  # checksums + golden outputs verified on this machine
        assert session.bundle.path is not None and _sha(session.bundle.path) == st.active.sha256
    assert all(not n.endswith(".tmp") for n in _slots(d)) and len(_slots(d)) <= 2
    assert not list(d.glob(".pointer-*.tmp"))
    return got
