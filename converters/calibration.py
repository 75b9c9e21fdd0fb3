"""Calibration data: numpy arrays, an image folder (read with OpenCV), or any iterable.

Images are pre-processed exactly as the bundle's pre-processing spec says, by the runtime's own code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtimes.manifest import ColorOrder, Preprocessing
from edgepack.runtimes.preprocess import preprocess

from .errors import CalibrationError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageFolder:
    """A folder of images (searched recursively), read with OpenCV in BGR order."""

    path: str | Path
    limit: int | None = None
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS

    def files(self) -> list[Path]:
        """Image files, sorted, at most ``limit``."""
        root = Path(self.path)
        if not root.is_dir():
            raise CalibrationError(f"calibration folder {root} does not exist or is not a directory.")
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in self.extensions)
        if not found:
            raise CalibrationError(
                f"calibration folder {root} holds no images ({', '.join(self.extensions)}); "
                "add 100-500 representative images."
            )
        return found[: self.limit] if self.limit else found

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        for f in self.files():
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                raise CalibrationError(f"cannot read image {f} (corrupt or not an image); remove or replace it.")
            yield image


Calibration = ImageFolder | np.ndarray | Iterable[Any]


def _as_sample(item: Any, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[str],
               pre: Preprocessing | None, where: str) -> list[np.ndarray]:
    """One calibration item → model-ready arrays with a batch dimension of 1."""
    items = list(item) if isinstance(item, (list, tuple)) else [item]
    if len(items) != len(shapes):
        raise CalibrationError(f"{where}: model has {len(shapes)} input(s), sample has {len(items)}.")
    out = []
    for arr, shape, dtype in zip(items, shapes, dtypes):
        arr = np.asarray(arr)
        if arr.dtype == np.uint8 and pre is not None and np.dtype(dtype).kind == "f":
            # uint8 samples are images: always through the bundle's pre-processing (scale, mean/std,
            # colour, layout), even when they already have the input's shape.
            image = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
            arr = preprocess(image, pre, source=ColorOrder.BGR)
        if not _fits(arr, shape) and _fits(arr[None], shape):
            arr = arr[None]
        if not _fits(arr, shape):
            hint = ("uint8 images are pre-processed when you pass preprocessing=Preprocessing(...)"
                    if arr.dtype == np.uint8 and pre is None else "uint8 images are pre-processed for you")
            raise CalibrationError(
                f"{where}: sample shape {list(arr.shape)} does not fit model input {list(shape)} (-1 = any); "
                f"pass samples shaped like one model input ({hint})."
            )
        if arr.dtype.kind not in "uif":
            raise CalibrationError(f"{where}: sample dtype {arr.dtype} is not numeric.")
        out.append(arr.astype(dtype))
    return out


def _fits(arr: np.ndarray, shape: Sequence[int]) -> bool:
    return arr.ndim == len(shape) and arr.shape[0] == 1 and all(w in (-1, g) for w, g in zip(shape[1:], arr.shape[1:]))


def collect(
    source: Calibration,
    *,
    shapes: Sequence[tuple[int, ...]],
    dtypes: Sequence[str],
    preprocessing: Preprocessing | None,
    limit: int,
    progress: bool = True,
) -> list[list[np.ndarray]]:
    """Read up to ``limit`` samples as lists of batch-of-one arrays, with a progress bar."""
    if isinstance(source, np.ndarray):
        if source.ndim == 0 or len(source) == 0:
            raise CalibrationError("calibration array is empty; pass an array of samples (N, ...).")
        iterable: Iterable[Any] = (source[i] for i in range(len(source)))
        total: int | None = min(len(source), limit)
    elif isinstance(source, ImageFolder):
        files = source.files()
        iterable, total = source, min(len(files), limit)
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        iterable, total = source, None
    else:
        kind = type(source).__name__
        raise CalibrationError(f"calibration must be a numpy array, an ImageFolder or an iterable, not {kind}")
    samples: list[list[np.ndarray]] = []
    with _progress(progress, total) as advance:
        for i, item in enumerate(iterable):
            if i >= limit:
                break
            samples.append(_as_sample(item, shapes, dtypes, preprocessing, f"calibration sample {i}"))
            advance()
    if not samples:
        raise CalibrationError("calibration data yielded no samples; pass at least one.")
    return samples


class _progress:
    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled, self.total, self._bar = enabled, total, None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task("reading calibration data", total=self.total)
        return lambda: self._bar.advance(task)  # type: ignore[union-attr]

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def data_hash(samples: Sequence[Sequence[np.ndarray]]) -> str:
    """sha256 over the calibration tensors (recorded in the bundle's provenance)."""
    h = hashlib.sha256()
    for sample in samples:
        for arr in sample:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
