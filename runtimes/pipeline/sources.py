"""Frame sources: camera index / V4L2 device, video file, RTSP/HTTP URL, picamera2, an image folder.

OpenCV and picamera2 are imported only when a source that needs them is opened.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageReadError, SourceError
from ..images import list_images, read_image

_URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")


class Source:
    """A stream of BGR uint8 frames. Subclass and implement :meth:`read` to feed a pipeline from anything.

    Attributes:
        name: what was opened (shown in errors and logs).
        fps: the native frame rate when known (video files), else None.
        live: True when frames arrive on their own clock (cameras, URLs, paced files): the pipeline then keeps
            only the latest frame and drops stale ones. False (an unpaced file or folder): every frame is processed.
    """

    name: str = "source"
    fps: float | None = None
    live: bool = True

    def read(self) -> np.ndarray | None:
        """The next frame (blocks until it is there), or None at the end of the stream.

        Raises:
            SourceError: the stream stopped mid-way (a camera unplugged, a network stream cut).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file (idempotent)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Pacer:
    """Sleeps so that frame ``n`` is released at ``start + n / fps`` (a file that behaves like a camera)."""

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps and fps > 0 else 0.0
        self.start: float | None = None
        self.n = 0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.n * self.period
        self.n += 1
        if due > now:
            time.sleep(due - now)


class OpenCVSource(Source):
    """A camera, V4L2 device, video file or stream URL read with ``cv2.VideoCapture``."""

    def __init__(self, spec: int | str, *, pace: bool = False, width: int | None = None,
                 height: int | None = None, pace_fps: float | None = None, loop: bool = False) -> None:
        cv2 = _cv2(spec)
        self.name = str(spec)
        self._cv2 = cv2
        self._is_file = isinstance(spec, str) and not spec.startswith(_URL_SCHEMES) and not _is_device(spec)
        if self._is_file and not Path(spec).is_file():
            raise SourceError(f"video source {spec!r} does not exist; pass a video file, a camera index, "
                              "/dev/videoN, an rtsp:// or http:// URL, 'picamera2' or an image folder.")
        self._cap = cv2.VideoCapture(spec)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open video source {spec!r} (OpenCV could not open it: no such camera, "
                              "no permission, an unreachable URL or an unsupported file); check it with "
                              "`v4l2-ctl --list-devices` or `ffprobe`.")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        native = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = native if 0 < native < 1000 else None
        self.live = not self._is_file or pace
        self._pacer = _Pacer((pace_fps or self.fps or 30.0) if (self._is_file and pace) else None)
        self._frames = 0
        self._loop = loop and self._is_file

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        self._pacer.wait()
        ok, frame = self._cap.read()
        if (not ok or frame is None) and self._loop and self._frames:
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            if self._is_file:
                return None
            raise SourceError(f"video source {self.name!r} stopped after {self._frames} frame(s) "
                              "(camera unplugged or stream cut); reopen it to continue.")
        self._frames += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(Source):
    """The images of a folder (sorted by path), in any size; paced at ``fps`` when ``pace`` is set."""

    def __init__(self, folder: str | os.PathLike[str], *, pace: bool = False, fps: float = 30.0) -> None:
        self.name = str(folder)
        try:
            self._files = list_images(folder)
        except ImageReadError as exc:
            raise SourceError(f"cannot open image folder {str(folder)!r}: {exc}") from exc
        if not self._files:
            raise SourceError(f"image folder {str(folder)!r} holds no images; add .jpg/.png files or pass "
                              "another source.")
        self.fps = fps
        self.live = pace
        self._pacer = _Pacer(fps if pace else None)
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self._files):
            return None
        self._pacer.wait()
        path = self._files[self._next]
        self._next += 1
        try:
            return read_image(path)
        except ImageReadError as exc:
            raise SourceError(f"image folder {self.name!r}: {exc}") from exc


class PiCamera2Source(Source):
    """A Raspberry Pi camera through picamera2 (libcamera); frames come back BGR (picamera2's ``RGB888``)."""

    def __init__(self, *, width: int = 640, height: int = 480) -> None:
        self.name = "picamera2"
        if importlib.util.find_spec("picamera2") is None:
            raise SourceError("source 'picamera2' needs the picamera2 module, which is not installed here; on "
                              "Raspberry Pi OS run `sudo apt install python3-picamera2` (and create the venv with "
                              "--system-site-packages), or use a camera index with OpenCV.")
        from picamera2 import Picamera2  # type: ignore[import-not-found]

        try:
            self._cam = Picamera2()
            self._cam.configure(self._cam.create_video_configuration(
                main={"format": "RGB888", "size": (width, height)}))
            self._cam.start()
        except (RuntimeError, IndexError, OSError) as exc:
            raise SourceError(f"cannot open source 'picamera2' ({exc}); check the ribbon cable and "
                              "`libcamera-hello --list-cameras`.") from exc
        self.live = True

    def read(self) -> np.ndarray | None:
        if self._cam is None:
            return None
        try:
            return self._cam.capture_array("main")
        except RuntimeError as exc:
            raise SourceError(f"source 'picamera2' stopped ({exc}).") from exc

    def close(self) -> None:
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None


def open_source(spec: int | str | os.PathLike[str] | Source, *, pace: bool = False, width: int | None = None,
                height: int | None = None, fps: float | None = None, loop: bool = False) -> Source:
    """Open a frame source.

    Args:
        spec: a camera index (``0``), ``"/dev/videoN"``, a video file, an ``rtsp://``/``http://`` URL,
            ``"picamera2"``, a folder of images, or a :class:`Source` (returned as is).
        pace: play a file (or folder) at its own frame rate, like a camera, so stale frames are dropped when
            inference cannot keep up. Unpaced, every frame of a file is processed.
        width, height: requested capture size for cameras (the device may pick the nearest it supports).
        fps: frame rate of a paced file (default: its own, else 30) or image folder (default 30).
        loop: start a video file again at its end (a long run from a short clip).

    Raises:
        SourceError: the source cannot be opened; the message names it.
    """
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, bool) or not isinstance(spec, (int, str, os.PathLike)):
        raise SourceError(f"cannot open source {spec!r}: expected a camera index, a path, a URL or 'picamera2'.")
    if isinstance(spec, int):
        return OpenCVSource(spec, width=width, height=height)
    text = os.fspath(spec)
    if text == "picamera2":
        return PiCamera2Source(width=width or 640, height=height or 480)
    if text.isdigit():
        return OpenCVSource(int(text), width=width, height=height)
    if Path(text).is_dir():
        return ImageFolderSource(text, pace=pace, fps=fps or 30.0)
    return OpenCVSource(text, pace=pace, width=width, height=height, pace_fps=fps, loop=loop)


def _is_device(spec: str) -> bool:
    return spec.startswith("/dev/video")


def _cv2(spec: object) -> Any:
    if importlib.util.find_spec("cv2") is None:
        raise SourceError(f"source {spec!r} needs OpenCV, which is not installed here; install it with "
                          "`pip install 'edgepack[camera]'` (or use 'picamera2' or an image folder).")
    import cv2

    return cv2
