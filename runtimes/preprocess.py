"""Image pre-processing from the manifest's spec: numpy, with OpenCV as the fast resize path when installed."""

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
    """Resize: area averaging along an axis that shrinks, bilinear along one that grows.

    OpenCV (``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when growing) when it is installed, else the same
    filters in numpy (:func:`resize_numpy`); the two agree to a grey level or so (``tests/test_device_install.py``).
    """
    if image.shape[:2] == (height, width):
        return image
    if _HAS_CV2:
        import cv2

        shrink = height < image.shape[0] or width < image.shape[1]
        out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return out if out.ndim == image.ndim else out[:, :, None]
    return resize_numpy(image, height, width)


def resize_numpy(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """:func:`resize` without OpenCV: OpenCV's filters per axis (area, bilinear, or its mixed-scale taps).

    Works in bands of output rows, so only the input rows a band reads are ever float64 (a big frame costs about
    ``_BAND_BYTES`` of working memory, not eight times its size).
    """
    h, w = image.shape[:2]
    mixed = (height < h) != (width < w) and height != h and width != w  # one axis shrinks, the other grows
    per_row = 16 * max(1, image[0].size) * max(1.0, h / height)  # float64 input rows + their cumsum, per output row
    step = max(1, int(_BAND_BYTES // per_row))
    out = np.concatenate([_along(_rows(image, height, a, min(a + step, height), mixed=mixed), width, axis=1,
                                 mixed=mixed) for a in range(0, height, step)], axis=0)
    return np.clip(np.rint(out), 0, 255).astype(image.dtype) if image.dtype == np.uint8 else out.astype(np.float32)


#: Working memory of one band of :func:`resize_numpy`.
_BAND_BYTES = 16 << 20


def _rows(image: np.ndarray, n_out: int, a: int, b: int, *, mixed: bool) -> np.ndarray:
    """Output rows ``[a, b)`` of resampling ``image`` to ``n_out`` rows (as :func:`_along` on axis 0), as float64,
    converting only the input rows they read."""
    n_in = image.shape[0]
    if n_out == n_in:
        return image[a:b].astype(np.float64)
    if n_out < n_in and not mixed:
        scale = n_in / n_out
        edges = np.arange(a, b + 1, dtype=np.float64) * scale
        idx = np.minimum(np.floor(edges).astype(int), n_in - 1)
        x = image[idx[0] : idx[-1] + 1].astype(np.float64)
        frac = _shape(edges - idx, 0, x.ndim)
        local = idx - idx[0]
        cum = np.concatenate([np.zeros_like(x[:1]), np.cumsum(x, axis=0)], axis=0)
        return np.diff(cum.take(local, axis=0) + frac * x.take(local, axis=0), axis=0) / scale
    lo, hi, t = _mixed_taps(n_in, n_out) if mixed else _linear_taps(n_in, n_out)
    lo, hi, t = lo[a:b], hi[a:b], t[a:b]
    first = int(lo.min())
    x = image[first : int(hi.max()) + 1].astype(np.float64)
    t = _shape(t, 0, x.ndim)
    return x.take(lo - first, axis=0) * (1 - t) + x.take(hi - first, axis=0) * t


def _along(x: np.ndarray, n_out: int, *, axis: int, mixed: bool) -> np.ndarray:
    """Resample ``x`` to ``n_out`` samples along ``axis``: exact pixel-area averages when shrinking (from a
    cumulative sum), else two taps per output (bilinear with half-pixel centres, or OpenCV's INTER_AREA taps)."""
    n_in = x.shape[axis]
    if n_out == n_in:
        return x
    if n_out < n_in and not mixed:
        scale = n_in / n_out
        edges = np.arange(n_out + 1, dtype=np.float64) * scale
        idx = np.minimum(np.floor(edges).astype(int), n_in - 1)
        frac = _shape(edges - idx, axis, x.ndim)
        cum = np.concatenate([np.zeros_like(x.take([0], axis=axis)), np.cumsum(x, axis=axis)], axis=axis)
        area = cum.take(idx, axis=axis) + frac * x.take(idx, axis=axis)
        return np.diff(area, axis=axis) / scale
    lo, hi, t = _mixed_taps(n_in, n_out) if mixed else _linear_taps(n_in, n_out)
    t = _shape(t, axis, x.ndim)
    return x.take(lo, axis=axis) * (1 - t) + x.take(hi, axis=axis) * t


def _shape(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    return v.reshape([-1 if d == axis else 1 for d in range(ndim)])


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    return lo, np.minimum(lo + 1, n_in - 1), np.clip(pos - lo, 0, 1)


def _mixed_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's ``INTER_AREA`` taps when one axis grows and the other shrinks (two taps per output pixel)."""
    inv_scale = n_out / n_in
    scale = 1.0 / inv_scale  # OpenCV's arithmetic, so that ties fall the same way
    dst = np.arange(n_out, dtype=np.float64)
    lo = np.floor(dst * scale).astype(int)
    frac = ((dst + 1) - (lo + 1) * inv_scale).astype(np.float32).astype(np.float64)
    frac = np.where(frac <= 0, 0.0, frac - np.floor(frac))
    frac = np.where(lo + 1 >= n_in, 0.0, frac)
    lo = np.clip(lo, 0, n_in - 1)
    return lo, np.minimum(lo + 1, n_in - 1), frac


def fit(image: np.ndarray, height: int, width: int, mode: ResizeMode, *,
        fill: float = LETTERBOX_FILL) -> np.ndarray:
    """Fit an image to (height, width) by stretching, letterboxing (bars of ``fill``) or centre-cropping."""
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
    canvas = np.full((height, width, *image.shape[2:]), fill, dtype=image.dtype)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top : top + nh, left : left + nw] = scaled
    return canvas


def pixel_scale(image: np.ndarray) -> float:
    """The factor that brings ``image``'s pixel values to 0..255, by dtype (docs/architecture.md "Session").

    uint8 is 0..255 (factor 1), uint16 0..65535 (255/65535), float 0..1 (255: scikit-image's convention).
    Float values outside 0..1 (a 0..255 float image, an already normalised tensor), NaN or inf, and any other
    dtype are refused rather than silently mis-scaled.

    Raises:
        InputSpecError: an unsupported dtype, or a float image that is not finite and within 0..1.
    """
    if image.dtype == np.uint8:
        return 1.0
    if image.dtype == np.uint16:
        return 255.0 / 65535.0
    if image.dtype.kind == "f":
        lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
        if not (lo >= 0.0 and hi <= 1.0):  # also False for NaN
            raise InputSpecError(
                f"float image values must be finite and within 0..1, got {lo:g}..{hi:g}; pass uint8 0..255 pixels "
                "(x.astype(np.uint8)), or divide a 0..255 float image by 255 (use run() for a ready tensor).")
        return 255.0
    raise InputSpecError(f"image dtype {image.dtype} is not supported; pass uint8 (0..255), uint16 (0..65535) "
                         "or float (0..1) pixels.")


def preprocess(image: np.ndarray, spec: Preprocessing, *, source: ColorOrder = ColorOrder.BGR) -> np.ndarray:
    """Turn one image (OpenCV's BGR by default) into a batch-of-one model input.

    The image is resized in its own dtype first and colour-converted at the model's size, so a big frame never
    exists as floats; pixel values are read by dtype (:func:`pixel_scale`) before the spec's scale, mean and std.

    Raises:
        InputSpecError: not an HxW / HxWxC (C = 1, 3, 4) image, empty, or of an unsupported dtype or range.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputSpecError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputSpecError(f"the image is empty (shape {list(image.shape)}); pass an image with pixels.")
    to_255 = pixel_scale(image)
    if image.dtype.kind == "f" and image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float32)  # float16: OpenCV resizes only 32/64-bit floats
    image = fit(image, spec.size[0], spec.size[1], spec.resize, fill=LETTERBOX_FILL / to_255)
    image = to_color(image, source=source, want=spec.color)
    x = image.astype(np.float32) * np.float32(spec.scale * to_255)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if spec.layout is Layout.NCHW:
        x = np.transpose(x, (2, 0, 1))
    return np.ascontiguousarray(x[None].astype(spec.dtype))
