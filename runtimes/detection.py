"""Object detection in numpy: SSD anchors + box decoding, YOLO decoding, class-aware NMS, and the mapping of boxes
from the model's input back to the original frame (undoing ``preprocess.fit``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .manifest import Postprocessing, PostprocessKind, ResizeMode, SsdAnchors, SsdDecoder, YoloDecoder

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One detected object: ``box`` is (x0, y0, x1, y1) in original frame pixels; ``track_id`` is set by a
    tracker (:class:`~edgepack.runtimes.tracking.IouTracker`); ``keypoints`` are (x, y) frame pixels."""

    box: Box
    score: float
    label: str
    class_id: int
    track_id: int | None = None
    keypoints: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class FitGeometry:
    """How ``preprocess.fit`` placed a frame in the model input: ``model_px = frame_px * scale + offset``."""

    scale_x: float
    scale_y: float
    left: float
    top: float

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Model-input pixel coordinates [..., 2] (x, y) → original frame pixels."""
        return (xy - np.array([self.left, self.top])) / np.array([self.scale_x, self.scale_y])


def fit_geometry(frame_hw: tuple[int, int], size: tuple[int, int], mode: ResizeMode) -> FitGeometry:
    """The placement ``preprocess.fit`` uses for a frame of ``frame_hw`` fitted to ``size`` (h, w) by ``mode``."""
    h, w = frame_hw
    height, width = size
    if mode is ResizeMode.STRETCH:
        return FitGeometry(width / w, height / h, 0.0, 0.0)
    if mode is ResizeMode.CROP:
        s = max(height / h, width / w)
        sh, sw = max(height, round(h * s)), max(width, round(w * s))
        return FitGeometry(sw / w, sh / h, -float((sw - width) // 2), -float((sh - height) // 2))
    s = min(height / h, width / w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return FitGeometry(nw / w, nh / h, float((width - nw) // 2), float((height - nh) // 2))


def _layer_scale(spec: SsdAnchors, idx: int) -> float:
    if spec.num_layers == 1:
        return (spec.min_scale + spec.max_scale) / 2
    return spec.min_scale + (spec.max_scale - spec.min_scale) * idx / (spec.num_layers - 1)


@functools.lru_cache(maxsize=8)
def ssd_anchors(spec: SsdAnchors) -> np.ndarray:
    """Anchors [A, 4] as (x_centre, y_centre, w, h) in 0..1, in MediaPipe ``SsdAnchorsCalculator`` order."""
    out: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < spec.num_layers:
        sizes: list[tuple[float, float]] = []  # (w, h) of each anchor of a grid cell
        last = layer
        while last < spec.num_layers and spec.strides[last] == spec.strides[layer]:
            scale = _layer_scale(spec, last)
            if last == 0 and spec.reduce_boxes_in_lowest_layer:
                pairs = [(1.0, 0.1), (2.0, scale), (0.5, scale)]
            else:
                pairs = [(ar, scale) for ar in spec.aspect_ratios]
                if spec.interpolated_scale_aspect_ratio > 0:
                    nxt = 1.0 if last == spec.num_layers - 1 else _layer_scale(spec, last + 1)
                    pairs.append((spec.interpolated_scale_aspect_ratio, math.sqrt(scale * nxt)))
            sizes += [(s * math.sqrt(ar), s / math.sqrt(ar)) for ar, s in pairs]
            last += 1
        stride = spec.strides[layer]
        rows, cols = math.ceil(spec.input_size[0] / stride), math.ceil(spec.input_size[1] / stride)
        for y in range(rows):
            for x in range(cols):
                cx, cy = (x + spec.anchor_offset[0]) / cols, (y + spec.anchor_offset[1]) / rows
                out += [(cx, cy, 1.0, 1.0) if spec.fixed_anchor_size else (cx, cy, aw, ah) for aw, ah in sizes]
        layer = last
    anchors = np.asarray(out, dtype=np.float32)
    anchors.setflags(write=False)
    return anchors


def decode_ssd(boxes: np.ndarray, scores: np.ndarray, spec: SsdDecoder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw SSD outputs → (corner boxes [A, 4] as x0, y0, x1, y1 in 0..1 of the input, scores [A, C],
    keypoints [A, K, 2] in 0..1).

    Raises:
        ConfigError: the outputs do not fit the anchor spec (count, or fewer than 4 + 2 x keypoints values).
    """
    anchors = ssd_anchors(spec.anchors)
    raw = np.asarray(boxes, np.float32).reshape(-1, boxes.shape[-1])
    sc = np.asarray(scores, np.float32).reshape(-1, scores.shape[-1] if scores.ndim > 1 else 1)
    if raw.shape[0] != len(anchors) or sc.shape[0] != len(anchors) or raw.shape[1] < 4 + 2 * spec.num_keypoints:
        raise ConfigError(f"ssd outputs {list(boxes.shape)} / {list(scores.shape)} do not fit {len(anchors)} anchors "
                          f"with {spec.num_keypoints} keypoints; check the bundle's anchor spec and output indices.")
    xy = raw[:, [0, 1]] if spec.box_order == "xywh" else raw[:, [1, 0]]
    wh = raw[:, [2, 3]] if spec.box_order == "xywh" else raw[:, [3, 2]]
    pos_scale = np.array([spec.x_scale, spec.y_scale], np.float32)
    centre = xy / pos_scale * anchors[:, 2:] + anchors[:, :2]
    size = wh / np.array([spec.w_scale, spec.h_scale], np.float32) * anchors[:, 2:]
    corners = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    kp = raw[:, 4 : 4 + 2 * spec.num_keypoints].reshape(-1, spec.num_keypoints, 2)
    if spec.box_order == "yxhw":
        kp = kp[:, :, ::-1]
    keypoints = kp / pos_scale * anchors[:, None, 2:] + anchors[:, None, :2]
    if spec.sigmoid:
        clipped = np.clip(sc.astype(np.float64), -spec.score_clip, spec.score_clip)  # float64: exp(100) fits
        sc = (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)
    return corners, sc, keypoints


def decode_yolo(output: np.ndarray, spec: YoloDecoder, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO output → (corner boxes [A, 4] in input pixels, class scores [A, C]).

    Raises:
        ConfigError: an output that is not [1, D, A] / [1, A, D] with enough values per box.
    """
    out = np.asarray(output, np.float32)
    out = out.reshape(out.shape[-2:]) if out.ndim == 3 and out.shape[0] == 1 else out
    need = 5 if spec.layout == "v8" else 6
    if out.ndim != 2 or max(out.shape) < need:
        raise ConfigError(f"yolo output {list(np.shape(output))} is not [1, values, anchors] or [1, anchors, values].")
    if out.shape[0] < out.shape[1]:  # [values, anchors]: anchors outnumber values per box
        out = out.T
    if out.shape[1] < need:
        raise ConfigError(f"yolo {spec.layout} needs at least {need} values per box, got {out.shape[1]}.")
    cxcywh = out[:, :4] * (np.array([input_size[1], input_size[0]] * 2, np.float32) if spec.normalized else 1.0)
    scores = out[:, 4:] if spec.layout == "v8" else out[:, 4:5] * out[:, 5:]
    corners = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
    return corners, scores


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one corner box [4] with each of ``boxes`` [N, 4]."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray | None = None, *, iou_threshold: float,
        max_detections: int) -> np.ndarray:
    """Greedy non-maximum suppression, per class when ``class_ids`` is given: indices kept, best score first.

    A box is dropped when its IoU with a kept box of the same class is above ``iou_threshold``.
    """
    boxes = np.asarray(boxes, np.float64)
    if class_ids is not None and len(boxes):
        span = float(np.max(boxes) - np.min(boxes)) + 1.0  # shift each class apart: no IoU across classes
        boxes = boxes + (np.asarray(class_ids, np.float64) * span)[:, None]
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[iou(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def detect(outputs: Sequence[np.ndarray], spec: Postprocessing, labels: Sequence[str], *,
           input_size: tuple[int, int], geometry: FitGeometry, frame_hw: tuple[int, int]) -> list[Detection]:
    """Decode, threshold, NMS and map to the frame: the detections of the first batch item.

    Raises:
        ConfigError: outputs that do not fit the decoder, or an output index the model lacks.
    """
    if spec.kind is not PostprocessKind.DETECTION or (spec.ssd is None and spec.yolo is None):
        return []
    height, width = input_size
    keypoints = None
    if spec.ssd is not None:
        idx = (spec.ssd.boxes_output, spec.ssd.scores_output)
        if max(idx) >= len(outputs):
            raise ConfigError(f"ssd output indices {list(idx)} but the model has {len(outputs)} output(s).")
        corners, scores, keypoints = decode_ssd(outputs[idx[0]], outputs[idx[1]], spec.ssd)
        corners = corners * np.array([width, height, width, height], np.float32)
        keypoints = keypoints * np.array([width, height], np.float32)
    else:
        assert spec.yolo is not None  # narrowed above
        corners, scores = decode_yolo(outputs[0], spec.yolo, input_size)
    class_ids = np.argmax(scores, axis=1)
    best = scores[np.arange(len(scores)), class_ids]
    threshold = 0.5 if spec.score_threshold is None else spec.score_threshold
    sel = np.flatnonzero(best >= threshold)
    kept = sel[nms(corners[sel], best[sel], class_ids[sel], iou_threshold=spec.nms_iou,
                   max_detections=spec.max_detections)]
    fh, fw = frame_hw
    limit = np.array([fw, fh], np.float64)
    found = []
    for i in kept:
        xy = np.clip(geometry.to_frame(corners[i].reshape(2, 2).astype(np.float64)), 0, limit)
        kps = () if keypoints is None else tuple(
            (float(x), float(y)) for x, y in geometry.to_frame(keypoints[i].astype(np.float64)))
        cid = int(class_ids[i])
        found.append(Detection(box=(float(xy[0, 0]), float(xy[0, 1]), float(xy[1, 0]), float(xy[1, 1])),
                               score=float(best[i]), label=labels[cid] if cid < len(labels) else str(cid),
                               class_id=cid, keypoints=kps))
    return found


#: MediaPipe BlazeFace short range (``face_detection_short_range.tflite``): its graph's anchor, decoding and NMS
#: options (face_detection_short_range.pbtxt + face_detection.pbtxt; MediaPipe itself uses weighted NMS).
BLAZEFACE_SHORT = Postprocessing(
    kind=PostprocessKind.DETECTION, score_threshold=0.5, nms_iou=0.3, max_detections=100,
    ssd=SsdDecoder(anchors=SsdAnchors(num_layers=4, strides=(8, 16, 16, 16), input_size=(128, 128)),
                   x_scale=128.0, y_scale=128.0, w_scale=128.0, h_scale=128.0, box_order="xywh", sigmoid=True,
                   score_clip=100.0, num_keypoints=6))

#: Named post-processing specs (``edgepack convert --postprocess NAME``).
PRESETS: dict[str, Postprocessing] = {"blazeface-short": BLAZEFACE_SHORT}
