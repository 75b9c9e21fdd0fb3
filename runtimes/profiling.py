"""Per-op profiles for :mod:`edgepack.runtimes.benchmark`: ONNX Runtime's profiler; TFLite has none in Python."""

from __future__ import annotations

import importlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .session import Session

LITERT_NO_PROFILE = ("ai-edge-litert's Python Interpreter exposes no per-op profiler; run LiteRT's C++ "
                     "benchmark_model with --enable_op_profiling=true for per-op times. Op counts are listed.")


@dataclass(frozen=True)
class OpTime:
    """Time spent in one graph node over the profiled runs."""

    name: str
    op: str
    calls: int
    total_ms: float
    mean_us: float
    percent: float


@dataclass(frozen=True)
class OpProfile:
    """Per-op profile, or why there is none (``available`` False) plus the static op counts."""

    available: bool
    source: str
    reason: str = ""
    runs: int = 0
    ops: tuple[OpTime, ...] = ()
    op_counts: dict[str, int] = field(default_factory=dict)


def op_profile(session: Session, inputs: Sequence[np.ndarray], *, runs: int = 50,
               threads: int | None = None) -> OpProfile:
    """Per-op times: ONNX Runtime's profiler for ONNX models; op counts only for TFLite (no profiler exposed)."""
    engine = session.raw_engine()
    if session.model.format == "onnx":
        return _onnx_profile(session.bundle.model_bytes(session.model), inputs, runs=runs, threads=threads)
    counts: dict[str, int] = {}
    ops = getattr(engine, "ops", None)
    for name in (ops() if callable(ops) else []):
        counts[name] = counts.get(name, 0) + 1
    return OpProfile(available=False, source=session.backend, reason=LITERT_NO_PROFILE, op_counts=counts)


def _onnx_profile(model: bytes, inputs: Sequence[np.ndarray], *, runs: int, threads: int | None) -> OpProfile:
    ort = importlib.import_module("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="edgepack-prof-") as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        if threads:
            opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        feed = {i.name: a for i, a in zip(sess.get_inputs(), inputs)}
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, list[Any]] = {}
    runs_seen = 0
    for ev in events:
        if ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs_seen += 1
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(ev["name"])[: -len("_kernel_time")]
        rec = totals.setdefault(name, [str(ev.get("args", {}).get("op_name", "?")), 0, 0.0])
        rec[1] += 1
        rec[2] += float(ev.get("dur", 0))
    grand = sum(r[2] for r in totals.values()) or 1.0
    ops = sorted(
        (OpTime(name=n, op=r[0], calls=r[1], total_ms=r[2] / 1e3, mean_us=r[2] / r[1], percent=100 * r[2] / grand)
         for n, r in totals.items()),
        key=lambda o: -o.total_ms,
    )
    counts: dict[str, int] = {}
    for o in ops:
        counts[o.op] = counts.get(o.op, 0) + 1
    return OpProfile(available=True, source=f"onnxruntime {ort.__version__} enable_profiling", runs=runs_seen,
                     ops=tuple(ops), op_counts=counts)
