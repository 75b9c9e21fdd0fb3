"""Quiet by default: the real ``edgepack`` command in a subprocess prints no third-party lines (TensorFlow, absl,
LiteRT's XNNPACK banner, ONNX Runtime's quantizer) on stderr; ``-v`` shows them; a failing command shows them too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Lines only third-party libraries print (edgepack's own lines start with "error:" or name edgepack).
THIRD_PARTY = re.compile(r"^(INFO: |WARNING:root|W0000|I0000|E0000|WARNING: All log messages)|tensorflow|onnxruntime|"
                         r"absl|XNNPACK", re.MULTILINE)


def _edgepack(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    return subprocess.run([sys.executable, "-m", "edgepack.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Keras image classifier (fixed 32x32x3 input) and a folder of real photos."""
    import cv2
    import keras
    from skimage import data

    folder = tmp_path_factory.mktemp("quiet")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model.save(folder / "small.keras")
    (folder / "photos").mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(folder / "photos" / f"{name}.png"), np.ascontiguousarray(getattr(data, name)()[:, :, ::-1]))
    return folder


def test_convert_and_run_are_quiet_by_default_and_verbose_with_v(work: Path) -> None:
    done = _edgepack("convert", "small.keras", "--calibration", "photos", "-o", "small.epk", cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # nothing from TensorFlow, absl or LiteRT
    assert "wrote small.epk" in done.stdout
    done = _edgepack("run", "small.epk", "photos/coffee.png", cwd=work)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    loud = _edgepack("-v", "run", "small.epk", "photos/coffee.png", cwd=work)
    assert loud.returncode == 0 and THIRD_PARTY.search(loud.stderr), loud.stderr
    assert "Created TensorFlow Lite XNNPACK delegate" in loud.stderr
    assert loud.stdout == done.stdout  # -v changes stderr only


def test_onnx_quantize_and_run_are_quiet(work: Path) -> None:
    done = _edgepack("convert", "small.keras", "--calibration", "photos", "--recipe", "qdq-int8", "--format", "onnx",
                     "-o", "small_q.epk", cwd=work)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # ORT's quantizer warnings and tf2onnx logs are captured
    done = _edgepack("run", "small_q.epk", "photos/coffee.png", cwd=work)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "xnnpack" not in done.stdout and "load-failed" not in done.stdout  # absent by design, not a failure
    loud = _edgepack("-v", "convert", "small.keras", "--calibration", "photos", "--recipe", "qdq-int8", "--format",
                     "onnx", "-o", "small_q2.epk", cwd=work)
    assert loud.returncode == 0 and "onnxruntime" in loud.stderr, loud.stderr


def test_a_refused_model_is_one_line_and_verbose_shows_what_was_captured(work: Path) -> None:
    from edgepack.examples.documents import ExampleModelMissingError
    from edgepack.examples.mediapipe import mediapipe_model_path

    try:
        model = mediapipe_model_path("face_landmark_with_attention", ROOT / ".cache" / "models")
    except ExampleModelMissingError as exc:
        pytest.fail(f"face_landmark_with_attention.tflite unavailable ({exc}); run `make models` first.")
    done = _edgepack("convert", str(model), "-o", "face.epk", cwd=work)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr  # a user error: one line that says what to do
    assert lines[0].startswith("error: custom op(s) Landmarks2TransformMatrix")
    assert not (work / "face.epk").exists()
    loud = _edgepack("-v", "convert", str(model), "-o", "face.epk", cwd=work)
    assert loud.returncode == 2 and "Created TensorFlow Lite XNNPACK delegate" in loud.stderr, loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == lines[0]
