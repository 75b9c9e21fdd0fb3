"""Image files: which files are images, listing a folder of them, reading one (OpenCV, BGR uint8).

The one place edgepack reads image files (calibration folders, evaluation data, ``edgepack run``).
OpenCV is imported only when an image is read, so the runtime imports without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ImageReadError, OpenCVMissingError

#: File suffixes (lower case) read as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_file(path: str | os.PathLike[str], *, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> bool:
    """True when ``path`` names an image by its suffix (any case); the file itself is not opened."""
    return Path(path).suffix.lower() in extensions


def list_images(folder: str | os.PathLike[str], *, limit: int | None = None,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``folder`` (searched recursively), sorted by path, at most ``limit`` (None/0: all).

    Raises:
        ImageReadError: ``folder`` does not exist or is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageReadError(f"image folder {root} does not exist or is not a directory; pass a folder of images.")
    found = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p, extensions=extensions))
    return found[:limit] if limit else found


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an ``HxWx3`` BGR uint8 array (OpenCV's colour order).

    Raises:
        ImageReadError: the file is missing, corrupt or not an image.
        OpenCVMissingError: OpenCV is not installed.
    """
    try:
        import cv2
    except ImportError as exc:
        raise OpenCVMissingError(
            "reading image files needs OpenCV: pip install 'edgepack[camera]' (opencv-python-headless)."
        ) from exc
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image {p} does not exist or is not a file; check the path.")
    image = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"cannot read image {p} (corrupt or not an image); remove or replace it.")
    return np.asarray(image)
