"""``MultiStream``: several cameras, one model — a batcher feeding one shared inference worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, InputSpecError
from .capture import Captured, CaptureThread, FrameSlot, wait_any
from .core import THREAD_PREFIX, SinkWorker
from .inference import batch_capable, predict_batch, predict_timed
from .results import FrameResult, PipelineStats, StatsRecorder
from .sinks import Sink
from .sources import Source, open_source


@dataclass
class MultiStreamStats:
    """Per-stream stats and the shared worker's throughput.

    Attributes:
        streams: one :class:`PipelineStats` per source, in source order.
        throughput_fps: results per second over all streams.
        mode: ``"batched"``, ``"sequential"``, or ``"sequential (fallback: WHY)"`` when batching was asked for
            but the model cannot take a batch.
        batches: inference calls made; ``mean_batch``: frames per call.
        queue: ``(seconds since start, frames waiting for the worker)`` sampled every ``sample_s``.
    """

    streams: list[PipelineStats]
    throughput_fps: float
    mode: str
    batches: int
    mean_batch: float
    queue: list[tuple[float, int]] = field(default_factory=list)

    @property
    def fps_spread(self) -> float:
        """(max − min) / mean of the per-stream FPS (0 when they are equal)."""
        fps = [s.fps for s in self.streams]
        mean = sum(fps) / len(fps) if fps else 0.0
        return (max(fps) - min(fps)) / mean if mean > 0 else 0.0

    def summary_line(self) -> str:
        """One line: mode, throughput, per-stream FPS and glass-to-result."""
        per = ", ".join(f"{s.fps:.1f}" for s in self.streams)
        g50 = max((s.g2r_p50_ms for s in self.streams), default=0.0)
        g95 = max((s.g2r_p95_ms for s in self.streams), default=0.0)
        return (f"{len(self.streams)} streams {self.mode}: throughput {self.throughput_fps:.1f} fps, per-stream fps "
                f"[{per}], mean batch {self.mean_batch:.2f}, glass-to-result p50 {g50:.2f} ms p95 {g95:.2f} ms "
                f"(worst stream), dropped {sum(s.dropped for s in self.streams)}")


class MultiStream:
    """N sources → one inference worker that batches frames arriving within ``window_ms`` (up to ``max_batch``).

    Scheduling is round-robin: a batch takes at most one frame per stream, starting after the stream served
    last, so every stream gets the same share and results come back per stream in capture order. With
    ``batched=False`` the worker runs one frame at a time in the same order (the comparison point).
    A model whose input has a fixed batch (or refuses a batch size) runs sequentially; ``stats.mode`` says so.

    Args:
        session: an ``edgepack.runtimes.Session`` (batching needs its ``preprocess`` + ``run``).
        sources: :class:`Source` objects or anything :func:`open_source` takes.
        max_batch: most frames per inference call.
        window_ms: how long the batcher waits, after the first frame of a batch, for the other streams.
        batched: False runs frames one at a time.
        drop_stale: keep only each stream's latest frame (default: per source, when it is live).
        sinks: one list of sinks per stream (or None).
        overlay: draw the overlay on frames the sinks receive.
        sample_s: how often the queue length is sampled.
    """

    def __init__(self, session: Any, sources: Sequence[Source | int | str], *, max_batch: int = 4,
                 window_ms: float = 3.0, batched: bool = True, drop_stale: bool | None = None,
                 sinks: Sequence[Sequence[Sink]] | None = None, overlay: bool = False, sample_s: float = 0.1) -> None:
        if not sources:
            raise ConfigError("MultiStream needs at least one source.")
        if max_batch < 1 or window_ms < 0:
            raise ConfigError(f"max_batch must be ≥ 1 and window_ms ≥ 0 (got {max_batch}, {window_ms}).")
        if sinks is not None and len(sinks) != len(sources):
            raise ConfigError(f"sinks must hold one list per source ({len(sources)}), got {len(sinks)}.")
        self.session = session
        opened: list[Source] = []
        try:
            for s in sources:
                opened.append(open_source(s))
        except BaseException:
            for s in opened:
                s.close()
            raise
        self.sources = opened
        self.max_batch = max_batch
        self.window_s = window_ms / 1e3
        self.drop_stale = drop_stale
        self.sample_s = sample_s
        self._sinks = [list(x) for x in sinks] if sinks is not None else [[] for _ in opened]
        self.overlay = overlay
        why = batch_capable(session) if batched else None
        self.mode = "sequential" if not batched else (f"sequential (fallback: {why})" if why else "batched")
        self._recorders = [StatsRecorder() for _ in opened]
        self._slots: list[FrameSlot] = []
        self._threads: list[threading.Thread] = []
        self._workers: list[SinkWorker] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._t0: float | None = None
        self._batches = 0
        self._batched_frames = 0
        self._queue: list[tuple[float, int]] = []

    @property
    def stats(self) -> MultiStreamStats:
        """Stats so far."""
        streams = [r.snapshot(dropped=s.dropped) for r, s in zip(self._recorders, self._slots)] if self._slots \
            else [r.snapshot(dropped=0) for r in self._recorders]
        firsts = [r.first_ts for r in self._recorders if r.first_ts is not None]
        lasts = [r.last_ts for r in self._recorders if r.last_ts is not None]
        total = sum(r.frames for r in self._recorders)
        span = max(lasts) - min(firsts) if firsts and lasts else 0.0
        return MultiStreamStats(streams=streams, throughput_fps=total / span if span > 0 else 0.0, mode=self.mode,
                                batches=self._batches,
                                mean_batch=self._batched_frames / self._batches if self._batches else 0.0,
                                queue=list(self._queue))

    def run(self, max_frames: int | None = None, *, duration_s: float | None = None) -> Iterator[FrameResult]:
        """Yield results of every stream (``result.stream`` says which) until all streams end, each stream has
        ``max_frames`` results, ``duration_s`` passes, ``close()``, or Ctrl-C."""
        if self._started:
            raise RuntimeError("a MultiStream runs once; create a new one.")
        self._started = True
        cond = threading.Condition()
        self._slots = [FrameSlot(drop_stale=src.live if self.drop_stale is None else self.drop_stale, cond=cond)
                       for src in self.sources]
        self._threads = [CaptureThread(src, slot, rec, name=f"{THREAD_PREFIX}-capture-{i}")
                         for i, (src, slot, rec) in enumerate(zip(self.sources, self._slots, self._recorders))]
        self._workers = [SinkWorker(s, rec, overlay=self.overlay, threaded=True, name=f"{THREAD_PREFIX}-sinks-{i}")
                         for i, (s, rec) in enumerate(zip(self._sinks, self._recorders))]
        self._t0 = t0 = time.monotonic()
        for t in self._threads:
            t.start()
        n = len(self.sources)
        done = [False] * n
        next_rr = 0
        last_sample = -1e9
        reason = None
        try:
            while reason is None:
                if self._stop.is_set() or any(w.stop_requested for w in self._workers):
                    reason = "stopped"
                    break
                if duration_s is not None and time.monotonic() - t0 >= duration_s:
                    reason = "duration"
                    break
                for i, slot in enumerate(self._slots):
                    if not done[i] and slot.exhausted:
                        done[i] = True
                        self._recorders[i].ended = slot.ended or "end of stream"
                if all(done):
                    break
                order = [(next_rr + k) % n for k in range(n) if not done[(next_rr + k) % n]]
                now = time.monotonic()
                if now - last_sample >= self.sample_s:
                    last_sample = now
                    self._queue.append((round(now - t0, 3), sum(s.ready for s in self._slots)
                                        + sum(w.queued() for w in self._workers)))
                group = self._collect(order, cond)
                if not group:
                    continue
                next_rr = (group[-1][0] + 1) % n
                yield from self._infer(group)
                if max_frames is not None:
                    for i, rec in enumerate(self._recorders):
                        if not done[i] and rec.frames >= max_frames:
                            done[i] = True
                            self._recorders[i].ended = "max frames"
                            self._slots[i].close()
        except KeyboardInterrupt:
            reason = "stopped"
        finally:
            for rec in self._recorders:
                if rec.ended == "running":
                    rec.ended = reason or "stopped"
            self._shutdown()

    def _collect(self, order: list[int], cond: threading.Condition) -> list[tuple[int, Captured]]:
        """Frames for one inference call, round-robin from ``order[0]``: at most one per stream."""
        wait_any([self._slots[i] for i in order], cond, timeout=0.05)
        limit = self.max_batch if self.mode == "batched" else 1
        group: list[tuple[int, Captured]] = []
        picked: set[int] = set()
        deadline = None
        while True:
            for i in order:
                if i not in picked and len(group) < limit:
                    item = self._slots[i].take()
                    if item is not None:
                        group.append((i, item))
                        picked.add(i)
            if not group or len(group) >= limit or len(picked) == len(order):
                return group
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + self.window_s
            if now >= deadline:
                return group
            with cond:
                if not any(self._slots[i].ready for i in order if i not in picked):
                    cond.wait(deadline - now)

    def _infer(self, group: list[tuple[int, Captured]]) -> Iterator[FrameResult]:
        t_start = time.monotonic()
        frames = [item.frame for _, item in group]
        if self.mode == "batched" and len(group) > 1:
            try:
                predictions, timings = predict_batch(self.session, frames)
            except InputSpecError as exc:
                self.mode = f"sequential (fallback: {str(exc).splitlines()[0]})"
                predictions, timings = self._one_by_one(frames)
        else:
            predictions, timings = self._one_by_one(frames)
        done = time.monotonic()
        self._batches += 1
        self._batched_frames += len(group)
        for (i, item), prediction in zip(group, predictions):
            result = FrameResult(item.frame_id, item.capture_ts, item.frame, prediction,
                                 {"wait": (t_start - item.capture_ts) * 1e3, **timings, "batch": float(len(group))},
                                 (done - item.capture_ts) * 1e3, stream=i)
            rec = self._recorders[i]
            rec.add_result(result, done)
            span = (rec.last_ts or done) - (rec.first_ts or done)
            self._workers[i].submit(result, rec.frames / span if span > 0 else 0.0, self._stop)
            yield result

    def _one_by_one(self, frames: list[Any]) -> tuple[list[Any], dict[str, float]]:
        predictions, total = [], {"pre": 0.0, "infer": 0.0, "post": 0.0}
        for f in frames:
            p, t = predict_timed(self.session, f)
            predictions.append(p)
            for k in total:
                total[k] += t[k]
        return predictions, total

    def _shutdown(self) -> None:
        with self._lock:  # a second caller waits until the first is done
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            for slot in self._slots:
                slot.close()
            for t in self._threads:
                t.join(timeout=5.0)
            for src in self.sources:
                src.close()
            errors = []
            for w in self._workers:
                try:
                    w.close()
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Stop every capture thread and release sources and sinks (idempotent; safe from another thread)."""
        self._stop.set()
        if not self._started:
            self._closed = True
            for src in self.sources:
                src.close()
            return
        self._shutdown()
        for rec in self._recorders:
            if rec.ended == "running":
                rec.ended = "stopped"

    def __enter__(self) -> MultiStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
