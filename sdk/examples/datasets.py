"""Real data that ships offline: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edgepack.runtimes.errors import EdgepackError

FASHION_MNIST_DIR = Path(os.environ.get("EDGEPACK_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DatasetMissingError(EdgepackError):
    """A data set the command needs is not installed."""


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise DatasetMissingError(f"{path} is not an unsigned-byte IDX file.")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "train", *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` of the ``train`` (60k) or ``test`` (10k) split."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise EdgepackError(f"unknown split {split!r}; use 'train' or 'test'.")
    images = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    labels = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.is_file() or not labels.is_file():
        raise DatasetMissingError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; install it with "
            "`sudo apt-get install dataset-fashion-mnist` (or set EDGEPACK_FASHION_MNIST to its folder)."
        )
    x, y = _idx(images), _idx(labels)
    return (x[:limit], y[:limit]) if limit else (x, y)
