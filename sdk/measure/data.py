"""Labeled data for :func:`edgepack.measure.evaluate`: image folders, ``.npz`` arrays, Fashion-MNIST, numpy arrays.

Every data set yields ``(sample, label)`` pairs. A sample is either an image (uint8, ``HxW`` or
``HxWxC``, in the data set's ``color`` order) that each model pre-processes with its own spec, or a
model-ready float tensor. ``label`` is a class index or None (unlabeled: agreement only).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edgepack.runtimes.errors import EdgepackError, ImageReadError
from edgepack.runtimes.images import IMAGE_EXTENSIONS, is_image_file, list_images, read_image
from edgepack.runtimes.manifest import ColorOrder

NPZ_KEYS = (("x", "y"), ("images", "labels"), ("x_test", "y_test"), ("data", "labels"), ("inputs", "targets"))


class EvalDataError(EdgepackError):
    """Evaluation data is missing, empty, unreadable, or does not fit the model."""


class LabelMismatchError(EvalDataError):
    """The data's labels do not match the model's classes (count or names)."""


@runtime_checkable
class LabeledData(Protocol):
    """What :func:`edgepack.measure.evaluate` reads."""

    name: str
    color: ColorOrder

    @property
    def classes(self) -> tuple[str, ...] | None:
        """Class names by label index, when known."""

    def __len__(self) -> int:
        """Number of samples."""

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        """``(sample, label)`` pairs."""


@dataclass(frozen=True)
class ArrayData:
    """Samples (and optional labels) already in memory."""

    x: np.ndarray
    y: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    color: ColorOrder = ColorOrder.RGB
    name: str = "arrays"

    def __post_init__(self) -> None:
        if self.x.ndim == 0 or len(self.x) == 0:
            raise EvalDataError(f"{self.name}: no samples; pass an array shaped (N, ...).")
        if self.y is not None:
            if len(self.y) != len(self.x):
                raise EvalDataError(f"{self.name}: {len(self.x)} samples but {len(self.y)} labels.")
            if self.y.dtype.kind not in "iu" or self.y.ndim != 1:
                raise EvalDataError(f"{self.name}: labels must be a 1-D integer array (class indices), "
                                    f"got {self.y.dtype} {list(self.y.shape)}.")

    @property
    def classes(self) -> tuple[str, ...] | None:
        """Class names by label index, when known."""
        return self.class_names

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        for i in range(len(self.x)):
            yield self.x[i], None if self.y is None else int(self.y[i])


@dataclass(frozen=True)
class ImageFolderData:
    """A folder with one sub-folder per class (``root/<class>/*.jpg``), read with OpenCV (BGR)."""

    path: str | Path
    limit: int | None = None
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    color: ColorOrder = ColorOrder.BGR

    @property
    def name(self) -> str:
        """Folder name."""
        return Path(self.path).name

    @property
    def classes(self) -> tuple[str, ...]:
        """Sub-folder names, sorted."""
        return tuple(c for c, _ in self._index()[0])

    def _index(self) -> tuple[list[tuple[str, int]], list[tuple[Path, int]]]:
        root = Path(self.path)
        if not root.is_dir():
            raise EvalDataError(f"data folder {root} does not exist or is not a directory.")
        subdirs = sorted(d for d in root.iterdir() if d.is_dir())
        files: list[tuple[Path, int]] = []
        for k, d in enumerate(subdirs):
            files += [(f, k) for f in list_images(d, extensions=self.extensions)]
        if not files:
            loose = [f for f in root.iterdir() if f.is_file() and is_image_file(f, extensions=self.extensions)]
            hint = (" — images must sit in one sub-folder per class (root/<class>/image.jpg)" if loose
                    else f"; add images ({', '.join(self.extensions)}) in one sub-folder per class")
            raise EvalDataError(f"data folder {root} holds no labeled images{hint}.")
        if self.limit:
            files = _spread(files, self.limit)
        return [(d.name, k) for k, d in enumerate(subdirs)], files

    def __len__(self) -> int:
        return len(self._index()[1])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        for f, label in self._index()[1]:
            try:
                image = read_image(f)
            except ImageReadError as exc:
                raise EvalDataError(str(exc)) from exc
            yield image, label


def _spread(files: list[tuple[Path, int]], limit: int) -> list[tuple[Path, int]]:
    """``limit`` files taken evenly across the sorted list, so every class stays represented."""
    if limit >= len(files):
        return files
    idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
    return [files[i] for i in idx]


def load_npz(path: str | Path, *, x_key: str | None = None, y_key: str | None = None,
             limit: int | None = None, color: ColorOrder = ColorOrder.RGB) -> ArrayData:
    """Read ``x``/``y`` arrays from an ``.npz`` (keys ``x``/``y``, ``images``/``labels``, ``x_test``/``y_test``...)."""
    p = Path(path)
    if not p.is_file():
        raise EvalDataError(f"data file {p} does not exist.")
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if x_key is None:
                pair = next(((a, b) for a, b in NPZ_KEYS if a in keys), None)
                if pair is None:
                    raise EvalDataError(f"{p} holds arrays {keys}; name the samples x (and labels y), or pass x_key=.")
                x_key, y_key = pair[0], y_key or (pair[1] if pair[1] in keys else None)
            if x_key not in keys or (y_key is not None and y_key not in keys):
                raise EvalDataError(f"{p} has no array {x_key!r}/{y_key!r}; it holds {keys}.")
            x = npz[x_key][:limit] if limit else npz[x_key]
            y = None if y_key is None else (npz[y_key][:limit] if limit else npz[y_key])
            names = tuple(str(n) for n in npz["classes"]) if "classes" in keys else None
    except (OSError, ValueError) as exc:
        raise EvalDataError(f"cannot read {p} as a .npz of plain arrays ({exc}).") from exc
    if y is not None:
        y = y.reshape(-1)
        if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
    return ArrayData(x=x, y=y, class_names=names, color=color, name=p.name)


def fashion_mnist(split: str = "test", *, limit: int | None = None) -> ArrayData:
    """Fashion-MNIST from the Debian package (grayscale 28x28 images with their labels)."""
    from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist

    x, y = load_fashion_mnist(split, limit=limit)
    return ArrayData(x=x, y=y, class_names=FASHION_LABELS, color=ColorOrder.GRAY, name=f"fashion-mnist:{split}")


DataSource = LabeledData | str | os.PathLike[str] | tuple[np.ndarray, np.ndarray] | np.ndarray


def open_data(data: DataSource, *, limit: int | None = None) -> LabeledData:
    """Turn what the user passed into a :class:`LabeledData`.

    Accepts a data set object, ``"fashion-mnist[:test|:train]"``, a folder (one sub-folder per class),
    an ``.npz`` file, an ``(x, y)`` tuple, or an unlabeled array ``x``.
    """
    if isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        if text.lower().startswith("fashion-mnist"):
            split = text.split(":", 1)[1] if ":" in text else "test"
            return fashion_mnist(split, limit=limit)
        p = Path(text)
        if p.is_dir():
            return ImageFolderData(p, limit=limit)
        if p.suffix.lower() == ".npz":
            return load_npz(p, limit=limit)
        if p.suffix.lower() == ".npy" and p.is_file():
            return ArrayData(x=_limit(np.load(p, allow_pickle=False), limit), name=p.name)
        raise EvalDataError(f"data {text!r} is not a folder, .npz/.npy file or 'fashion-mnist[:split]'"
                            + ("" if p.exists() else " (it does not exist)") + ".")
    if isinstance(data, tuple) and len(data) == 2:
        x, y = (np.asarray(a) for a in data)
        return ArrayData(x=_limit(x, limit), y=_limit(y, limit))
    if isinstance(data, np.ndarray):
        return ArrayData(x=_limit(data, limit))
    if isinstance(data, LabeledData):
        return data if not limit or len(data) <= limit else LimitedData(data, limit)
    raise EvalDataError(f"cannot evaluate on a {type(data).__name__}; pass a folder, .npz, (x, y) or a data set.")


@dataclass(frozen=True)
class LimitedData:
    """The first ``limit`` samples of another data set."""

    base: LabeledData
    limit: int

    @property
    def name(self) -> str:
        """Name of the underlying data set."""
        return self.base.name

    @property
    def color(self) -> ColorOrder:
        """Channel order of the underlying images."""
        return self.base.color

    @property
    def classes(self) -> tuple[str, ...] | None:
        """Class names of the underlying data set."""
        return self.base.classes

    def __len__(self) -> int:
        return min(self.limit, len(self.base))

    def __iter__(self) -> Iterator[tuple[np.ndarray, int | None]]:
        return itertools.islice(iter(self.base), self.limit)


def _limit(a: np.ndarray, limit: int | None) -> np.ndarray:
    return a[:limit] if limit else a


def is_image(sample: np.ndarray) -> bool:
    """True for uint8 ``HxW`` / ``HxWx{1,3,4}`` arrays (pre-processed per model)."""
    return sample.dtype == np.uint8 and (sample.ndim == 2 or (sample.ndim == 3 and sample.shape[2] in (1, 3, 4)))


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def class_map(data_classes: Sequence[str] | None, model_labels: Sequence[str], n_outputs: int,
              *, where: str) -> list[int] | None:
    """Map data label indices to model output indices, or None when they are the same.

    Names are matched ignoring case and punctuation (a folder ``T-shirt-top`` is the label ``T-shirt/top``);
    numeric names below the output count are indices; otherwise the data must have as many classes as the model
    has outputs (label ``k`` is output ``k``).

    Raises:
        LabelMismatchError: the data's classes cannot be matched with the model's outputs.
    """
    if model_labels and len(model_labels) != n_outputs:
        raise LabelMismatchError(f"{where}: the bundle has {len(model_labels)} labels but the model outputs "
                                 f"{n_outputs} scores; re-export it with a matching labels file.")
    if not data_classes:
        return None
    names = list(data_classes)
    index = {_norm(label): k for k, label in enumerate(model_labels)}
    if model_labels and all(_norm(n) in index for n in names):
        return [index[_norm(n)] for n in names]
    if all(n.isdigit() for n in names) and all(int(n) < n_outputs for n in names):
        return [int(n) for n in names]
    if model_labels:
        unknown = [n for n in names if _norm(n) not in index]
        raise LabelMismatchError(
            f"{where}: the data's classes {unknown[:6]} are not among the model's {n_outputs} labels "
            f"{list(model_labels)[:10]}; name the class folders after the labels (or by index 0..{n_outputs - 1})."
        )
    if len(names) != n_outputs:
        raise LabelMismatchError(f"{where}: the data has {len(names)} classes but the model outputs {n_outputs} "
                                 "scores; evaluate on data with the model's classes.")
    return None
