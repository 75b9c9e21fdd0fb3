"""Image files: which files are images, listing a folder of them, reading one (BGR uint8).

The one place edgepack reads image files (calibration folders, evaluation data, ``edgepack run``).
OpenCV when installed, else Pillow (the device extras' decoder, docs/device-install.md); either is imported
only when an image is read, so the runtime imports without them.
"""

from __future__ import annotations

import importlib
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

    OpenCV decodes when it is installed; otherwise Pillow (in the device extras), with the same result:
    EXIF orientation applied, alpha dropped, 16-bit scaled to 8 bits, grayscale repeated to three channels.

    Raises:
        ImageReadError: the file is missing, corrupt or not an image.
        OpenCVMissingError: neither OpenCV nor Pillow is installed.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image {p} does not exist or is not a file; check the path.")
    decoder = image_decoder()
    image = _read_cv2(p) if decoder == "opencv" else _read_pillow(p)
    if image is None:
        raise ImageReadError(f"cannot read image {p} (corrupt or not an image); remove or replace it.")
    return image


def image_decoder() -> str:
    """``opencv`` or ``pillow``: what :func:`read_image` decodes with here (OpenCV first).

    Raises:
        OpenCVMissingError: neither is installed (names the extra that brings Pillow).
    """
    for name, module in (("opencv", "cv2"), ("pillow", "PIL")):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return name
    raise OpenCVMissingError.for_module("PIL", purpose="reading image files (Pillow, or OpenCV)")


def _read_cv2(path: Path) -> np.ndarray | None:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image)


def _read_pillow(path: Path) -> np.ndarray | None:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            rgb = np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"image {path} is too large to decode safely ({exc}); scale it down first.") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # what Pillow raises on a bad file
        return None
    return np.ascontiguousarray(rgb[:, :, ::-1])
