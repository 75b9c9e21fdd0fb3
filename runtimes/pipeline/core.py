"""``Pipeline``: capture thread → inference (in the caller's thread) → overlay + sinks thread."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .capture import CaptureThread, FrameSlot, wait_any
from .inference import predict_timed
from .overlay import draw
from .results import FrameResult, PipelineStats, StatsRecorder
from .sinks import Sink
from .sources import Source, open_source

#: Name prefix of every thread a pipeline starts (tests check none is left alive).
THREAD_PREFIX = "edgepack-pipeline"
_DONE = object()


class SinkWorker:
    """Overlay + sinks for one stream, in a thread of their own (or inline) so they overlap with inference.

    At most ``depth`` results are queued or in the sinks: when sinks are the slowest stage, inference waits for room
    *before* taking the next frame (back-pressure), so the capture side drops stale frames instead of a queue
    growing, and the frame inference takes is the newest.
    """

    def __init__(self, sinks: Sequence[Sink], recorder: StatsRecorder, *, overlay: bool, threaded: bool,
                 depth: int = 2, name: str = THREAD_PREFIX + "-sinks") -> None:
        self.sinks = list(sinks)
        self.recorder = recorder
        self.overlay = overlay
        self.error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._room = threading.Semaphore(max(1, depth))
        self._reserved = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True) if threaded else None
        self.active = bool(self.sinks) or overlay
        if self._thread is not None and self.active:
            self._thread.start()

    @property
    def stop_requested(self) -> bool:
        """A sink asked to stop (window closed) or failed."""
        return self.error is not None or any(s.stop_requested for s in self.sinks)

    def queued(self) -> int:
        """Results waiting for the sinks."""
        return self._queue.qsize()

    def wait_room(self, stop: threading.Event) -> None:
        """Block until the sinks can take one more result (or ``stop`` is set, or a sink failed)."""
        if self._thread is None or not self.active or self._reserved:
            return
        while not stop.is_set() and self.error is None:
            if self._room.acquire(timeout=0.05):
                self._reserved = True
                return

    def submit(self, result: FrameResult, fps: float, stop: threading.Event) -> None:
        """Hand a result over (waits for room first unless :meth:`wait_room` reserved it)."""
        if not self.active:
            return
        if self._thread is None:
            self._process(result, fps)
            return
        self.wait_room(stop)
        if self._reserved:
            self._reserved = False
            self._queue.put((result, fps))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self.error is None:
                try:
                    self._process(*item)
                except Exception as exc:
                    self.error = exc
            self._room.release()

    def _process(self, result: FrameResult, fps: float) -> None:
        if self.overlay:
            t0 = time.perf_counter()
            result.frame = draw(result.frame, result.prediction, fps=fps, latency_ms=result.glass_to_result_ms)
            result.timings["overlay"] = ms = (time.perf_counter() - t0) * 1e3
            self.recorder.add_stage("overlay", ms)
        if self.sinks:
            t0 = time.perf_counter()
            for sink in self.sinks:
                sink.write(result)
            result.timings["sink"] = ms = (time.perf_counter() - t0) * 1e3
            self.recorder.add_stage("sink", ms)

    def close(self) -> None:
        """Drain the queue, stop the thread, close every sink; re-raise a sink's error."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        errors = [self.error] if self.error is not None else []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                errors.append(exc)
        self.sinks = []
        if errors:
            raise errors[0]


class Pipeline:
    """Capture (own thread, latest-frame policy) → pre → infer → post (caller's thread) → overlay → sinks (own thread).

    Args:
        session: an ``edgepack.runtimes.Session`` (or any object with ``predict(frame_bgr)``).
        source: a :class:`Source` or anything :func:`open_source` takes.
        sinks: where annotated frames and results go.
        overlay: draw boxes, labels, scores, masks, FPS and latency on the frames the sinks receive.
        drop_stale: keep only the latest frame (default: when the source is live — a camera, URL or paced file).
        threaded_sinks: run overlay and sinks in their own thread (default) or inline.
        sink_queue: results that may wait for the sinks before inference waits for them.

    ``result.frame`` in the loop is the frame as captured; sinks receive the annotated copy.
    """

    def __init__(self, session: Any, source: Source | int | str, *, sinks: Sequence[Sink] = (),
                 overlay: bool = True, drop_stale: bool | None = None, threaded_sinks: bool = True,
                 sink_queue: int = 2) -> None:
        self.session = session
        self.source = open_source(source)
        self.sinks = list(sinks)
        self.overlay = overlay
        self.drop_stale = self.source.live if drop_stale is None else drop_stale
        self.threaded_sinks = threaded_sinks
        self.sink_queue = sink_queue
        self._recorder = StatsRecorder()
        self._slot: FrameSlot | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._worker: SinkWorker | None = None
        self._closed = False
        self._shutdown_lock = threading.Lock()

    @property
    def stats(self) -> PipelineStats:
        """Stats so far (final once ``run`` has finished)."""
        return self._recorder.snapshot(dropped=self._slot.dropped if self._slot else 0)

    def run(self, max_frames: int | None = None) -> Iterator[FrameResult]:
        """Process frames until the stream ends, ``max_frames`` results, ``close()``, or Ctrl-C; yield each result.

        A stream that stops mid-way ends the loop cleanly; ``stats.ended`` says why it stopped.
        """
        if self._closed or self._slot is not None:
            raise RuntimeError("a Pipeline runs once; create a new one (its source is closed).")
        rec = self._recorder
        self._slot = slot = FrameSlot(drop_stale=self.drop_stale)
        capture = CaptureThread(self.source, slot, rec, name=THREAD_PREFIX + "-capture")
        self._threads = [capture]
        self._worker = worker = SinkWorker(self.sinks, rec, overlay=self.overlay, threaded=self.threaded_sinks,
                                           depth=self.sink_queue)
        capture.start()
        ended = None
        try:
            while ended is None:
                if self._stop.is_set() or worker.stop_requested:
                    ended = "stopped"
                    break
                worker.wait_room(self._stop)
                item = slot.take()
                if item is None:
                    if slot.exhausted:
                        ended = slot.ended or "end of stream"
                        break
                    wait_any([slot], slot.cond, timeout=0.05)
                    continue
                t_start = time.monotonic()
                prediction, timings = predict_timed(self.session, item.frame)
                done = time.monotonic()
                timings = {"wait": (t_start - item.capture_ts) * 1e3, **timings}
                result = FrameResult(item.frame_id, item.capture_ts, item.frame, prediction, timings,
                                     (done - item.capture_ts) * 1e3)
                rec.add_result(result, done)
                worker.submit(result, self._live_fps(), self._stop)
                yield result
                if max_frames is not None and rec.frames >= max_frames:
                    ended = "max frames"
        except KeyboardInterrupt:
            ended = "stopped"
        except GeneratorExit:
            ended = ended or "stopped"
            raise
        except BaseException as exc:
            ended = f"error: {type(exc).__name__}: {exc}"
            raise
        finally:
            rec.ended = ended or "stopped"
            self._shutdown()

    def _live_fps(self) -> float:
        rec = self._recorder
        if rec.first_ts is None or rec.last_ts is None or rec.last_ts <= rec.first_ts:
            return 0.0
        return rec.frames / (rec.last_ts - rec.first_ts)

    def _shutdown(self) -> None:
        """Stop and join the threads, release source and sinks; a second caller waits until that is done."""
        with self._shutdown_lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._slot is not None:
                self._slot.close()
            for t in self._threads:
                t.join(timeout=5.0)
            self.source.close()
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.close()

    def close(self) -> None:
        """Stop capturing and release the source and sinks (safe from another thread, and more than once)."""
        self._stop.set()
        if self._slot is None:  # never ran
            with self._shutdown_lock:
                if self._closed:
                    return
                self._closed = True
            self.source.close()
            for sink in self.sinks:
                sink.close()
            return
        self._shutdown()
        if self._recorder.ended == "running":
            self._recorder.ended = "stopped"

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
