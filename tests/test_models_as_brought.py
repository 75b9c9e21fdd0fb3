"""Models as users bring them, through the CLI: old opsets with dynamic H/W, several mixed-dtype inputs with a
recurrent state and an int64 scalar, a fixed batch of 10 with initializers listed as inputs (IR 3), bool inputs,
samples by input name (.npz), and Keras applications whose ONNX export used to gain extra inputs.

Every bundle is loaded with ``edgepack.runtimes.load`` and compared with plain ONNX Runtime on the same inputs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgepack.cli import main
from edgepack.converters.errors import OnnxOpsetError
from edgepack.converters.formats.onnx.inspect import input_infos
from edgepack.converters.formats.onnx.prepare import upgrade_opset
from edgepack.runtimes import load

RNG = np.random.default_rng(0)


def _save(model: Any, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dynamic_hw_opset12(path: Path) -> Path:
    """Conv → Relu → GlobalAveragePool on ``images [1, 3, H, W]``, opset 12."""
    w = nh.from_array(RNG.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = nh.from_array(RNG.standard_normal(8).astype(np.float32), "b")
    nodes = [h.make_node("Conv", ["images", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             h.make_node("Relu", ["c"], ["r"], name="relu"),
             h.make_node("GlobalAveragePool", ["r"], ["out"], name="gap")]
    g = h.make_graph(nodes, "dyn_hw", [h.make_tensor_value_info("images", T.FLOAT, [1, 3, "H", "W"])],
                     [h.make_tensor_value_info("out", T.FLOAT, [1, 8, 1, 1])], [w, b])
    return _save(h.make_model(g, opset_imports=[h.make_opsetid("", 12)], ir_version=7), path)


def recurrent_state(path: Path) -> Path:
    """Like a VAD: ``x [batch, 128]`` float, ``state [2, batch, 128]`` float, ``sr`` int64 scalar; two outputs."""
    inits = [nh.from_array((RNG.standard_normal((128, 128)) * 0.1).astype(np.float32), "W"),
             nh.from_array(np.array(1 / 16000, np.float32), "k"), nh.from_array(np.array([0], np.int64), "ax")]
    nodes = [h.make_node("MatMul", ["x", "W"], ["hx"]), h.make_node("Add", ["state", "hx"], ["s"]),
             h.make_node("Tanh", ["s"], ["state_out"]),
             h.make_node("ReduceSum", ["state_out", "ax"], ["rs"], keepdims=0),
             h.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT), h.make_node("Mul", ["srf", "k"], ["scale"]),
             h.make_node("Mul", ["rs", "scale"], ["out"])]
    g = h.make_graph(nodes, "vad_like",
                     [h.make_tensor_value_info("x", T.FLOAT, ["batch", 128]),
                      h.make_tensor_value_info("state", T.FLOAT, [2, "batch", 128]),
                      h.make_tensor_value_info("sr", T.INT64, [])],
                     [h.make_tensor_value_info("out", T.FLOAT, ["batch", 128]),
                      h.make_tensor_value_info("state_out", T.FLOAT, [2, "batch", 128])], inits)
    return _save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), path)


def batch10_ir3(path: Path, *, first: str | None = None) -> Path:
    """Opset 9, IR 3, a fixed batch of 10, the Conv weights listed as graph inputs (as old exporters did)."""
    w = nh.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = nh.from_array(RNG.standard_normal(4).astype(np.float32), "b")
    nodes = [h.make_node("Conv", ["data", "w", "b"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("Flatten", ["r"], ["out"], axis=1)]
    if first:  # an op before the Conv (ImageScaler: ORT runs it, onnx.version_converter cannot upgrade it)
        nodes = [h.make_node(first, ["data"], ["scaled"], scale=0.5, bias=[0.0, 0.0, 0.0]), *nodes]
        nodes[1].input[0] = "scaled"
    g = h.make_graph(nodes, "batch10",
                     [h.make_tensor_value_info("data", T.FLOAT, [10, 3, 8, 8]),
                      h.make_tensor_value_info("w", T.FLOAT, [4, 3, 3, 3]),
                      h.make_tensor_value_info("b", T.FLOAT, [4])],
                     [h.make_tensor_value_info("out", T.FLOAT, [10, 256])], [w, b])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 9)], ir_version=3)
    if first:
        onnx.save(model, str(path))  # ImageScaler has no schema in onnx any more: the checker would refuse it
        return path
    return _save(model, path)


def bool_mask(path: Path) -> Path:
    """``Where(mask, x, 0)`` with a bool input."""
    zero = nh.from_array(np.array(0.0, np.float32), "zero")
    g = h.make_graph([h.make_node("Where", ["mask", "x", "zero"], ["y"])], "masked",
                     [h.make_tensor_value_info("x", T.FLOAT, ["n", 4]),
                      h.make_tensor_value_info("mask", T.BOOL, ["n", 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["n", 4])], [zero])
    return _save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8), path)


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    rc = main(["convert", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def manifest_and_report(bundle: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with zipfile.ZipFile(bundle) as z:
        return json.loads(z.read("manifest.json")), json.loads(z.read("report.json"))


def against_ort(bundle: Path, model: Path, feeds: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bundle output, plain ORT output of the original model) pairs on the same inputs."""
    session = load(bundle)
    got = session.run(feeds)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert len(got) == len(want)
    return list(zip(got, want))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64) + 1e-12))


def one_line_error(rc: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_opset12_dynamic_hw_qdq_upgrades_the_opset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = dynamic_hw_opset12(tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", images=RNG.random((16, 1, 3, 32, 32)).astype(np.float32))
    rc, _, err = cli(capsys, model, "--recipe", "qdq-int8", "--calibration", tmp_path / "cal.npz",
                     "-o", tmp_path / "q.epk")
    assert rc == 0, err
    manifest, report = manifest_and_report(tmp_path / "q.epk")
    requires = manifest["models"][0]["requires"]
    assert requires["opset"][""] == 13 and requires["source_opset"] == 12
    assert report["models"][0]["quantization"]["opset_upgrade"] == {"from": 12, "to": 13}
    x = RNG.random((1, 3, 40, 56)).astype(np.float32)  # another size than calibrated: the model stays dynamic
    for got, want in against_ort(tmp_path / "q.epk", model, {"images": x}):
        assert got.shape == want.shape and cosine(got, want) > 0.99


def test_dynamic_hw_fp32_needs_a_shape_or_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = dynamic_hw_opset12(tmp_path / "m.onnx")
    rc, _, err = cli(capsys, model, "-o", tmp_path / "none.epk")
    one_line_error(rc, err, "--input-shape images=1x3xNxN", "--calibration")
    assert not (tmp_path / "none.epk").exists()
    rc, _, err = cli(capsys, model, "--input-shape", "images=1x3x64x48", "-o", tmp_path / "f.epk")
    assert rc == 0, err
    manifest, report = manifest_and_report(tmp_path / "f.epk")
    assert manifest["models"][0]["requires"]["opset"][""] == 12  # fp32: packaged at its own opset
    assert report["input_shapes"] == {"images": [1, 3, 64, 48]}
    session = load(tmp_path / "f.epk")
    assert session.inputs[0].shape == (1, 3, -1, -1)
    x = RNG.random((1, 3, 64, 48)).astype(np.float32)
    for got, want in against_ort(tmp_path / "f.epk", model, {"images": x}):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(("shape", "needle"), [
    ("foo=1x3x8x8", "no such input"), ("images=2x3x8x8", "does not fit"), ("images=1x3x8", "does not fit"),
    ("images=1x3xAx8", "NAME=1x3x320x320")])
def test_bad_input_shape_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], shape: str,
                                     needle: str) -> None:
    model = dynamic_hw_opset12(tmp_path / "m.onnx")
    rc, _, err = cli(capsys, model, "--input-shape", shape, "-o", tmp_path / "x.epk")
    one_line_error(rc, err, needle)
    assert not (tmp_path / "x.epk").exists()


def _state_samples(n: int) -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((n, 1, 128)).astype(np.float32),
            "state": RNG.standard_normal((n, 2, 1, 128)).astype(np.float32), "sr": np.full(n, 16000, np.int64)}


def test_state_and_int64_scalar_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = recurrent_state(tmp_path / "vad.onnx")
    rc, _, err = cli(capsys, model, "-o", tmp_path / "none.epk")
    one_line_error(rc, err, "state=2xNx128", "--input-shape", "--calibration")
    rc, _, err = cli(capsys, model, "--input-shape", "state=2x1x128", "-o", tmp_path / "f.epk")
    assert rc == 0, err
    session = load(tmp_path / "f.epk")
    assert [(s.name, s.dtype) for s in session.inputs] == [("x", "float32"), ("state", "float32"), ("sr", "int64")]
    feeds = {k: np.asarray(v[0]) for k, v in _state_samples(1).items()}
    for got, want in against_ort(tmp_path / "f.epk", model, feeds):
        np.testing.assert_allclose(got, want, atol=1e-5)

    np.savez(tmp_path / "cal.npz", **_state_samples(24))
    rc, _, err = cli(capsys, model, "--recipe", "qdq-int8", "--calibration", tmp_path / "cal.npz",
                     "-o", tmp_path / "q.epk")
    assert rc == 0, err
    for got, want in against_ort(tmp_path / "q.epk", model, feeds):
        assert got.shape == want.shape and cosine(got, want) > 0.99


@pytest.mark.parametrize(("change", "needle"), [
    ("missing", "no array for input(s) ['sr']"), ("extra", "['extra'] but the model has no such input"),
    ("uneven", "same number of samples"), ("shape", "does not fit model input [2, -1, 128]")])
def test_bad_samples_npz_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str,
                                     needle: str) -> None:
    model = recurrent_state(tmp_path / "vad.onnx")
    samples = _state_samples(6)
    if change == "missing":
        del samples["sr"]
    elif change == "extra":
        samples["extra"] = samples["x"]
    elif change == "uneven":
        samples["x"] = samples["x"][:5]
    else:
        samples["state"] = np.swapaxes(samples["state"], 1, 2)  # [1, 2, 128]: batch-first, not the model's layout
    np.savez(tmp_path / "cal.npz", **samples)
    rc, _, err = cli(capsys, model, "--recipe", "qdq-int8", "--calibration", tmp_path / "cal.npz",
                     "-o", tmp_path / "q.epk")
    one_line_error(rc, err, needle)
    assert not (tmp_path / "q.epk").exists()


def test_fixed_batch_10_with_initializers_as_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = batch10_ir3(tmp_path / "b10.onnx")
    assert [i.name for i in input_infos(onnx.load(str(model)))] == ["data"]
    rc, _, err = cli(capsys, model, "-o", tmp_path / "f.epk")  # random golden data at the fixed batch of 10
    assert rc == 0, err
    session = load(tmp_path / "f.epk")
    assert [(s.name, s.shape) for s in session.inputs] == [("data", (10, 3, 8, 8))]
    x = RNG.random((10, 3, 8, 8)).astype(np.float32)
    for got, want in against_ort(tmp_path / "f.epk", model, {"data": x}):
        np.testing.assert_allclose(got, want, atol=1e-5)

    np.savez(tmp_path / "cal.npz", data=RNG.random((12, 10, 3, 8, 8)).astype(np.float32))
    rc, _, err = cli(capsys, model, "--recipe", "qdq-int8", "--calibration", tmp_path / "cal.npz",
                     "-o", tmp_path / "q.epk")
    assert rc == 0, err
    manifest, _ = manifest_and_report(tmp_path / "q.epk")
    assert manifest["models"][0]["requires"]["source_opset"] == 9
    assert [s["name"] for s in manifest["models"][0]["inputs"]] == ["data"]
    for got, want in against_ort(tmp_path / "q.epk", model, {"data": x}):
        assert cosine(got, want) > 0.99


def test_overridable_initializers_are_not_runtime_inputs(tmp_path: Path) -> None:
    model = onnx.load(str(batch10_ir3(tmp_path / "b10.onnx")))
    model.ir_version = 7  # IR >= 4: initializers listed as inputs are "overridable" in ORT
    path = _save(model, tmp_path / "ir7.onnx")
    from edgepack.runtimes.backends import get_backend

    engine = get_backend("onnxruntime").open(path.read_bytes(), delegate="cpu", num_threads=1)
    try:
        assert [s.name for s in engine.inputs] == ["data"]
    finally:
        engine.close()


def test_opset_upgrade_blocked_names_the_op(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = batch10_ir3(tmp_path / "old.onnx", first="ImageScaler")
    np.savez(tmp_path / "cal.npz", data=RNG.random((4, 10, 3, 8, 8)).astype(np.float32))
    rc, _, err = cli(capsys, model, "--recipe", "qdq-int8", "--calibration", tmp_path / "cal.npz",
                     "-o", tmp_path / "q.epk")
    one_line_error(rc, err, "op ImageScaler", "opset 13", "opset 9")
    rc, _, err = cli(capsys, model, "-o", tmp_path / "f.epk")  # fp32 needs no upgrade
    assert rc == 0, err
    with pytest.raises(OnnxOpsetError, match="ImageScaler"):
        upgrade_opset(onnx.load(str(model)), 13)


def test_bool_input_random_golden(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = bool_mask(tmp_path / "mask.onnx")
    rc, _, err = cli(capsys, model, "-o", tmp_path / "f.epk")
    assert rc == 0, err
    feeds = {"x": RNG.random((1, 4)).astype(np.float32), "mask": np.array([[True, False, True, False]])}
    for got, want in against_ort(tmp_path / "f.epk", model, feeds):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_keras_efficientnet_has_one_input_and_quantizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its Normalization mean/variance are captured constants: tf2onnx made them inputs [1,1,1,3]."""
    import keras

    keras.applications.EfficientNetB0(weights=None, input_shape=(96, 96, 3)).save(tmp_path / "eff.keras")
    x = RNG.random((12, 96, 96, 3)).astype(np.float32) * 255
    np.save(tmp_path / "cal.npy", x)
    rc, _, err = cli(capsys, tmp_path / "eff.keras", "--format", "onnx", "--recipe", "fp32", "--calibration",
                     tmp_path / "cal.npy", "-o", tmp_path / "eff.epk")
    assert rc == 0, err
    assert "Traceback" not in err
    session = load(tmp_path / "eff.epk")
    assert len(session.inputs) == 1 and session.inputs[0].shape[1:] == (96, 96, 3)
    manifest, report = manifest_and_report(tmp_path / "eff.epk")
    assert len(manifest["models"][0]["inputs"]) == 1
    assert report["models"][0]["validation"]["outputs"][0]["cosine"] > 0.9999


@pytest.mark.slow
def test_keras_mobilenetv3_conversion_logs_are_captured(tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """tf2onnx's transpose optimizer fails on it and logs a traceback; the conversion itself succeeds."""
    import keras

    from edgepack.converters.formats.onnx.source import load_onnx_source

    keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3)).save(tmp_path / "m.keras")
    capfd.readouterr()
    src = load_onnx_source(tmp_path / "m.keras")
    try:
        out = capfd.readouterr()
        assert "Traceback" not in out.err + out.out
        assert len(src.inputs) == 1 and src.inputs[0].shape == (-1, 96, 96, 3)
        x = RNG.random((1, 96, 96, 3)).astype(np.float32)
        got = ort.InferenceSession(src.model_bytes()).run(None, {src.inputs[0].name: x})[0]
        want = next(iter(src.predict([x]).values()))
        np.testing.assert_allclose(got, want, atol=1e-4)
    finally:
        src.close()

