"""Post-processing of raw outputs into results: classification (top-k with labels) and segmentation masks;
detection is in :mod:`.detection`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .detection import FitGeometry
from .errors import ConfigError
from .manifest import MaskDecoder, Postprocessing, check_top_k


@dataclass(frozen=True)
class Classification:
    """One ranked class."""

    index: int
    label: str
    score: float


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def classify(
    scores: np.ndarray, spec: Postprocessing, labels: Sequence[str], *, top_k: int | None = None
) -> list[Classification]:
    """Top-k classes of the first batch item, with labels and (optionally softmaxed) scores.

    Raises:
        ConfigError: ``top_k`` below 1.
    """
    row = np.asarray(scores, dtype=np.float32).reshape(scores.shape[0] if scores.ndim > 1 else 1, -1)[0]
    if spec.softmax:
        row = softmax(row)
    k = min(spec.top_k if top_k is None else check_top_k(top_k), row.size)
    order = np.argsort(-row, kind="stable")[:k]
    return [
        Classification(index=int(i), label=labels[i] if i < len(labels) else str(int(i)), score=float(row[i]))
        for i in order
        if spec.score_threshold is None or row[i] >= spec.score_threshold
    ]


def segment(output: np.ndarray, spec: MaskDecoder, *, input_size: tuple[int, int], geometry: FitGeometry,
            frame_hw: tuple[int, int]) -> np.ndarray:
    """A segmentation output [1, H, W, C] / [1, C, H, W] / [1, H, W] → a mask of the original frame's size
    (nearest neighbour through the pre-processing's placement): class ids (``argmax``, uint8 for < 256 classes,
    else int32) or 0/1 (``threshold``, uint8).

    Raises:
        ConfigError: an output that is not an image-shaped tensor.
    """
    out = np.asarray(output, np.float32)
    out = out[0] if out.ndim == 4 or (out.ndim == 3 and out.shape[0] == 1) else out
    if out.ndim == 2:
        out = out[:, :, None]
    if out.ndim != 3:
        raise ConfigError(f"segmentation output {list(np.shape(output))} is not [1, H, W, C] or [1, C, H, W].")
    if out.shape[0] < out.shape[2] and out.shape[0] <= 32:  # [C, H, W]: channels first
        out = np.transpose(out, (1, 2, 0))
    if spec.mode == "argmax":
        ids = np.argmax(out, axis=2)
        small = ids.astype(np.uint8 if out.shape[2] <= 256 else np.int32)
    else:
        prob = 1.0 / (1.0 + np.exp(-out[:, :, 0])) if spec.sigmoid else out[:, :, 0]
        small = (prob >= spec.threshold).astype(np.uint8)
    mh, mw = small.shape
    fh, fw = frame_hw
    xs = (np.arange(fw) + 0.5) * geometry.scale_x + geometry.left  # frame pixel centres in model-input pixels
    ys = (np.arange(fh) + 0.5) * geometry.scale_y + geometry.top
    cols = np.clip((xs * mw / input_size[1]).astype(np.int64), 0, mw - 1)
    rows = np.clip((ys * mh / input_size[0]).astype(np.int64), 0, mh - 1)
    return small[rows[:, None], cols[None, :]]
