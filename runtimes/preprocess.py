"""Image pre-processing from the manifest's spec: numpy only, OpenCV when installed for resizing."""

from __future__ import annotations

import importlib.util

import numpy as np

from .errors import InputSpecError
from .manifest import ColorOrder, Layout, Preprocessing, ResizeMode

_HAS_CV2 = importlib.util.find_spec("cv2") is not None
LETTERBOX_FILL = 114


def to_color(image: np.ndarray, *, source: ColorOrder, want: ColorOrder) -> np.ndarray:
    """Convert an HxW or HxWx3 image between BGR, RGB and grayscale."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image if want is ColorOrder.GRAY else np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputSpecError(f"expected an HxW or HxWx3 image, got shape {list(image.shape)}")
    image = image[:, :, :3]
    rgb = image[:, :, ::-1] if source is ColorOrder.BGR else image
    if want is ColorOrder.GRAY:
        gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(np.rint(gray), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else gray
    return rgb if want is ColorOrder.RGB else rgb[:, :, ::-1]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with OpenCV (area when shrinking, linear when growing) or a numpy bilinear fallback."""
    if image.shape[:2] == (height, width):
        return image
    if _HAS_CV2:
        import cv2

        shrink = height < image.shape[0] or width < image.shape[1]
        out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return out if out.ndim == image.ndim else out[:, :, None]
    return _bilinear(image, height, width)


def _bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    src = image.astype(np.float32)
    ys = (np.arange(height, dtype=np.float32) + 0.5) * image.shape[0] / height - 0.5
    xs = (np.arange(width, dtype=np.float32) + 0.5) * image.shape[1] / width - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, image.shape[0] - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, image.shape[1] - 1)
    y1, x1 = np.minimum(y0 + 1, image.shape[0] - 1), np.minimum(x0 + 1, image.shape[1] - 1)
    wy = np.clip(ys - y0, 0, 1)[:, None]
    wx = np.clip(xs - x0, 0, 1)[None, :]
    if src.ndim == 3:
        wy, wx = wy[..., None], wx[..., None]
    top = src[y0][:, x0] * (1 - wx) + src[y0][:, x1] * wx
    bottom = src[y1][:, x0] * (1 - wx) + src[y1][:, x1] * wx
    out = top * (1 - wy) + bottom * wy
    return np.clip(np.rint(out), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else out


def fit(image: np.ndarray, height: int, width: int, mode: ResizeMode) -> np.ndarray:
    """Fit an image to (height, width) by stretching, letterboxing or centre-cropping."""
    h, w = image.shape[:2]
    if mode is ResizeMode.STRETCH:
        return resize(image, height, width)
    if mode is ResizeMode.CROP:
        s = max(height / h, width / w)
        scaled = resize(image, max(height, round(h * s)), max(width, round(w * s)))
        top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
        return scaled[top : top + height, left : left + width]
    s = min(height / h, width / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    scaled = resize(image, nh, nw)
    canvas = np.full((height, width, *image.shape[2:]), LETTERBOX_FILL, dtype=image.dtype)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top : top + nh, left : left + nw] = scaled
    return canvas


def preprocess(image: np.ndarray, spec: Preprocessing, *, source: ColorOrder = ColorOrder.BGR) -> np.ndarray:
    """Turn one image (OpenCV's BGR by default) into a batch-of-one model input."""
    image = np.asarray(image)
    if image.dtype.kind not in "uif":
        raise InputSpecError(f"image dtype {image.dtype} is not numeric")
    image = to_color(image, source=source, want=spec.color)
    image = fit(image, spec.size[0], spec.size[1], spec.resize)
    x = image.astype(np.float32) * np.float32(spec.scale)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if spec.layout is Layout.NCHW:
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(x[None].astype(spec.dtype))
