"""What the camera pipeline hands out: one :class:`FrameResult` per processed frame and a :class:`PipelineStats`."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Stage names in pipeline order; ``wait`` is capture → start of pre-processing (time a frame spent queued).
STAGES = ("wait", "pre", "infer", "post", "overlay", "sink")
#: Stages that make up the service time of one frame.
SERVICE_STAGES = ("pre", "infer", "post")


@dataclass
class FrameResult:
    """One processed frame.

    Attributes:
        frame_id: the source's frame counter (0-based; gaps are frames the latest-frame policy dropped).
        capture_ts: ``time.monotonic()`` when the frame was captured (read from the source).
        frame: the BGR uint8 frame (with the overlay drawn once the overlay stage has run).
        prediction: what ``session.predict(frame)`` returned.
        timings: milliseconds per stage (``wait``, ``pre``, ``infer``, ``post``, then ``overlay``, ``sink``).
        glass_to_result_ms: capture → prediction ready (before overlay and sinks).
        stream: index of the source in a :class:`MultiStream` (0 for a single :class:`Pipeline`).
    """

    frame_id: int
    capture_ts: float
    frame: np.ndarray
    prediction: Any
    timings: dict[str, float] = field(default_factory=dict)
    glass_to_result_ms: float = 0.0
    stream: int = 0

    @property
    def service_ms(self) -> float:
        """Pre-process + inference + post-process of this frame."""
        return sum(self.timings.get(s, 0.0) for s in SERVICE_STAGES)


@dataclass
class PipelineStats:
    """Summary of a run (live while it runs: read ``Pipeline.stats`` at any time).

    Attributes:
        frames: frames processed (results produced).
        fps: processed frames per second of wall time (first capture → last result).
        stage_p50_ms: median milliseconds per stage (``pre``, ``infer``, ``post``, ``overlay``, ``sink``, and
            ``capture``: the source's time per frame).
        service_ms: median pre + infer + post of one frame.
        g2r_p50_ms, g2r_p95_ms: glass-to-result latency percentiles.
        dropped: frames captured but never processed (the latest-frame policy replaced them with newer ones).
        ended: why the run stopped: ``"running"``, ``"end of stream"``, ``"max frames"``, ``"stopped"``
            (``close()`` or Ctrl-C), ``"source failed: ..."`` (the stream stopped mid-way), or ``"error: ..."``.
    """

    frames: int = 0
    fps: float = 0.0
    stage_p50_ms: dict[str, float] = field(default_factory=dict)
    service_ms: float = 0.0
    g2r_p50_ms: float = 0.0
    g2r_p95_ms: float = 0.0
    dropped: int = 0
    ended: str = "running"

    @property
    def bottleneck(self) -> tuple[str, float]:
        """The slowest stage and its p50 (ms); ``("none", 0.0)`` before the first frame."""
        stages = {k: v for k, v in self.stage_p50_ms.items() if k != "wait"}
        if not stages:
            return "none", 0.0
        name = max(stages, key=lambda k: stages[k])
        return name, stages[name]

    def summary_line(self) -> str:
        """``frames N, fps F, bottleneck STAGE Y ms, service S ms, glass-to-result p50 B ms p95 C ms, dropped D``."""
        stage, ms = self.bottleneck
        return (f"frames {self.frames}, fps {self.fps:.1f}, bottleneck {stage} {ms:.2f} ms, "
                f"service {self.service_ms:.2f} ms, glass-to-result p50 {self.g2r_p50_ms:.2f} ms "
                f"p95 {self.g2r_p95_ms:.2f} ms, dropped {self.dropped}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``bottleneck`` included)."""
        stage, ms = self.bottleneck
        return {"frames": self.frames, "fps": self.fps, "stage_p50_ms": dict(self.stage_p50_ms),
                "service_ms": self.service_ms, "g2r_p50_ms": self.g2r_p50_ms, "g2r_p95_ms": self.g2r_p95_ms,
                "dropped": self.dropped, "ended": self.ended, "bottleneck": stage, "bottleneck_ms": ms}


class StatsRecorder:
    """Thread-safe running record of a stream's timings (a bounded window of the latest samples)."""

    def __init__(self, *, window: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._stages: dict[str, list[float]] = {}
        self._g2r: list[float] = []
        self._service: list[float] = []
        self.frames = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.ended = "running"

    def add_stage(self, name: str, ms: float) -> None:
        """Record one stage sample (e.g. ``capture`` from the capture thread, ``sink`` from the sink thread)."""
        with self._lock:
            self._append(self._stages.setdefault(name, []), ms)

    def add_result(self, result: FrameResult, now: float) -> None:
        """Record a frame's pre/infer/post timings and its glass-to-result latency."""
        with self._lock:
            self.frames += 1
            if self.first_ts is None:
                self.first_ts = result.capture_ts
            self.last_ts = now
            for name in ("wait", *SERVICE_STAGES):
                if name in result.timings:
                    self._append(self._stages.setdefault(name, []), result.timings[name])
            self._append(self._service, result.service_ms)
            self._append(self._g2r, result.glass_to_result_ms)

    def _append(self, values: list[float], v: float) -> None:
        values.append(float(v))
        if len(values) > 2 * self._window:
            del values[: len(values) - self._window]

    def snapshot(self, *, dropped: int) -> PipelineStats:
        """The stats so far."""
        with self._lock:
            span = (self.last_ts - self.first_ts) if self.first_ts is not None and self.last_ts is not None else 0.0
            return PipelineStats(
                frames=self.frames,
                fps=self.frames / span if span > 0 else 0.0,
                stage_p50_ms={k: _pct(v, 50) for k, v in self._stages.items() if v},
                service_ms=_pct(self._service, 50),
                g2r_p50_ms=_pct(self._g2r, 50),
                g2r_p95_ms=_pct(self._g2r, 95),
                dropped=dropped,
                ended=self.ended,
            )


def _pct(values: Iterable[float], q: float) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else 0.0
