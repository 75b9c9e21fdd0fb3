"""The inference stage: ``session.predict`` timed per stage (pre, infer, post), one frame or a batch.

``Session.predict`` is run with ``self`` bound to a thin proxy whose ``preprocess`` and ``run`` are timed (or, for a
batch, replay what was already computed), so the pipeline uses exactly the session's own pre- and post-processing
(classification today, detection and masks as they are added) and still reports each stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputSpecError


class _Timed:
    """Delegates to the session; ``preprocess`` and ``run`` add their milliseconds to ``pre`` / ``infer``."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.pre = 0.0
        self.infer = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def preprocess(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self._session.preprocess(*args, **kwargs)
        self.pre += (time.perf_counter() - t0) * 1e3
        return out

    def run(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self._session.run(*args, **kwargs)
        self.infer += (time.perf_counter() - t0) * 1e3
        return out


class _Replay(_Timed):
    """Post-processing only: ``preprocess`` and ``run`` hand back one batch item already computed."""

    def __init__(self, session: Any, tensor: np.ndarray, outputs: list[np.ndarray]) -> None:
        super().__init__(session)
        self._tensor = tensor
        self._outputs = outputs

    def preprocess(self, *args: Any, **kwargs: Any) -> Any:
        return self._tensor

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self._outputs


def _unbound_predict(session: Any) -> Any:
    """``type(session).predict`` when the session splits into ``preprocess`` + ``run`` (an edgepack Session)."""
    fn = getattr(type(session), "predict", None)
    if callable(fn) and callable(getattr(session, "preprocess", None)) and callable(getattr(session, "run", None)):
        return fn
    return None


def predict_timed(session: Any, frame: np.ndarray) -> tuple[Any, dict[str, float]]:
    """``session.predict(frame)`` and its ``pre`` / ``infer`` / ``post`` milliseconds.

    A session without ``preprocess``/``run`` (any object with ``predict``) is timed as a whole, as ``infer``.
    """
    fn = _unbound_predict(session)
    t0 = time.perf_counter()
    if fn is None:
        prediction = session.predict(frame)
        return prediction, {"pre": 0.0, "infer": (time.perf_counter() - t0) * 1e3, "post": 0.0}
    proxy = _Timed(session)
    prediction = fn(proxy, frame)
    total = (time.perf_counter() - t0) * 1e3
    return prediction, {"pre": proxy.pre, "infer": proxy.infer, "post": max(0.0, total - proxy.pre - proxy.infer)}


def batch_capable(session: Any) -> str | None:
    """None when ``session`` can run a batch of frames in one call, else why not (one line)."""
    if _unbound_predict(session) is None:
        return "the session has no preprocess()/run() to batch"
    specs = getattr(session, "inputs", ())
    if len(specs) != 1:
        return f"the model has {len(specs)} inputs (batching handles one)"
    shape = tuple(specs[0].shape)
    if not shape or shape[0] != -1:
        return f"the model's input {specs[0].name!r} has a fixed batch of {shape[0] if shape else 'none'}"
    return None


def predict_batch(session: Any, frames: Sequence[np.ndarray]) -> tuple[list[Any], dict[str, float]]:
    """Pre-process each frame (any size), run them as ONE batch, post-process each item with ``predict``'s own code.

    Returns:
        the predictions in ``frames`` order and the batch's ``pre`` / ``infer`` / ``post`` milliseconds.

    Raises:
        InputSpecError: the model refused the batch (the caller falls back to one frame at a time).
    """
    fn = _unbound_predict(session)
    if fn is None:
        raise InputSpecError("this session cannot run a batch (no preprocess()/run()); run frames one at a time.")
    t0 = time.perf_counter()
    tensors = [session.preprocess(f) for f in frames]
    t1 = time.perf_counter()
    batch = np.concatenate(tensors, axis=0)
    outputs = session.run(batch)
    t2 = time.perf_counter()
    n = len(frames)
    for o in outputs:
        if o.shape[:1] != (n,):
            raise InputSpecError(f"the model returned an output of shape {list(o.shape)} for a batch of {n}; "
                                 "it does not batch along the first axis — run frames one at a time.")
    predictions = [fn(_Replay(session, t, [o[i : i + 1] for o in outputs]), f)
                   for i, (t, f) in enumerate(zip(tensors, frames))]
    t3 = time.perf_counter()
    return predictions, {"pre": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3}
