"""Keras / SavedModel / .tflite → TFLite bundles, converted by real TensorFlow and run in real LiteRT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgepack as ep
from edgepack.converters import CalibrationError, ConversionError, SourceModelError, ToleranceError
from edgepack.converters.validate import Thresholds
from edgepack.examples.fashion import FASHION_PREPROCESSING
from edgepack.runtimes import load, read_bundle

RECIPES = ["fp32", "fp16", "dynamic-int8", "full-int8", "int16x8"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_precision_converts_validates_and_runs(bundle_factory, fashion_test, recipe: str) -> None:
    path = bundle_factory(recipe)
    bundle = read_bundle(path)
    entry = bundle.manifest.models[0]
    assert entry.precision == recipe.replace("-", "_")
    report = json.loads(bundle.read("report.json"))["models"][0]
    agreement = report["validation"]["outputs"][0]
    assert agreement["cosine"] > 0.98 and agreement["top1_agreement"] >= 0.9
    assert entry.requires["ops"]["CONV_2D"] >= 1  # op versions recorded for the runtime check
    session = load(path, delegates=("xnnpack", "cpu"))
    x, y = fashion_test
    logits = np.concatenate([session.run(session.preprocess(img))[0] for img in x[:300]])
    assert np.mean(np.argmax(logits, 1) == y[:300]) > 0.75  # a trained model, not noise


def test_quantized_models_are_smaller(bundle_factory) -> None:
    size = {r: read_bundle(bundle_factory(r)).manifest.models[0].bytes for r in RECIPES}
    assert size["fp16"] < 0.55 * size["fp32"]
    for r in ("dynamic-int8", "full-int8", "int16x8"):
        assert size[r] < 0.3 * size["fp32"], (r, size)


@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_full_int8_with_integer_io_takes_float_input(fashion_model_path, calibration, io_dtype: str) -> None:
    from edgepack.runtimes.recipe import IODType

    recipe = ep.recipes.full_int8(io_dtype=IODType(io_dtype), samples=100)
    bundle = ep.convert(fashion_model_path, calibration, recipe=recipe, preprocessing=FASHION_PREPROCESSING,
                        progress=False)
    entry = bundle.manifest.models[0]
    assert entry.inputs[0].dtype == io_dtype and entry.inputs[0].quantization is not None
    session = load(bundle_from(bundle))
    x = calibration[:1, :, :, None].astype(np.float32) / 255
    out_float = session.run(x)[0]  # quantized for us
    raw = session.run(x, dequantize_outputs=False)[0]
    assert raw.dtype == np.dtype(io_dtype) and out_float.dtype == np.float32
    q = entry.inputs[0].quantization
    info = np.iinfo(io_dtype)
    as_int = np.clip(np.rint(x / q.scale) + q.zero_point, info.min, info.max).astype(io_dtype)
    np.testing.assert_array_equal(session.run(as_int, dequantize_outputs=False)[0], raw)


def bundle_from(converted, tmp=None) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "b.epk"
    return converted.save(path)


def test_savedmodel_directory_source(fashion_model_path, calibration, tmp_path: Path) -> None:
    import keras

    model = keras.models.load_model(fashion_model_path, compile=False)
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    with pytest.raises(CalibrationError, match=r"--input-size HxW.*API: preprocessing=Preprocessing"):
        ep.convert(tmp_path / "sm", calibration, recipe="full-int8", progress=False)
    bundle = ep.convert(tmp_path / "sm", calibration, recipe="full-int8", preprocessing=FASHION_PREPROCESSING,
                        progress=False)
    assert bundle.manifest.source.format == "savedmodel"
    assert bundle.report["models"][0]["validation"]["outputs"][0]["top1_agreement"] >= 0.9


def test_in_memory_keras_model_and_h5_file(fashion_model_path, tmp_path: Path) -> None:
    import keras

    model = keras.models.load_model(fashion_model_path, compile=False)
    mem = ep.convert(model, recipe="fp16", progress=False)
    assert mem.manifest.source.format == "keras" and mem.manifest.models[0].precision == "fp16"
    model.save(tmp_path / "legacy.h5")  # HDF5 (Keras 2 style) file
    h5 = ep.convert(tmp_path / "legacy.h5", recipe="fp32", progress=False)
    assert h5.manifest.source.file == "legacy.h5"


def test_existing_tflite_is_packaged_as_is(bundle_factory, tmp_path: Path) -> None:
    original = read_bundle(bundle_factory("full-int8"))
    data = original.read(original.manifest.models[0].file)
    (tmp_path / "third_party.tflite").write_bytes(data)
    bundle = ep.convert(tmp_path / "third_party.tflite", progress=False)
    entry = bundle.manifest.models[0]
    assert entry.precision == "full_int8"  # read from its tensors
    assert bundle.files[entry.file] == data  # not re-converted
    session = load(bundle.save(tmp_path / "tp.epk"))
    assert session.run(session.bundle.golden_inputs())[0].shape == (1, 10)


def test_image_folder_calibration_with_real_images(fashion_model_path, fashion_train, tmp_path: Path) -> None:
    import cv2

    x, _ = fashion_train
    for i in range(40):
        cv2.imwrite(str(tmp_path / f"img_{i:03d}.png"), cv2.cvtColor(x[i], cv2.COLOR_GRAY2BGR))
    bundle = ep.convert(fashion_model_path, ep.ImageFolder(tmp_path, limit=30), recipe="full-int8",
                        preprocessing=FASHION_PREPROCESSING, progress=False)
    assert bundle.manifest.provenance["calibration_samples"] == 27  # 30 read, 3 held back to validate
    assert bundle.report["models"][0]["validation"]["samples"] == 30  # held back + calibration samples
    assert bundle.report["models"][0]["validation"]["outputs"][0]["cosine"] > 0.98


# --- bad input -----------------------------------------------------------------------------------------


def test_missing_and_unsupported_model_files(tmp_path: Path) -> None:
    with pytest.raises(SourceModelError, match="does not exist"):
        ep.convert(tmp_path / "nope.keras")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(SourceModelError, match="unsupported model file"):
        ep.convert(tmp_path / "model.pt")
    (tmp_path / "fake.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(SourceModelError, match="TFL3"):
        ep.convert(tmp_path / "fake.tflite")
    with pytest.raises(SourceModelError, match="cannot convert a dict"):
        ep.convert({"a": 1})


def test_savedmodel_without_serving_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "nosig"))
    with pytest.raises(SourceModelError, match="no 'serving_default' signature"):
        ep.convert(tmp_path / "nosig")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(SourceModelError, match="not a SavedModel"):
        ep.convert(tmp_path / "plain_dir")


def test_legacy_h5_that_cannot_load_says_why(fashion_model_path, tmp_path: Path) -> None:
    import h5py
    import keras

    model = keras.models.load_model(fashion_model_path, compile=False)
    model.save_weights(tmp_path / "weights.weights.h5")
    (tmp_path / "weights.weights.h5").rename(tmp_path / "weights_only.h5")
    with pytest.raises(SourceModelError, match="weights only"):
        ep.convert(tmp_path / "weights_only.h5")
    # A Keras 2 file with a custom layer class that is not importable here.
    model.save(tmp_path / "custom.h5")
    with h5py.File(tmp_path / "custom.h5", "r+") as fh:
        config = fh.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else config
        fh.attrs["model_config"] = config.replace('"Dense"', '"MyCustomDense"', 1)
    with pytest.raises(SourceModelError, match="legacy Keras 2.*custom layers"):
        ep.convert(tmp_path / "custom.h5")


def test_calibration_errors(fashion_model_path, calibration, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="holds no images"):
        ep.convert(fashion_model_path, ep.ImageFolder(empty), recipe="full-int8")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(CalibrationError, match="cannot read image .*a.jpg"):
        ep.convert(fashion_model_path, ep.ImageFolder(broken), recipe="full-int8",
                   preprocessing=FASHION_PREPROCESSING, progress=False)
    with pytest.raises(CalibrationError, match="does not fit model input"):
        ep.convert(fashion_model_path, np.zeros((10, 32, 32, 3), np.float32), recipe="full-int8", progress=False)
    with pytest.raises(CalibrationError, match="empty"):
        ep.convert(fashion_model_path, np.zeros((0, 28, 28, 1), np.float32), recipe="full-int8")
    with pytest.raises(ConversionError, match="needs calibration data"):
        ep.convert(fashion_model_path, recipe="full-int8")


def test_missed_tolerance_raises_and_writes_nothing(fashion_model_path, calibration, tmp_path: Path) -> None:
    strict = Thresholds(min_cosine=0.999999, min_top1_agreement=1.0)
    with pytest.raises(ToleranceError, match="cosine"):
        ep.convert(fashion_model_path, calibration, recipe="full-int8", thresholds=strict,
                   preprocessing=FASHION_PREPROCESSING, progress=False)
    with pytest.raises(ToleranceError, match="over the limit"):
        ep.convert(fashion_model_path, recipe="fp32", max_size="100KB", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_target_and_recipe_list_alternatives(fashion_model_path) -> None:
    from edgepack.runtimes.errors import ConfigError

    with pytest.raises(ConfigError, match="known targets: rpi4, rpi5"):
        ep.convert(fashion_model_path, target="toaster")
    with pytest.raises(ConfigError, match="known recipes: fp32"):
        ep.convert(fashion_model_path, recipe="int3")


def test_uint8_images_of_input_shape_are_still_preprocessed(fashion_model_path, calibration) -> None:
    """A uint8 image already shaped like the input must be scaled by the spec, not fed as 0-255 floats."""
    from edgepack.converters.calibration import collect

    images = calibration[:4, :, :, None]  # (4, 28, 28, 1) uint8: exactly the model's input shape
    samples = collect(images, shapes=[(-1, 28, 28, 1)], dtypes=["float32"], preprocessing=FASHION_PREPROCESSING,
                      limit=4, progress=False)
    assert samples[0][0].shape == (1, 28, 28, 1) and samples[0][0].max() <= 1.0
    np.testing.assert_allclose(samples[0][0][0, :, :, 0], calibration[0] / 255, atol=1e-6)
