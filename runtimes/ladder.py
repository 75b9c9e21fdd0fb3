"""The verified delegate ladder: try delegates best-first, keep the first that loads AND matches golden.

Every attempt is recorded as a :class:`DelegateAttempt`; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .backends.base import DELEGATE_ERRORS, Backend, Engine
from .errors import DelegateRequiredError, NoUsableDelegateError
from .manifest import ModelEntry, Tolerance
from .tensors import dequantize

log = logging.getLogger("edgepack.runtimes")

#: Delegates that must really take part of the graph to count (else they are plain CPU in disguise).
#: The ladder when neither the caller nor the bundle's target names one.
DEFAULT_DELEGATES = ("gpu", "nnapi", "xnnpack", "cpu")
ACCELERATORS = frozenset({"gpu", "nnapi", "xnnpack", "qnn", "coreml", "cuda", "tensorrt", "dml"})


@dataclass(frozen=True)
class DelegateAttempt:
    """What happened when one delegate was tried."""

    backend: str
    delegate: str
    #: "selected" | "load-failed" | "not-delegated" | "golden-mismatch" | "unsupported" | "skipped" (the model needs
    #: another delegate) | "absent" (not in this build of the library by design: not tried, not shown by explain())
    outcome: str
    reason: str
    partitions: int | None = None
    max_abs_error: float | None = None
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.backend}/{self.delegate}: {self.outcome} — {self.reason}"


def compare(
    outputs: Sequence[np.ndarray], golden: Sequence[np.ndarray], tolerance: Sequence[Tolerance]
) -> tuple[bool, float, str]:
    """Check outputs against golden values; return (ok, worst max-abs error, explanation)."""
    worst, notes, ok = 0.0, [], True
    for i, (out, ref, tol) in enumerate(zip(outputs, golden, tolerance)):
        if out.shape != ref.shape:
            return False, float("inf"), f"output {i} has shape {out.shape}, golden {ref.shape}"
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        err = float(np.max(diff)) if diff.size else 0.0
        worst = max(worst, err)
        bound = tol.atol + tol.rtol * np.abs(ref.astype(np.float64))
        bad = int(np.count_nonzero(diff > bound)) if diff.size else 0
        if bad or not np.all(np.isfinite(out)):
            ok = False
            notes.append(f"output {i}: {bad} value(s) beyond atol={tol.atol:g} rtol={tol.rtol:g}, max |err|={err:.3g}")
    return ok, worst, "; ".join(notes) or f"max |err|={worst:.3g} within tolerance"


def run_golden(engine: Engine, golden_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the engine on the golden inputs; outputs dequantized to float."""
    raw = engine.run(golden_inputs)
    return [dequantize(o, s) for o, s in zip(raw, engine.outputs)]


def climb(
    backend: Backend,
    model: bytes,
    entry: ModelEntry,
    *,
    delegates: Sequence[str],
    num_threads: int | None,
    golden_inputs: Sequence[np.ndarray],
    golden_outputs: Sequence[np.ndarray],
    verify: bool = True,
) -> tuple[Engine, list[DelegateAttempt]]:
    """Open ``model`` on the first delegate that loads, really delegates, and matches golden outputs.

    A model whose custom ops exist only in some delegates (``entry.requires_delegates``) is offered to those only.

    Raises:
        DelegateRequiredError: the model needs a delegate that is not in ``delegates`` or did not load here.
        NoUsableDelegateError: none did; the message lists every attempt.
    """
    attempts: list[DelegateAttempt] = []
    required = tuple(entry.requires_delegates)
    absent = backend.absent_delegates()

    def record(attempt: DelegateAttempt) -> None:
        attempts.append(attempt)
        log.info("delegate %s", attempt)

    for name in delegates:
        if required and name not in required:
            record(DelegateAttempt(backend.name, name, "skipped", f"custom op(s) {_custom_ops(entry)} run only on "
                                   f"{', '.join(required)} (proved at conversion)"))
            continue
        if name not in backend.delegates:
            record(DelegateAttempt(backend.name, name, "unsupported", f"{backend.name} has no {name!r} delegate"))
            continue
        if name in absent:
            attempts.append(DelegateAttempt(backend.name, name, "absent", absent[name]))
            _debug_once(backend.name, name, absent[name])
            continue
        start = time.perf_counter()
        try:
            engine = backend.open(model, delegate=name, num_threads=num_threads)
        except DELEGATE_ERRORS as exc:
            record(DelegateAttempt(backend.name, name, "load-failed", f"{type(exc).__name__}: {exc}",
                                   seconds=time.perf_counter() - start))
            continue
        parts = engine.delegated_partitions
        if name in ACCELERATORS and parts == 0:
            engine.close()
            record(DelegateAttempt(backend.name, name, "not-delegated",
                                   "loaded but took 0 partitions of the graph (no kernels for these ops)",
                                   partitions=0, seconds=time.perf_counter() - start))
            continue
        if verify:
            try:
                outs = run_golden(engine, golden_inputs)
            except DELEGATE_ERRORS as exc:
                engine.close()
                why = f"golden run raised {type(exc).__name__}: {exc}"
                record(DelegateAttempt(backend.name, name, "load-failed", why, partitions=parts,
                                       seconds=time.perf_counter() - start))
                continue
            ok, err, why = compare(outs, golden_outputs, entry.golden.tolerance)
            if not ok:
                engine.close()
                record(DelegateAttempt(backend.name, name, "golden-mismatch", why, partitions=parts,
                                       max_abs_error=err, seconds=time.perf_counter() - start))
                continue
        else:
            err, why = None, "golden check skipped (verify=False)"
        record(DelegateAttempt(backend.name, name, "selected", why, partitions=parts, max_abs_error=err,
                               seconds=time.perf_counter() - start))
        return engine, attempts
    if required:
        raise _required_error(backend, entry, delegates, attempts)
    lines = "\n  ".join(str(a) for a in attempts) or "(no delegates were requested)"
    raise NoUsableDelegateError(
        f"no delegate of {backend.name} could run {entry.file} correctly; attempts:\n  {lines}\n"
        f"{_advice(backend, attempts)}"
    )


def _advice(backend: Backend, attempts: Sequence[DelegateAttempt]) -> str:
    """What to do next, according to what was tried: 'add cpu' only when the CPU was not tried."""
    cpu = next((a for a in attempts if a.delegate == "cpu" and a.outcome not in ("unsupported", "absent")), None)
    if cpu is None:
        if "cpu" in backend.delegates:
            return "add 'cpu' to the delegate list (--delegates / delegates=) to run on the CPU."
        return f"use a delegate {backend.name} has here ({', '.join(backend.delegates)})."
    if cpu.outcome == "golden-mismatch":
        return ("even the CPU gives outputs beyond the bundle's tolerance: this runtime computes differently from "
                "the one that made the bundle; install the runtime version the bundle records (`edgepack inspect`) "
                "or re-export the bundle with this one.")
    return ("the model does not load even on the CPU: install a runtime version the bundle supports "
            "(`edgepack inspect` lists its ops and opset) or re-export the bundle for this runtime.")


_SEEN_ABSENT: set[tuple[str, str]] = set()


def _debug_once(backend: str, delegate: str, why: str) -> None:
    """Log a delegate absent from the library's build once per process, at DEBUG: it is how the build is made."""
    if (backend, delegate) not in _SEEN_ABSENT:
        _SEEN_ABSENT.add((backend, delegate))
        log.debug("delegate %s/%s absent from this build: %s", backend, delegate, why)


def _custom_ops(entry: ModelEntry) -> str:
    ops = entry.requires.get("custom_ops") or []
    return ", ".join(str(o) for o in ops) or "(unnamed)"


def _required_error(backend: Backend, entry: ModelEntry, delegates: Sequence[str],
                    attempts: Sequence[DelegateAttempt]) -> DelegateRequiredError:
    """One line: which custom op needs which delegate, and why that delegate did not run here."""
    required = entry.requires_delegates
    tried = [a for a in attempts if a.delegate in required]
    if tried:
        why = "; ".join(f"{a.delegate} {a.outcome}: {a.reason.splitlines()[0] if a.reason else ''}" for a in tried)
    else:
        why = f"the ladder ({', '.join(delegates) or 'empty'}) does not include {' or '.join(required)}"
    return DelegateRequiredError(
        f"{entry.file} uses custom op(s) {_custom_ops(entry)} that only the {' / '.join(required)} delegate "
        f"implements, and {backend.name} cannot use it here ({why}); add {required[0]} to the delegate list "
        f"(--delegates / delegates=) on a runtime that has it."
    )
