"""Existing ``.tflite`` files with custom ops (real MediaPipe models): packaged when a delegate implements them,
with that delegate recorded and enforced by the ladder; refused in one line when none does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgepack as ep
from edgepack.cli import main
from edgepack.converters.errors import ConversionError
from edgepack.runtimes import load
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.errors import DelegateRequiredError, NoUsableDelegateError
from edgepack.runtimes.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
OP = "Convolution2DTransposeBias"


def _model(name: str) -> Path:
    """A MediaPipe model fetched at install time by ``make models`` (never downloaded by a test)."""
    from edgepack.examples.documents import ExampleModelMissingError
    from edgepack.examples.mediapipe import mediapipe_model_path

    try:
        return mediapipe_model_path(name, ROOT / ".cache" / "models")
    except ExampleModelMissingError as exc:
        pytest.fail(f"{name}.tflite unavailable ({exc}); run `make models` first.")


@pytest.fixture(scope="module")
def selfie_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("custom") / "selfie.epk"
    ep.convert(_model("selfie_segmentation"), target="rpi4", progress=False).save(out)
    return out


def test_custom_op_model_is_packaged_with_its_required_delegate(selfie_bundle: Path) -> None:
    bundle = read_bundle(selfie_bundle)
    entry = bundle.manifest.model()
    assert OP in entry.requires["custom_ops"]
    assert entry.requires_delegates == ("xnnpack",)  # cpu kernels refuse the op; gpu/nnapi unproved here
    again = Manifest.from_bytes(bundle.manifest.to_bytes())
    assert again.model().requires_delegates == ("xnnpack",)
    probes = json.loads(bundle.read("report.json"))["models"][0]["custom_op_delegates"]  # what each delegate did
    assert probes["xnnpack"] == "prepared" and probes["cpu"].startswith("failed to prepare")


def test_ladder_offers_only_the_required_delegate_and_logs_why(selfie_bundle: Path) -> None:
    with load(selfie_bundle, delegates=("cpu", "xnnpack")) as session:
        assert session.delegate == "xnnpack" and session.delegated_partitions >= 1
        skipped = [a for a in session.fallback_log if a.delegate == "cpu"]
        assert skipped[0].outcome == "skipped" and OP in skipped[0].reason and "xnnpack" in skipped[0].reason
        assert "cpu: skipped" in session.explain()
        import cv2
        from skimage import data

        x = cv2.resize(data.astronaut(), (256, 256))[None].astype(np.float32) / 255.0  # RGB photo of a person
        (mask,) = session.run(x)
        assert mask.shape == (1, 256, 256, 1) and float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
        assert 0.1 < float(np.mean(mask > 0.5)) < 0.9  # the model really segments: part person, part background


def test_load_refuses_cleanly_without_the_required_delegate(selfie_bundle: Path) -> None:
    with pytest.raises(DelegateRequiredError) as err:
        load(selfie_bundle, delegates=("cpu",))
    text = str(err.value)
    assert OP in text and "xnnpack" in text and "\n" not in text
    assert isinstance(err.value, NoUsableDelegateError)  # callers that catch the ladder's error still do


def test_old_bundles_without_the_field_still_read(selfie_bundle: Path) -> None:
    raw = json.loads(read_bundle(selfie_bundle).manifest.to_bytes())
    for entry in raw["models"]:
        del entry["requires_delegates"]
    old = Manifest.from_bytes(json.dumps(raw).encode())
    assert old.model().requires_delegates == ()


def test_custom_op_no_delegate_implements_is_one_line() -> None:
    with pytest.raises(ConversionError) as err:
        ep.convert(_model("face_landmark_with_attention"), target="x86", progress=False)
    text = str(err.value)
    assert "Landmarks2TransformMatrix" in text and "no delegate" in text and "\n" not in text


def test_target_whose_ladder_lacks_the_delegate_is_refused() -> None:
    with pytest.raises(ConversionError, match=f"{OP}.*xnnpack.*jetson"):
        ep.convert(_model("selfie_segmentation"), target="jetson", progress=False)


def test_cli_packages_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "selfie.epk"
    assert main(["convert", str(_model("selfie_segmentation")), "-o", str(out)]) == 0
    assert out.is_file()
    assert main(["convert", str(_model("face_landmark_with_attention")), "-o", str(tmp_path / "f.epk")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: custom op(s) Landmarks2TransformMatrix")
    assert not (tmp_path / "f.epk").exists()
