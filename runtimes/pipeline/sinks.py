"""Where results go: a window, a video file, a folder of images, a JSON-lines file. Subclass :class:`Sink` for more.

A sink receives each :class:`FrameResult` (``result.frame`` is the annotated frame when the overlay is on) in the
pipeline's sink thread, in frame order. Files are written under a temporary name and renamed on ``close()``, so a
run that crashes leaves no half-written video.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import ConfigError, SourceError
from .results import FrameResult


class Sink:
    """Receives every processed frame. ``stop_requested`` True asks the pipeline to stop (e.g. 'q' in a window)."""

    stop_requested: bool = False

    def write(self, result: FrameResult) -> None:
        """Consume one result."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release (idempotent)."""


def _cv2(what: str) -> Any:
    if importlib.util.find_spec("cv2") is None:
        raise SourceError(f"{what} needs OpenCV, which is not installed here; "
                          "install it with `pip install 'edgepack[camera]'`.")
    import cv2

    return cv2


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


class VideoFileSink(Sink):
    """Writes frames to a video file (``.mp4``: mp4v, ``.avi``: MJPG unless ``fourcc`` is given).

    The size is the first frame's; later frames of another size are resized to it. ``fps`` defaults to 30.
    """

    def __init__(self, path: str | os.PathLike[str], *, fps: float = 30.0, fourcc: str | None = None) -> None:
        self.path = Path(path)
        if fps <= 0:
            raise ConfigError(f"VideoFileSink fps must be positive, got {fps}.")
        self.fps = fps
        self.fourcc = fourcc or ("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v")
        if len(self.fourcc) != 4:
            raise ConfigError(f"fourcc must be 4 characters (e.g. 'mp4v', 'MJPG'), got {self.fourcc!r}.")
        self._cv2 = _cv2("VideoFileSink")
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        frame = _bgr(result.frame)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (frame.shape[1], frame.shape[0])
            self._writer = self._cv2.VideoWriter(str(_partial(self.path)),
                                                 self._cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise SourceError(f"cannot write video {self.path} with codec {self.fourcc!r}; try a .avi path "
                                  "(MJPG) or another fourcc.")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = self._cv2.resize(frame, self._size)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(_partial(self.path), self.path)


class ImageFolderSink(Sink):
    """Writes each frame as an image file, named by ``pattern`` (``frame_id`` and ``stream`` fields)."""

    def __init__(self, folder: str | os.PathLike[str], *, pattern: str = "frame_{frame_id:06d}.jpg") -> None:
        self.folder = Path(folder)
        self.pattern = pattern
        self._cv2 = _cv2("ImageFolderSink")
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, result: FrameResult) -> None:
        path = self.folder / self.pattern.format(frame_id=result.frame_id, stream=result.stream)
        tmp = _partial(path)
        if not self._cv2.imwrite(str(tmp), _bgr(result.frame)):
            raise SourceError(f"cannot write image {path}; check the folder and the file suffix.")
        os.replace(tmp, path)


class JsonLinesSink(Sink):
    """One JSON object per frame: ``frame_id``, ``stream``, ``capture_ts``, ``glass_to_result_ms``, ``timings``,
    ``results`` (``top_k``, ``detections``, ``mask_shape`` — whichever the prediction carries). Flushed per line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = _partial(self.path).open("w", encoding="utf-8")
        self.lines = 0

    def write(self, result: FrameResult) -> None:
        if self._file is None:
            return
        record = {"frame_id": result.frame_id, "stream": result.stream, "capture_ts": round(result.capture_ts, 6),
                  "glass_to_result_ms": round(result.glass_to_result_ms, 3),
                  "timings": {k: round(v, 3) for k, v in result.timings.items()},
                  "results": prediction_to_json(result.prediction)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(_partial(self.path), self.path)


class WindowSink(Sink):
    """Shows frames in an OpenCV window; 'q' or Esc (or closing the window) asks the pipeline to stop."""

    def __init__(self, title: str = "edgepack") -> None:
        self.title = title
        self._cv2 = _cv2("WindowSink")
        self._open = False

    def write(self, result: FrameResult) -> None:
        cv2 = self._cv2
        cv2.imshow(self.title, _bgr(result.frame))
        self._open = True
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.stop_requested = True

    def close(self) -> None:
        if self._open:
            self._cv2.destroyWindow(self.title)
            self._cv2.waitKey(1)
            self._open = False


def _bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    return frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)


def prediction_to_json(prediction: Any) -> dict[str, Any]:
    """The JSON-ready parts of a prediction (duck-typed: ``top_k``, ``detections``, ``mask``)."""
    out: dict[str, Any] = {}
    top_k = getattr(prediction, "top_k", None)
    if top_k:
        out["top_k"] = [{"index": int(getattr(c, "index", -1)), "label": str(getattr(c, "label", "")),
                         "score": round(float(getattr(c, "score", 0.0)), 6)} for c in top_k]
    detections = getattr(prediction, "detections", None)
    if detections is not None:
        out["detections"] = [
            {"box": [round(float(v), 2) for v in d.box], "score": round(float(getattr(d, "score", 0.0)), 6),
             "label": str(getattr(d, "label", "")),
             **({"track_id": int(d.track_id)} if getattr(d, "track_id", None) is not None else {})}
            for d in detections]
    mask = getattr(prediction, "mask", None)
    if mask is not None:
        out["mask_shape"] = list(np.shape(mask))
    return out
