"""Benchmark a bundle the same way every time: numpy + stdlib only, so it runs on the device.

>>> from edgepack.runtimes import benchmark
>>> result = benchmark("model.epk", warmup=10, runs=200, threads=1)
>>> print(result.summary()); result.save("bench.json")

Measures load time, first-run time, invoke-only latency (``Session.run`` on a ready tensor) and, given
images, end-to-end latency (``Session.predict``: pre-process + invoke + post-process); p50/p90/p99/mean/std,
throughput, peak RSS, and a per-op profile where the backend offers one. The JSON form
(schema ``edgepack.bench/1``) is documented in ``docs/measurement.md``.
Run it in a fresh process (``edgepack bench``, or :func:`~edgepack.runtimes.bench_process.benchmark_isolated`)
for a load time and peak RSS that are the bundle's own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, EdgepackError, InputSpecError
from .fileio import atomic_write_text
from .manifest import ColorOrder
from .profiling import OpProfile, op_profile
from .serde import from_json, to_json
from .session import Session, load
from .tensors import Inputs, as_input_list, check_shape, to_model_dtype
from .versions import installed_versions

SCHEMA = "edgepack.bench/1"
#: Progress callback: ``(phase, done, total)``; phases are ``warmup``, ``invoke``, ``end_to_end``, ``profile``.
Progress = Callable[[str, int, int], None]
RUNTIME_LIBRARIES = ("edgepack", "numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "tensorflow-cpu",
                     "opencv-python-headless")


class BenchmarkError(EdgepackError):
    """A benchmark cannot run as asked (bad settings, no images for end-to-end, failed child process)."""


@dataclass(frozen=True)
class LatencyStats:
    """Latency of ``runs`` timed calls (milliseconds); throughput is calls per second, one stream."""

    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_per_s: float
    samples_ms: tuple[float, ...] = ()


def latency_stats(seconds: Sequence[float], *, keep_samples: bool = True) -> LatencyStats:
    """Statistics of per-call durations in seconds."""
    if not seconds:
        raise BenchmarkError("no timed runs; pass runs >= 1.")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    total = float(ms.sum())
    return LatencyStats(
        runs=len(ms), p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(ms.mean()), std_ms=float(ms.std()),
        min_ms=float(ms.min()), max_ms=float(ms.max()), throughput_per_s=1e3 * len(ms) / total if total else math.inf,
        samples_ms=tuple(round(float(v), 5) for v in ms) if keep_samples else (),
    )


@dataclass(frozen=True)
class Memory:
    """Resident memory in bytes: process peak (``VmHWM``, else ``getrusage``), current RSS around loading."""

    peak_rss_bytes: int
    peak_rss_source: str
    rss_before_load_bytes: int | None
    rss_after_load_bytes: int | None


@dataclass(frozen=True)
class BenchModel:
    """Which model was measured."""

    name: str
    file: str
    format: str
    precision: str
    bytes: int
    sha256: str
    inputs: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class BenchRuntime:
    """Where it ran: backend, delegate, threads (None = library default), pinned CPUs."""

    backend: str
    backend_version: str
    delegate: str
    delegated_partitions: int
    threads: int | None
    pinned_cpus: tuple[int, ...] | None


@dataclass(frozen=True)
class Machine:
    """Machine and library versions, recorded with every result."""

    machine: str
    system: str
    cpu_model: str
    cpus: int
    affinity: tuple[int, ...] | None
    python: str
    libraries: dict[str, str]
    date: str


@dataclass(frozen=True)
class BenchResult:
    """Everything one benchmark measured; ``to_json()`` gives the ``edgepack.bench/1`` document."""

    model: BenchModel
    runtime: BenchRuntime
    warmup: int
    load_seconds: float | None
    first_run_seconds: float
    invoke: LatencyStats
    end_to_end: LatencyStats | None
    end_to_end_note: str
    memory: Memory
    profile: OpProfile | None
    environment: Machine
    schema: str = SCHEMA

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (see docs/measurement.md)."""
        return to_json(self)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BenchResult:
        """Parse and validate a ``edgepack.bench/1`` document; unknown keys and wrong types are errors."""
        if data.get("schema") != SCHEMA:
            raise ConfigError(f"not a {SCHEMA} document (schema {data.get('schema')!r}).")
        return from_json(cls, dict(data), where="bench")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON document (atomically: a reader never sees half of it)."""
        return atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    def summary(self) -> str:
        """A few lines a person can read."""
        m, r, i = self.model, self.runtime, self.invoke
        lines = [
            f"{m.name} ({m.precision}, {m.bytes} bytes) on {r.backend} {r.backend_version}/{r.delegate}, "
            f"threads {r.threads or 'default'}" + (f", pinned to CPUs {list(r.pinned_cpus)}" if r.pinned_cpus else ""),
            (f"load {self.load_seconds * 1e3:.1f} ms, " if self.load_seconds is not None else "")
            + f"first run {self.first_run_seconds * 1e3:.2f} ms, peak RSS {self.memory.peak_rss_bytes / 2**20:.1f} MiB",
            _stats_line("invoke", i),
        ]
        lines.append(_stats_line("end-to-end", self.end_to_end) if self.end_to_end else
                     f"end-to-end  not measured: {self.end_to_end_note}")
        if self.profile is not None and self.profile.available:
            top = ", ".join(f"{o.op} {o.percent:.0f}%" for o in self.profile.ops[:5])
            lines.append(f"profile ({self.profile.source}): {top}")
        elif self.profile is not None:
            lines.append(f"profile: not available — {self.profile.reason}")
        return "\n".join(lines)


def _stats_line(label: str, s: LatencyStats) -> str:
    return (f"{label:<11} p50 {s.p50_ms:.3f} ms  p90 {s.p90_ms:.3f}  p99 {s.p99_ms:.3f}  mean {s.mean_ms:.3f} "
            f"± {s.std_ms:.3f}  ({s.runs} runs, {s.throughput_per_s:.0f}/s)")


def machine() -> Machine:
    """Describe this machine and the runtime libraries installed here (stdlib only)."""
    libs = installed_versions(RUNTIME_LIBRARIES)
    cpu_model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu_model = line.split(":", 1)[1].strip()
                break
    affinity = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else None
    return Machine(machine=platform.machine(), system=platform.platform(), cpu_model=cpu_model,
                   cpus=os.cpu_count() or 0, affinity=affinity, python=platform.python_version(), libraries=libs,
                   date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def peak_rss_bytes() -> tuple[int, str]:
    """Peak resident set size of this process image, and where the figure comes from.

    ``getrusage`` inherits the parent's peak across fork + exec on Linux (a child of a 600 MB process reports
    600 MB), so procfs ``VmHWM`` — the peak of this process image alone — is preferred where it exists.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024), "getrusage"


def current_rss_bytes() -> int | None:
    """Current RSS from ``/proc/self/statm`` (None where there is no procfs)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """Pin every thread of this process to ``cpus`` for the block (Linux), then restore the old affinity."""
    if not cpus:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("CPU pinning needs Linux (os.sched_setaffinity); run without --pin here.")
    wanted = set(cpus)
    allowed = os.sched_getaffinity(0)
    if not wanted <= allowed:
        raise ConfigError(f"cannot pin to CPUs {sorted(wanted - allowed)}: this process may use {sorted(allowed)}.")
    tids = _thread_ids()
    before = {tid: os.sched_getaffinity(tid) for tid in tids}
    try:
        for tid in tids:
            os.sched_setaffinity(tid, wanted)
        yield
    finally:
        for tid, mask in before.items():
            with contextlib.suppress(OSError):  # a thread may have exited meanwhile
                os.sched_setaffinity(tid, mask)


def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def golden_call(session: Session) -> Callable[[], object]:
    """One run of ``session`` on its bundle's golden input, model-ready (the hot path): what candidates are timed by."""
    x = ready_inputs(session, None)
    return lambda: session.run(x)


def ready_inputs(session: Session, data: Inputs | None) -> list[np.ndarray]:
    """``data`` (default: the bundle's golden inputs) checked and converted to exactly what the model takes."""
    if data is None:
        arrays: list[np.ndarray] = session.bundle.golden_inputs()
    else:
        arrays = as_input_list(data, session.inputs)
    out = []
    for arr, spec in zip(arrays, session.inputs):
        check_shape(arr, spec)
        out.append(np.ascontiguousarray(to_model_dtype(arr, spec)))
    return out


def _time_calls(fn: Callable[[int], object], n: int, phase: str, progress: Progress | None) -> list[float]:
    times = []
    step = max(1, n // 50)
    for k in range(n):
        t = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t)
        if progress is not None and (k + 1) % step == 0:
            progress(phase, k + 1, n)
    return times


def benchmark(
    model: str | os.PathLike[str] | Session,
    data: Inputs | None = None,
    *,
    warmup: int = 10,
    runs: int = 200,
    threads: int | None = None,
    pin_cpus: Sequence[int] | None = None,
    images: Sequence[np.ndarray] | None = None,
    image_color: ColorOrder = ColorOrder.BGR,
    profile: bool = False,
    backend: str | None = None,
    delegates: Sequence[str] | None = None,
    keep_samples: bool = True,
    progress: Progress | None = None,
) -> BenchResult:
    """Benchmark a bundle (loaded here, so load time is measured) or an already-loaded :class:`Session`.

    Args:
        model: ``.epk`` path or a Session.
        data: model-ready input for the invoke-only timing (default: the bundle's golden input).
        warmup: untimed runs before each timed phase.
        runs: timed runs per phase.
        threads: interpreter threads (only when ``model`` is a path).
        pin_cpus: pin the process to these CPUs while loading and running (Linux).
        images: real images for the end-to-end timing (pre-process + invoke + post-process).
        image_color: channel order of ``images`` (OpenCV gives BGR).
        profile: also collect a per-op profile where the backend has one (ONNX Runtime).
        backend, delegates: passed to :func:`~edgepack.runtimes.load`.
        keep_samples: keep every per-call latency in the result (for distribution plots).
        progress: callback ``(phase, done, total)``.

    Raises:
        BenchmarkError, ConfigError, InputSpecError, and whatever ``load()`` raises.
    """
    if runs < 1 or warmup < 0:
        raise ConfigError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}.")
    if isinstance(model, Session) and (threads is not None or backend is not None or delegates is not None):
        raise ConfigError("threads/backend/delegates apply when benchmark() loads the bundle; pass a path.")
    with pinned(pin_cpus):
        rss_before = current_rss_bytes()
        load_s = None
        if isinstance(model, Session):
            session = model
        else:
            t = time.perf_counter()
            session = load(model, backend=backend, delegates=delegates, num_threads=threads)
            load_s = time.perf_counter() - t
        rss_after = current_rss_bytes()
        x = ready_inputs(session, data)
        t = time.perf_counter()
        session.run(x)
        first_s = time.perf_counter() - t
        _time_calls(lambda _k: session.run(x), warmup, "warmup", progress)
        timed = _time_calls(lambda _k: session.run(x), runs, "invoke", progress)
        invoke = latency_stats(timed, keep_samples=keep_samples)
        e2e, note = None, "no images given (pass images= / --images)"
        if images is not None and len(images) > 0:
            if session.manifest.preprocessing is None:
                raise InputSpecError("end-to-end timing needs the bundle's pre-processing spec; this bundle has none.")
            pics = [np.asarray(im) for im in images]
            _time_calls(lambda k: session.predict(pics[k % len(pics)], color=image_color), warmup, "warmup", progress)
            e2e = latency_stats(_time_calls(lambda k: session.predict(pics[k % len(pics)], color=image_color), runs,
                                            "end_to_end", progress), keep_samples=keep_samples)
            note = f"{len(pics)} image(s), cycled"
        prof = op_profile(session, x, runs=min(runs, 50), threads=threads) if profile else None
    entry = session.model
    return BenchResult(
        model=BenchModel(name=session.manifest.name, file=entry.file, format=entry.format, precision=entry.precision,
                         bytes=entry.bytes, sha256=entry.sha256, inputs=tuple(tuple(a.shape) for a in x)),
        runtime=BenchRuntime(backend=session.backend, backend_version=session.backend_version,
                             delegate=session.delegate, delegated_partitions=session.delegated_partitions,
                             threads=threads, pinned_cpus=tuple(sorted(pin_cpus)) if pin_cpus else None),
        warmup=warmup, load_seconds=load_s, first_run_seconds=first_s, invoke=invoke, end_to_end=e2e,
        end_to_end_note=note,
        memory=Memory(*peak_rss_bytes(), rss_before_load_bytes=rss_before,
                      rss_after_load_bytes=rss_after),
        profile=prof, environment=machine(),
    )


def interleaved(
    fns: Mapping[str, Callable[[], object]], *, blocks: int = 30, per_block: int = 50, warmup: int = 20
) -> dict[str, LatencyStats]:
    """Time several callables in interleaved blocks (A B C A B C ...), so machine noise hits all alike.

    Compare the results as ratios: on a shared machine absolute times drift, ratios measured this way hold.
    """
    if blocks < 1 or per_block < 1:
        raise ConfigError("blocks and per_block must be >= 1.")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            acc = times[name]
            for _ in range(per_block):
                t = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t)
    return {name: latency_stats(t) for name, t in times.items()}
