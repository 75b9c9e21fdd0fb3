"""The overlay stage: boxes, labels, scores, track ids, masks, top-k, FPS and latency drawn on a copy of the frame.

Reads the prediction by duck typing: ``prediction.detections`` (objects with ``.box`` = x0, y0, x1, y1 in frame
pixels, ``.score``, ``.label``, optional ``.track_id``), ``prediction.mask`` (HxW class ids or 0..1 scores at
the frame's size or any size) and ``prediction.top_k`` (objects with ``.label`` and ``.score``); any may be absent.
Drawn with OpenCV when it is installed; without it, boxes and masks only (numpy), no text.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

_HAS_CV2 = importlib.util.find_spec("cv2") is not None
_PALETTE = np.array([(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
                     (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
                     (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
                     (255, 56, 132), (133, 0, 82), (255, 56, 203), (200, 149, 255), (199, 55, 255)], dtype=np.uint8)


def color_for(key: object) -> tuple[int, int, int]:
    """A stable BGR colour for a label or track id."""
    idx = key if isinstance(key, int) else sum(str(key).encode())
    c = _PALETTE[int(idx) % len(_PALETTE)]
    return int(c[0]), int(c[1]), int(c[2])


def draw(frame: np.ndarray, prediction: Any, *, fps: float | None = None,
         latency_ms: float | None = None) -> np.ndarray:
    """An annotated copy of ``frame`` (BGR uint8)."""
    out = np.ascontiguousarray(frame).copy()
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    mask = getattr(prediction, "mask", None)
    if mask is not None:
        _draw_mask(out, np.asarray(mask))
    for det in getattr(prediction, "detections", None) or ():
        _draw_detection(out, det)
    lines = []
    for c in list(getattr(prediction, "top_k", None) or ())[:3]:
        lines.append(f"{getattr(c, 'label', '?')} {float(getattr(c, 'score', 0.0)):.2f}")
    stats = []
    if fps is not None:
        stats.append(f"{fps:.1f} fps")
    if latency_ms is not None:
        stats.append(f"{latency_ms:.1f} ms")
    if stats:
        lines.insert(0, "  ".join(stats))
    if lines and _HAS_CV2:
        _text_block(out, lines)
    return out


def _draw_detection(out: np.ndarray, det: Any) -> None:
    h, w = out.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in det.box)
    x0, x1 = int(np.clip(round(x0), 0, w - 1)), int(np.clip(round(x1), 0, w - 1))
    y0, y1 = int(np.clip(round(y0), 0, h - 1)), int(np.clip(round(y1), 0, h - 1))
    track = getattr(det, "track_id", None)
    label = getattr(det, "label", "")
    color = color_for(track if track is not None else label)
    text = f"{label} {float(getattr(det, 'score', 0.0)):.2f}" + (f" #{track}" if track is not None else "")
    if _HAS_CV2:
        import cv2

        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = max(th + base, y0)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw, ty), color, -1)
        cv2.putText(out, text, (x0, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        return
    edges = ((y0, y0 + 2, x0, x1), (y1 - 1, y1 + 1, x0, x1), (y0, y1, x0, x0 + 2), (y0, y1, x1 - 1, x1 + 1))
    for ya, yb, xa, xb in edges:
        out[max(ya, 0) : yb, max(xa, 0) : xb] = color


def _draw_mask(out: np.ndarray, mask: np.ndarray) -> None:
    """Blend a class-id mask (integers) or a score mask (floats, > 0.5 is foreground) at 40 %."""
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or mask.size == 0:
        return
    h, w = out.shape[:2]
    if mask.shape != (h, w):  # nearest-neighbour to the frame's size
        rows = np.minimum((np.arange(h) * mask.shape[0] / h).astype(int), mask.shape[0] - 1)
        cols = np.minimum((np.arange(w) * mask.shape[1] / w).astype(int), mask.shape[1] - 1)
        mask = mask[rows][:, cols]
    ids = (mask > 0.5).astype(np.int64) if mask.dtype.kind == "f" else mask.astype(np.int64)
    fg = ids > 0
    if not fg.any():
        return
    colors = _PALETTE[ids[fg] % len(_PALETTE)].astype(np.uint16)
    out[fg] = ((out[fg].astype(np.uint16) * 3 + colors * 2) // 5).astype(np.uint8)


def _text_block(out: np.ndarray, lines: list[str]) -> None:
    import cv2

    y = 4
    for line in lines:
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
        cv2.rectangle(out, (4, y), (8 + tw, y + th + base + 4), (0, 0, 0), -1)
        cv2.putText(out, line, (6, y + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        y += th + base + 6
