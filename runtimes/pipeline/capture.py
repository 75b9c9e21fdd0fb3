"""The capture side: a one-frame slot (latest-frame or lossless) filled by a capture thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import SourceError
from .results import StatsRecorder
from .sources import Source


@dataclass
class Captured:
    """A frame and when it was captured (``time.monotonic()``)."""

    frame_id: int
    capture_ts: float
    frame: np.ndarray


class FrameSlot:
    """Holds at most one captured frame.

    With ``drop_stale`` (live sources) a new frame replaces one not yet taken, which is counted as dropped; without
    it (an unpaced file) ``put`` waits until the previous frame is taken, so every frame is processed, and the frame
    is stamped when accepted (a file has no glass; read ahead, it would otherwise count the wait as latency).
    ``cond`` may be shared by several slots so that one consumer can wait for any of them.
    """

    def __init__(self, *, drop_stale: bool, cond: threading.Condition | None = None) -> None:
        self.drop_stale = drop_stale
        self.cond = cond or threading.Condition()
        self._item: Captured | None = None
        self.ended: str | None = None  # set once the source is exhausted or failed
        self.dropped = 0
        self.captured = 0
        self.closed = False

    def put(self, item: Captured) -> bool:
        """Offer a frame; False when the slot was closed (stop capturing)."""
        with self.cond:
            if not self.drop_stale:
                while self._item is not None and not self.closed:
                    self.cond.wait(0.1)
                item.capture_ts = time.monotonic()  # a file has no glass: its frame "arrives" when accepted
            if self.closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.captured += 1
            self.cond.notify_all()
            return True

    def finish(self, reason: str) -> None:
        """Mark the end of the stream (after the last frame)."""
        with self.cond:
            self.ended = reason
            self.cond.notify_all()

    def take(self) -> Captured | None:
        """The waiting frame, if any (never blocks; call with or without ``cond`` held)."""
        with self.cond:
            item, self._item = self._item, None
            if item is not None:
                self.cond.notify_all()
            return item

    @property
    def ready(self) -> bool:
        """A frame is waiting."""
        return self._item is not None

    @property
    def exhausted(self) -> bool:
        """The stream ended and its last frame was taken."""
        return self.ended is not None and self._item is None

    def close(self) -> None:
        """Stop: wake a capture thread waiting in ``put``."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class CaptureThread(threading.Thread):
    """Reads ``source`` as fast as it delivers, stamping each frame, into ``slot``."""

    def __init__(self, source: Source, slot: FrameSlot, recorder: StatsRecorder, *, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.source = source
        self.slot = slot
        self.recorder = recorder

    def run(self) -> None:
        frame_id = 0
        reason = "end of stream"
        try:
            while not self.slot.closed:
                t0 = time.perf_counter()
                frame = self.source.read()
                ts = time.monotonic()
                if frame is None:
                    break
                self.recorder.add_stage("capture", (time.perf_counter() - t0) * 1e3)
                if not self.slot.put(Captured(frame_id, ts, frame)):
                    reason = "stopped"
                    break
                frame_id += 1
            else:
                reason = "stopped"
        except SourceError as exc:
            reason = f"source failed: {exc}"
        except Exception as exc:
            reason = f"source failed: {type(exc).__name__}: {exc}"
        finally:
            self.slot.finish(reason)


def wait_any(slots: list[FrameSlot], cond: threading.Condition, *, timeout: float) -> None:
    """Block (on the shared ``cond``) until a slot holds a frame, every stream has ended, or ``timeout``."""
    with cond:
        if not any(s.ready or s.closed for s in slots) and not all(s.exhausted for s in slots):
            cond.wait(timeout)
