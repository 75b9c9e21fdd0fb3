"""Detection post-processing: anchors, SSD/YOLO decoding, NMS, mapping back to the frame, masks, the manifest's
new fields (JSON round trip, strictness, old bundles), the IoU tracker and the convert flag."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edgepack.cli.convert import postprocessing_from
from edgepack.runtimes.detection import (
    BLAZEFACE_SHORT,
    Detection,
    FitGeometry,
    decode_ssd,
    decode_yolo,
    detect,
    fit_geometry,
    nms,
    ssd_anchors,
)
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.manifest import (
    MaskDecoder,
    Postprocessing,
    PostprocessKind,
    ResizeMode,
    SsdAnchors,
    YoloDecoder,
)
from edgepack.runtimes.postprocess import segment
from edgepack.runtimes.preprocess import fit
from edgepack.runtimes.serde import from_json, to_json
from edgepack.runtimes.tracking import IouTracker

SSD = BLAZEFACE_SHORT.ssd
assert SSD is not None
IDENTITY = FitGeometry(1.0, 1.0, 0.0, 0.0)


def test_blazeface_anchor_generator_gives_896_anchors_on_two_grids() -> None:
    anchors = ssd_anchors(SSD.anchors)
    assert anchors.shape == (896, 4)
    assert np.allclose(anchors[:2, :2], [[0.5 / 16, 0.5 / 16]] * 2)  # 16x16 grid, 2 anchors a cell
    assert np.allclose(anchors[512, :2], [0.5 / 8, 0.5 / 8])  # then 8x8, 6 anchors a cell
    assert np.all(anchors[:, 2:] == 1.0)  # fixed anchor size
    free = ssd_anchors(replace(SSD.anchors, fixed_anchor_size=False))
    assert free.shape == (896, 4) and free[0, 2] == pytest.approx(0.1484375)


def test_ssd_decode_of_a_synthetic_known_box() -> None:
    anchors = ssd_anchors(SSD.anchors)
    raw = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -20.0, np.float32)
    k = 600  # an anchor of the 8x8 grid; a box 32x16 px centred 4 px right and 8 px below it
    raw[0, k, :4] = [4.0, 8.0, 32.0, 16.0]
    logits[0, k, 0] = 3.0
    corners, scores, keypoints = decode_ssd(raw, logits, SSD)
    cx, cy = anchors[k, 0] * 128 + 4, anchors[k, 1] * 128 + 8
    assert np.allclose(corners[k] * 128, [cx - 16, cy - 8, cx + 16, cy + 8], atol=1e-4)
    assert scores[k, 0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert keypoints.shape == (896, 6, 2)
    found = detect([raw, logits], BLAZEFACE_SHORT, ["face"], input_size=(128, 128), geometry=IDENTITY,
                   frame_hw=(128, 128))
    assert len(found) == 1 and found[0].label == "face"
    assert np.allclose(found[0].box, [cx - 16, cy - 8, cx + 16, cy + 8], atol=1e-3)
    with pytest.raises(ConfigError, match="anchors"):
        decode_ssd(raw[:, :100], logits[:, :100], SSD)


def test_nms_is_class_aware_and_capped() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, iou_threshold=0.5, max_detections=10).tolist() == [0, 2]
    assert nms(boxes, scores, np.array([0, 0, 0, 1]), iou_threshold=0.5, max_detections=10).tolist() == [0, 2, 3]
    assert nms(boxes, scores, iou_threshold=0.9, max_detections=2).tolist() == [0, 1]


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_boxes_map_back_through_fit(mode: ResizeMode) -> None:
    frame = np.zeros((300, 500), np.uint8)
    frame[100:180, 220:300] = 255  # a white square, found again in the fitted image
    fitted = fit(frame, 128, 160, mode)
    ys, xs = np.nonzero(fitted > 127)
    geom = fit_geometry(frame.shape, (128, 160), mode)
    corners = geom.to_frame(np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], np.float64))
    assert np.allclose(corners, [[220, 100], [300, 180]], atol=500 / 128 + 1)


def test_yolo_decode_v8_and_v5() -> None:
    out = np.zeros((1, 4 + 3, 50), np.float32)  # [1, 4 + classes, anchors]
    out[0, :4, 7] = [100, 60, 40, 20]
    out[0, 4 + 2, 7] = 0.9
    out[0, :4, 8] = [102, 61, 40, 20]  # a near-duplicate, suppressed
    out[0, 4 + 2, 8] = 0.8
    corners, scores = decode_yolo(out, YoloDecoder(), (320, 320))
    assert np.allclose(corners[7], [80, 50, 120, 70]) and scores.shape == (50, 3)
    spec = Postprocessing(kind=PostprocessKind.DETECTION, yolo=YoloDecoder(), nms_iou=0.5)
    found = detect([out], spec, ["a", "b", "c"], input_size=(320, 320), geometry=FitGeometry(0.5, 0.5, 0, 0),
                   frame_hw=(640, 640))
    assert [(d.label, d.class_id) for d in found] == [("c", 2)] and np.allclose(found[0].box, [160, 100, 240, 140])
    v5 = np.zeros((1, 50, 5 + 2), np.float32)
    v5[0, 3] = [0.5, 0.5, 0.25, 0.5, 0.8, 0.1, 0.9]
    corners, scores = decode_yolo(v5, YoloDecoder(layout="v5", normalized=True), (100, 200))
    assert np.allclose(corners[3], [75, 25, 125, 75]) and scores[3, 1] == pytest.approx(0.72)


def test_mask_comes_back_at_frame_size() -> None:
    logits = np.zeros((1, 2, 64, 64), np.float32)  # channels first, 2 classes
    logits[0, 1, :32] = 5.0  # top half of the model input is class 1
    geom = fit_geometry((100, 200), (64, 64), ResizeMode.STRETCH)
    mask = segment(logits, MaskDecoder(), input_size=(64, 64), geometry=geom, frame_hw=(100, 200))
    assert mask.shape == (100, 200) and mask[:50].min() == 1 and mask[50:].max() == 0
    prob = segment(np.full((1, 64, 64, 1), 3.0), MaskDecoder(mode="threshold", sigmoid=True), input_size=(64, 64),
                   geometry=geom, frame_hw=(100, 200))
    assert prob.dtype == np.uint8 and prob.min() == 1


def test_postprocessing_json_round_trip_strict_and_old() -> None:
    spec = replace(BLAZEFACE_SHORT, max_detections=7)
    raw = json.loads(json.dumps(to_json(spec)))
    assert from_json(Postprocessing, raw) == spec
    seg = Postprocessing(kind=PostprocessKind.SEGMENTATION, mask=MaskDecoder(mode="threshold"))
    assert from_json(Postprocessing, to_json(seg)) == seg
    raw["ssd"]["anchors"]["num_anchors"] = 896
    with pytest.raises(ConfigError, match="unknown key"):
        from_json(Postprocessing, raw)
    old = {"kind": "detection", "top_k": 5, "softmax": False, "score_threshold": 0.4, "nms_iou": 0.5}
    assert from_json(Postprocessing, old).ssd is None
    with pytest.raises(ConfigError):
        Postprocessing(kind=PostprocessKind.RAW, yolo=YoloDecoder())
    with pytest.raises(ConfigError):
        SsdAnchors(num_layers=2, strides=(8,), input_size=(128, 128))


def test_convert_postprocess_flag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert postprocessing_from("blazeface-short") == BLAZEFACE_SHORT
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(to_json(BLAZEFACE_SHORT)))
    assert postprocessing_from(str(path)) == BLAZEFACE_SHORT
    path.write_text(json.dumps({"kind": "detection", "anchors": "x"}))
    with pytest.raises(ConfigError, match="unknown key"):
        postprocessing_from(str(path))
    with pytest.raises(ConfigError, match="preset"):
        postprocessing_from("ssd-something")


def test_iou_tracker_keeps_ids() -> None:
    tracker = IouTracker(max_missed=1)
    face = lambda x: Detection(box=(x, 10.0, x + 40, 50.0), score=0.9, label="face", class_id=0)  # noqa: E731
    first = tracker.update([face(0), face(200)])
    ids = [d.track_id for d in first]
    assert len(set(ids)) == 2
    moved = tracker.update([face(205), face(4)])  # both moved a little, given in the other order
    assert [d.track_id for d in moved] == ids[::-1]
    tracker.update([])
    tracker.update([])  # missed twice > max_missed: the tracks end
    assert tracker.update([face(4)])[0].track_id not in ids
