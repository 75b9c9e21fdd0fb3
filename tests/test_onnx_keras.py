"""Keras / SavedModel sources through tf2onnx: the trained Fashion-MNIST CNN, quantized and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepack.converters.calibration import ImageFolder
from edgepack.converters.formats.onnx.pipeline import build_onnx, calibration_samples
from edgepack.converters.formats.onnx.source import OnnxSource, load_onnx_source
from edgepack.examples.datasets import load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn
from edgepack.runtimes.recipe import onnx_dynamic_int8, onnx_fp16, onnx_fp32, onnx_qdq_int8

MODEL = Path(".cache/fashion_cnn.keras")


@pytest.fixture(scope="module")
def source() -> Any:
    train_fashion_cnn(MODEL, epochs=2, limit=20000)
    src = load_onnx_source(MODEL)
    yield src
    src.close()


@pytest.fixture(scope="module")
def data(source: OnnxSource) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    train, _ = load_fashion_mnist("train", limit=200)
    test, _ = load_fashion_mnist("test", limit=301)
    calib = calibration_samples(source, train, preprocessing=FASHION_PREPROCESSING, limit=200)
    held = calibration_samples(source, test, preprocessing=FASHION_PREPROCESSING, limit=301)
    return calib, held


def test_keras_source_is_nhwc_and_exact(source: OnnxSource, data: Any) -> None:
    _, held = data
    assert source.kind == "keras" and source.inputs[0].shape == (-1, 28, 28, 1)
    assert source.provenance["exporter"] == "tf2onnx.convert.from_function"
    art = build_onnx(source, onnx_fp32(), calibration=[], held_back=held[1:60], golden_sample=held[0])
    assert art.validation is not None and art.validation.outputs[0].max_abs_error < 1e-4
    assert art.validation.outputs[0].top1_agreement == 1.0


@pytest.mark.parametrize("recipe", [onnx_fp16(), onnx_dynamic_int8(), onnx_qdq_int8(),
                                    onnx_qdq_int8(per_channel=False)], ids=lambda r: f"{r.name}-{r.per_channel}")
def test_quantized_cnn_agrees_with_keras(source: OnnxSource, data: Any, recipe: Any) -> None:
    calib, held = data
    art = build_onnx(source, recipe, calibration=calib, held_back=held[1:], golden_sample=held[0])
    agreement = art.validation.outputs[0]
    assert art.validation.samples == 301 and not art.validation.failures, art.validation.failures
    assert agreement.top1_agreement >= 0.98 and agreement.cosine >= 0.99
    assert art.report["bytes"] < art.report["fp32_bytes"]
    assert art.report["latency_ms_median"] > 0 and art.report["fp32_latency_ms_median"] > 0


def test_savedmodel_directory_and_image_folder(tmp_path: Path) -> None:
    import cv2
    import keras

    model = keras.models.load_model(MODEL, compile=False)
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    src = load_onnx_source(tmp_path / "sm")
    try:
        assert src.kind == "savedmodel"
        images, _ = load_fashion_mnist("test", limit=12)
        folder = tmp_path / "calib"
        folder.mkdir()
        for i, img in enumerate(images):
            cv2.imwrite(str(folder / f"{i:02d}.png"), img)
        samples = calibration_samples(src, ImageFolder(folder), preprocessing=FASHION_PREPROCESSING, limit=12)
        assert len(samples) == 12 and samples[0][0].shape == (1, 28, 28, 1)
        np.testing.assert_allclose(samples[3][0][0, :, :, 0], images[3] / 255.0, atol=1e-6)
        art = build_onnx(src, onnx_qdq_int8(), calibration=samples[:10], held_back=samples[11:],
                         golden_sample=samples[10])
        assert art.precision == "full_int8"
    finally:
        src.close()
