"""demos/detect_faces.py end to end with the real MediaPipe face detector on a video made of real photos: boxes on
the known faces (scikit-image astronaut, opencv-doc messi5), none on photos without faces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from edgepack.converters.convert import convert
from edgepack.examples.face_detector import BLAZEFACE_PREPROCESSING, face_bundle
from edgepack.runtimes.detection import iou
from edgepack.runtimes.manifest import Postprocessing, PostprocessKind

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demos" / "detect_faces.py"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
SIZE = 512
#: Messi's face in messi5.jpg is about x 220-260, y 95-135; the frame is the crop [30:190, 150:310] x 3.2.
MESSI_CROP = (150, 30, 310, 190)


def _photos() -> list[tuple[str, np.ndarray, tuple[float, float, float, float] | None]]:
    """(name, 512x512 BGR frame, face box x0, y0, x1, y1 or None)."""
    rgb = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2BGR)  # noqa: E731
    sq = lambda im: cv2.resize(im, (SIZE, SIZE), interpolation=cv2.INTER_AREA)  # noqa: E731
    messi = cv2.imread(str(OPENCV_DATA / "messi5.jpg"))
    x0, y0, x1, y1 = MESSI_CROP
    k = SIZE / (x1 - x0)
    return [
        ("astronaut", rgb(skimage.data.astronaut()), (175.0, 75.0, 280.0, 180.0)),
        ("coffee", sq(rgb(skimage.data.coffee())), None),
        ("messi", cv2.resize(messi[y0:y1, x0:x1], (SIZE, SIZE)), ((220 - x0) * k, (95 - y0) * k, (260 - x0) * k,
                                                                  (135 - y0) * k)),
        ("rocket", sq(rgb(skimage.data.rocket())), None),
        ("basketball", sq(cv2.imread(str(OPENCV_DATA / "basketball1.png"))), None),
    ]


@pytest.fixture(scope="module")
def face_epk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return face_bundle(tmp_path_factory.mktemp("face") / "face.epk", cache=ROOT / ".cache" / "models")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True, timeout=300, env=env)


def test_detect_faces_headless_finds_the_faces_and_nothing_else(face_epk: Path, tmp_path: Path) -> None:
    photos = _photos()
    video = tmp_path / "photos.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (SIZE, SIZE))
    per_photo = 3
    for _, frame, _ in photos:
        for _ in range(per_photo):
            writer.write(frame)
    writer.release()
    out, results = tmp_path / "annotated.mp4", tmp_path / "results.jsonl"
    proc = _run("--bundle", str(face_epk), "--source", str(video), "--headless", "--out", str(out),
                "--json", str(results))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(f"frames {len(photos) * per_photo}, fps ")
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == len(photos) * per_photo and out.stat().st_size > 0
    track_ids = set()
    for record in lines:
        name, _, face = photos[record["frame_id"] // per_photo]
        dets = record["results"]["detections"]
        if face is None:
            assert dets == [], f"{name}: {dets}"
            continue
        assert dets, f"no face found on {name}"
        best = max(dets, key=lambda d: d["score"])
        overlap = iou(np.array(face), np.array([best["box"]], np.float64))[0]
        assert overlap > 0.4 and best["score"] > 0.5, f"{name}: {best} vs {face}"
        if name == "astronaut":
            track_ids.add(best["track_id"])
    assert len(track_ids) == 1  # the same face keeps its id across frames


def test_detect_faces_refuses_a_bundle_without_boxes(face_epk: Path, tmp_path: Path) -> None:
    from edgepack.examples.mediapipe import mediapipe_model_path

    model = mediapipe_model_path("face_detection_short_range", ROOT / ".cache" / "models")
    raw = tmp_path / "raw.epk"
    convert(model, preprocessing=BLAZEFACE_PREPROCESSING, postprocessing=Postprocessing(kind=PostprocessKind.RAW),
            progress=False).save(raw)
    proc = _run("--bundle", str(raw), "--source", str(OPENCV_DATA / "vtest.avi"), "--headless")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "detection bundle" in proc.stderr
    missing = _run("--bundle", str(face_epk), "--source", str(tmp_path / "nope.avi"), "--headless")
    assert missing.returncode == 2 and "nope.avi" in missing.stderr.strip().splitlines()[-1]


def test_a_batch_the_model_cannot_take_falls_back_to_sequential(face_epk: Path) -> None:
    """Several cameras on the face detector (its input has a fixed batch of 1): one frame at a time, and said so."""
    from edgepack.runtimes import load
    from edgepack.runtimes.pipeline import MultiStream

    video = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
    session = load(face_epk)
    ms = MultiStream(session, [video] * 3, max_batch=3, window_ms=3, batched=True)
    per: dict[int, list[int]] = {i: [] for i in range(3)}
    for result in ms.run(max_frames=8):
        per[result.stream].append(result.frame_id)
    assert ms.stats.mode.startswith("sequential (fallback:") and "batch" in ms.stats.mode, ms.stats.mode
    assert all(ids == list(range(8)) for ids in per.values())  # every stream, in order
