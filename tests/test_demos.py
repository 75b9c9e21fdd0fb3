"""The camera demo runs headless on a real video file, through the runtime only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_camera_classify_headless_on_a_video(bundle_factory, fashion_test, tmp_path: Path) -> None:
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (112, 112))
    x, _ = fashion_test
    for img in x[:30]:
        writer.write(cv2.cvtColor(cv2.resize(img, (112, 112)), cv2.COLOR_GRAY2BGR))
    writer.release()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "camera_classify.py"), str(bundle_factory("full-int8")),
         "--source", str(video), "--headless"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "30 frames" in proc.stdout and "fps" in proc.stdout
    labels = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("frame")]
    assert labels and all("(" in label for label in labels)
    assert np.isfinite(float(labels[0].rsplit("(", 1)[1].rstrip(")")))
