"""Calibration data: numpy arrays, an image folder (read with OpenCV), or any iterable.

Images are pre-processed exactly as the bundle's pre-processing spec says, by the runtime's own code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtimes.errors import ConfigError, ImageReadError
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


#: Calibration data: an array of samples (first axis = sample index) for a one-input model, a mapping of one such
#: array per input name, an :class:`ImageFolder`, or an iterable of samples (an array, or a list in input order).
Calibration = ImageFolder | np.ndarray | Mapping[str, np.ndarray] | Iterable[Any]


def _as_sample(item: Any, shapes: Sequence[tuple[int, ...]], dtypes: Sequence[str],
               pre: Preprocessing | None, where: str) -> list[np.ndarray]:
    """One calibration item → model-ready arrays (a batch dimension of 1 added to arrays one rank short)."""
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
        if arr.ndim == len(shape) - 1 and shape_fits((1, *arr.shape), shape):
            arr = arr[None]
        if not shape_fits(arr.shape, shape):
            hint = ("uint8 images are pre-processed with --input-size HxW, --color, --layout (API: "
                    "preprocessing=Preprocessing(...))"
                    if arr.dtype == np.uint8 and pre is None else "uint8 images are pre-processed for you")
            raise CalibrationError(
                f"{where}: sample shape {list(arr.shape)} does not fit model input {list(shape)} (-1 = any); "
                f"pass samples shaped like one model input ({hint})."
            )
        if arr.dtype.kind not in "uifb":
            raise CalibrationError(f"{where}: sample dtype {arr.dtype} is not numeric.")
        out.append(arr.astype(dtype))
    return out


def collect(
    source: Calibration,
    *,
    shapes: Sequence[tuple[int, ...]],
    dtypes: Sequence[str],
    preprocessing: Preprocessing | None,
    limit: int,
    progress: bool = True,
    names: Sequence[str] | None = None,
) -> list[list[np.ndarray]]:
    """Read up to ``limit`` samples as lists of model-ready arrays (input order), with a progress bar.

    A sample fits an input when its shape matches with ``-1`` as any size; one a rank short gets a batch
    dimension of 1. A mapping gives one array per input ``names`` entry, first axis = sample index.
    """
    if isinstance(source, Mapping):
        source = _by_name(source, names)
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


def resolve_shapes(names: Sequence[str], shapes: Sequence[Sequence[int]],
                   input_shapes: Mapping[str, Sequence[int]] | None) -> list[tuple[int, ...]]:
    """``shapes`` (``-1`` = dynamic) with the inputs ``input_shapes`` names fixed to the shapes it gives.

    Raises:
        ConfigError: a name the model has no input for, or a shape of another rank, with a dimension below 1, or
            contradicting one of the model's fixed dimensions.
    """
    if not input_shapes:
        return [tuple(s) for s in shapes]
    unknown = sorted(str(n) for n in input_shapes if n not in names)
    if unknown:
        raise ConfigError(f"input shape given for {unknown}, but the model has no such input; its inputs are "
                          f"{', '.join(names) or 'unknown'}.")
    out = []
    for name, shape in zip(names, shapes):
        if name not in input_shapes:
            out.append(tuple(shape))
            continue
        given = tuple(int(d) for d in input_shapes[name])
        fits = shape_fits(given, tuple(shape)) and all(d >= 1 for d in given)
        if not fits:
            raise ConfigError(f"input shape {list(given)} for {name!r} does not fit the model's {list(shape)} "
                              f"(-1 = any size); keep its fixed dimensions and give a size >= 1 for each -1 "
                              f"({name}={shape_template(shape)}).")
        out.append(given)
    return out


def shape_template(shape: Sequence[int]) -> str:
    """``[1, 3, -1, -1]`` → ``1x3xNxN``: how ``--input-shape`` writes it, ``N`` for each dynamic dimension."""
    return "x".join("N" if d == -1 else str(d) for d in shape)


def _by_name(arrays: Mapping[str, Any], names: Sequence[str] | None) -> Iterator[list[np.ndarray]]:
    """Samples (lists in ``names`` order) from one array per input name; refuse missing, extra or uneven arrays."""
    if names is None:
        raise CalibrationError("calibration by input name needs a model whose input names are known; pass a list "
                               "of arrays per sample instead.")
    missing = [n for n in names if n not in arrays]
    extra = sorted(str(k) for k in arrays if k not in names)
    if missing:
        raise CalibrationError(f"calibration data has no array for input(s) {missing}; give one array per model "
                               f"input ({', '.join(names)}), first axis = sample index.")
    if extra:
        raise CalibrationError(f"calibration data has array(s) {extra} but the model has no such input; its inputs "
                               f"are {', '.join(names)}.")
    columns = [np.asarray(arrays[n]) for n in names]
    counts = {n: (len(c) if c.ndim else 0) for n, c in zip(names, columns)}
    if len(set(counts.values())) != 1 or not next(iter(counts.values())):
        raise CalibrationError(f"calibration arrays must hold the same number of samples (first axis), at least "
                               f"one; got {counts}.")
    return ([c[i] for c in columns] for i in range(len(columns[0])))


def data_hash(samples: Sequence[Sequence[np.ndarray]]) -> str:
    """sha256 over the calibration tensors (recorded in the bundle's provenance)."""
    h = hashlib.sha256()
    for sample in samples:
        for arr in sample:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
