"""A small IoU tracker: stable ids for detections across frames (numpy only).

Why not ByteTrack or norfair: ByteTrack's reference code needs torch, cython_bbox and lap (scipy/cython builds on a
Pi) and norfair pulls scipy and rich (tens of MB on a Raspberry Pi, slow to build on 32-bit Pi OS). A greedy IoU
match is enough for a camera at frame rate, where a box moves little between frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .detection import Detection, iou
from .errors import ConfigError


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    class_id: int
    missed: int = 0


class IouTracker:
    """Give each detection the id of the live track of its class it overlaps most (IoU above ``iou_threshold``,
    greedy best-first), or a new id; a track not matched for more than ``max_missed`` frames ends."""

    def __init__(self, *, iou_threshold: float = 0.3, max_missed: int = 5) -> None:
        """Raises: ConfigError: ``iou_threshold`` outside (0, 1) or a negative ``max_missed``."""
        if not 0.0 < iou_threshold < 1.0 or max_missed < 0:
            raise ConfigError(f"IouTracker: iou_threshold must be within (0, 1) and max_missed >= 0, got "
                              f"{iou_threshold}, {max_missed}.")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, detections: Sequence[Detection]) -> list[Detection]:
        """The detections of one frame, with ``track_id`` set (same order as given)."""
        pairs = []
        for d, det in enumerate(detections):
            box = np.asarray(det.box, np.float64)
            if self._tracks:
                overlaps = iou(box, np.stack([t.box for t in self._tracks]))
                pairs += [(float(o), d, t) for t, o in enumerate(overlaps)
                          if o > self.iou_threshold and self._tracks[t].class_id == det.class_id]
        ids: dict[int, int] = {}
        used: set[int] = set()
        for _, d, t in sorted(pairs, reverse=True):
            if d not in ids and t not in used:
                ids[d] = t
                used.add(t)
        out = []
        for d, det in enumerate(detections):
            box = np.asarray(det.box, np.float64)
            if d in ids:
                track = self._tracks[ids[d]]
                track.box, track.missed = box, 0
            else:
                track = _Track(self._next_id, box, det.class_id)
                self._next_id += 1
                self._tracks.append(track)
                used.add(len(self._tracks) - 1)
            out.append(dataclasses.replace(det, track_id=track.track_id))
        for t, track in enumerate(self._tracks):
            if t not in used:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return out
