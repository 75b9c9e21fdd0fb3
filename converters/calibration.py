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

from edgepack.runtimes.errors import ImageReadError
from edgepack.runtimes.images import IMAGE_EXTENSIONS, list_images, read_image
from edgepack.runtimes.manifest import ColorOrder, Preprocessing
from edgepack.runtimes.preprocess import preprocess
from edgepack.runtimes.progress import ProgressBar
from edgepack.runtimes.tensors import shape_fits

from .errors import CalibrationError


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
        found = list_images(root, limit=self.limit, extensions=self.extensions)
        if not found:
            raise CalibrationError(
                f"calibration folder {root} holds no images ({', '.join(self.extensions)}); "
                "add 100-500 representative images."
            )
        return found

    def __iter__(self) -> Iterator[np.ndarray]:
        for f in self.files():
            try:
                image = read_image(f)
            except ImageReadError as exc:
                raise CalibrationError(str(exc)) from exc
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
    """A batch of one whose other dimensions fit ``shape`` (the model's batch size is not checked)."""
    return arr.ndim > 0 and arr.shape[0] == 1 and shape_fits(arr.shape[1:], shape[1:])


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
    with ProgressBar(total, "reading calibration data", enabled=progress) as bar:
        for i, item in enumerate(iterable):
            if i >= limit:
                break
            samples.append(_as_sample(item, shapes, dtypes, preprocessing, f"calibration sample {i}"))
            bar.advance()
    if not samples:
        raise CalibrationError("calibration data yielded no samples; pass at least one.")
    return samples


def data_hash(samples: Sequence[Sequence[np.ndarray]]) -> str:
    """sha256 over the calibration tensors (recorded in the bundle's provenance)."""
    h = hashlib.sha256()
    for sample in samples:
        for arr in sample:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
