"""Post-processing of raw outputs into results (classification: top-k with labels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .manifest import Postprocessing, check_top_k


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
