"""``edgepack.convert`` and the CLI make ONNX bundles and mixed .tflite + .onnx bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import edgepack as ep
from edgepack.cli import main
from edgepack.examples.fashion import FASHION_PREPROCESSING
from edgepack.runtimes import load, read_bundle


def test_keras_to_qdq_onnx_bundle_runs_in_onnxruntime(fashion_model_path, calibration, fashion_test,
                                                       tmp_path: Path) -> None:
    bundle = ep.convert(fashion_model_path, calibration, recipe="qdq-int8", preprocessing=FASHION_PREPROCESSING,
                        labels=[str(i) for i in range(10)], progress=False)
    entry = bundle.manifest.models[0]
    assert entry.format == "onnx" and entry.requires["runtime"] == "onnxruntime" and entry.requires["opset"]
    session = load(bundle.save(tmp_path / "q.epk"))
    assert session.backend == "onnxruntime"
    x, y = fashion_test
    hits = sum(session.predict(img).top_k[0].index == label for img, label in zip(x[:200], y[:200]))
    assert hits / 200 > 0.75


def test_one_bundle_with_tflite_and_onnx_variants(fashion_model_path, calibration, tmp_path: Path) -> None:
    bundle = ep.convert(fashion_model_path, calibration, recipe=["full-int8", "qdq-int8"], target="rpi4",
                        preprocessing=FASHION_PREPROCESSING, progress=False)
    path = bundle.save(tmp_path / "both.epk")
    formats = [m.format for m in read_bundle(path).manifest.models]
    assert formats == ["tflite", "onnx"]
    assert [m.recipe.format for m in read_bundle(path).manifest.models] == ["tflite", "onnx"]
    tflite, onnx = load(path), load(path, backend="onnxruntime")  # rpi4 prefers litert
    assert tflite.backend == "litert" and onnx.backend == "onnxruntime"
    x = tflite.bundle.golden_inputs()[0]
    a, b = tflite.run(x)[0], onnx.run(x)[0]
    assert np.argmax(a) == np.argmax(b)


def test_cli_converts_onnx_file_by_suffix(fashion_model_path, calibration, tmp_path: Path, capsys) -> None:
    fp32 = ep.convert(fashion_model_path, recipe="onnx-fp32", progress=False)
    model = tmp_path / "fashion.onnx"
    model.write_bytes(fp32.files[fp32.manifest.models[0].file])
    np.save(tmp_path / "calib.npy", calibration[:60, :, :, None].astype(np.float32) / 255)
    out = tmp_path / "f.epk"
    assert main(["convert", str(model), "--recipe", "full-int8", "--calibration", str(tmp_path / "calib.npy"),
                 "-o", str(out)]) == 0
    assert read_bundle(out).manifest.models[0].format == "onnx"
    assert main(["inspect", str(out)]) == 0
    assert "opset" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0
