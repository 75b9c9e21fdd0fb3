"""ONNX sources and quantization recipes on real ONNX Runtime: shapes, layouts, recipes, bad input."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.errors import (
    CalibrationError,
    ConversionError,
    OnnxModelError,
    OnnxOperatorError,
    OnnxOpsetError,
    SourceModelError,
)
from edgepack.converters.formats.onnx.inspect import summarize
from edgepack.converters.formats.onnx.pipeline import build_onnx, calibration_samples
from edgepack.converters.formats.onnx.source import load_onnx_source
from edgepack.converters.package import assemble
from edgepack.runtimes import load
from edgepack.runtimes.errors import ConfigError, UnsupportedOperatorError, UnsupportedOpsetError
from edgepack.runtimes.manifest import Postprocessing
from edgepack.runtimes.recipe import (
    CalibrationMethod,
    IODType,
    OnnxOptions,
    Recipe,
    full_int8,
    get_recipe,
    onnx_dynamic_int8,
    onnx_fp16,
    onnx_fp32,
    onnx_qdq_int8,
    onnx_qdq_int16x8,
)
from edgepack.runtimes.target import get_target

RNG = np.random.default_rng(0)


def two_head_model() -> onnx.ModelProto:
    """Two inputs (NCHW image with dynamic batch/height/width, a feature vector), two outputs, unnamed nodes."""
    r = np.random.default_rng(3)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((r.normal(size=shape) * 0.5).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["image", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["cr"]), helper.make_node("GlobalAveragePool", ["cr"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["meta", "mw", "mb"], ["m"]),
             helper.make_node("Add", ["f", "m"], ["s"]), helper.make_node("Relu", ["s"], ["sr"]),
             helper.make_node("Gemm", ["sr", "ow", "ob"], ["logits"]),
             helper.make_node("Sigmoid", ["sr"], ["features"])]
    graph = helper.make_graph(
        nodes, "two_head",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("meta", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 6])],
        [init("cw", 6, 3, 3, 3), init("cb", 6), init("mw", 5, 6), init("mb", 6), init("ow", 6, 4), init("ob", 4)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def one_node(op: str, *, domain: str = "", opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports, ir_version=10)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("src") / "two_head.onnx"
    onnx.save(two_head_model(), str(path))
    src = load_onnx_source(path)
    yield src
    src.close()


@pytest.fixture(scope="module")
def samples(source) -> list[list[np.ndarray]]:  # type: ignore[no-untyped-def]
    items = [(RNG.random((3, 16, 16), dtype=np.float32), RNG.random(5, dtype=np.float32)) for _ in range(48)]
    return calibration_samples(source, items, preprocessing=None, limit=48)


def build(source, samples, recipe: Recipe):  # type: ignore[no-untyped-def]
    return build_onnx(source, recipe, calibration=samples[:40], held_back=samples[41:], golden_sample=samples[40])


def test_source_reads_inputs_outputs_and_dynamic_dims(source) -> None:  # type: ignore[no-untyped-def]
    assert source.kind == "onnx" and source.file_name == "two_head.onnx"
    assert [(i.name, i.shape) for i in source.inputs] == [("image", (-1, 3, -1, -1)), ("meta", (-1, 5))]
    assert source.output_names == ["logits", "features"]
    out = source.predict([np.zeros((2, 3, 9, 11), np.float32), np.zeros((2, 5), np.float32)])
    assert out["logits"].shape == (2, 4) and out["features"].shape == (2, 6)


@pytest.mark.parametrize("recipe", [
    onnx_fp32(), onnx_fp16(), onnx_fp16(keep_io_float32=False), onnx_dynamic_int8(),
    onnx_qdq_int8(), onnx_qdq_int8(per_channel=False), onnx_qdq_int8(activation=IODType.INT8),
    onnx_qdq_int8(method=CalibrationMethod.ENTROPY), onnx_qdq_int8(method=CalibrationMethod.PERCENTILE),
    onnx_qdq_int16x8(),
], ids=lambda r: f"{r.name}-{r.precision.value}-{r.io_dtype.value}-{r.per_channel}-{r.options.activation_dtype.value}-"
                 f"{r.options.calibration_method.value}")
def test_recipes_build_validate_and_run(source, samples, recipe: Recipe, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    art = build(source, samples, recipe)
    assert art.validation is not None and art.validation.samples == 8
    assert not art.validation.failures, art.validation.failures
    report = art.report
    for key in ("bytes", "latency_ms_median", "fp32_latency_ms_median", "validation", "quantization", "opset"):
        assert key in report
    assert {"cosine", "max_abs_error", "top1_agreement"} <= set(report["validation"]["outputs"][0])
    summary = summarize(onnx.load_from_string(art.data))
    assert art.precision == summary.precision == recipe.precision.value
    assert art.requires["runtime"] == "onnxruntime" and art.requires["opset"] == summary.opset
    assert "" in art.requires["opset"]
    bundle = assemble(name="two_head", source=source, target=get_target("x86"), recipe=recipe, artifacts=[art],
                      preprocessing=None, postprocessing=Postprocessing(), labels=None, provenance={},
                      report={"models": [art.report]}).save(tmp_path / "b.epk")
    session = load(bundle, delegates=("cpu",))
    assert session.model.requires["opset"] == summary.opset
    for h, w in ((16, 16), (12, 20)):  # dynamic spatial dims survive every recipe
        x = [RNG.random((1, 3, h, w), dtype=np.float32), RNG.random((1, 5), dtype=np.float32)]
        logits, features = session.run(x)
        ref = source.predict(x)
        np.testing.assert_allclose(logits, ref["logits"], atol=0.15 * max(1.0, np.abs(ref["logits"]).max()))
        assert features.shape == (1, 6)
    want_io = "float16" if recipe.io_dtype is IODType.FLOAT16 else "float32"
    assert [s.dtype for s in session.inputs] == [want_io, want_io]


def test_recipe_details_reach_the_model(source, samples) -> None:  # type: ignore[no-untyped-def]
    def scales(art) -> list[int]:  # type: ignore[no-untyped-def]
        model = onnx.load_from_string(art.data)
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [inits[n.input[1]].size for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[1] in inits and n.input[0] in inits]

    assert max(scales(build(source, samples, onnx_qdq_int8(per_channel=True)))) > 1
    assert max(scales(build(source, samples, onnx_qdq_int8(per_channel=False)))) == 1
    u8 = build(source, samples, onnx_qdq_int8(activation=IODType.UINT8))
    assert u8.report["quantization"]["activations"] == "uint8"
    excluded = build(source, samples, onnx_qdq_int8(exclude=("Conv_0",)))
    model = onnx.load_from_string(excluded.data)
    conv = next(n for n in model.graph.node if n.name == "Conv_0")
    assert conv.input[1] in {i.name for i in model.graph.initializer}  # float weights: not quantized
    assert excluded.report["quantization"]["excluded"] == ["Conv_0"]
    with pytest.raises(ConfigError, match="Conv_0"):
        build(source, samples, onnx_qdq_int8(exclude=("conv_zero",)))


def test_recipes_as_data() -> None:
    for name in ("qdq-int8", "qdq_int8", "onnx-fp16", "onnx-dynamic-int8", "qdq-int16x8"):
        recipe = get_recipe(name)
        assert recipe.format == "onnx" and Recipe.from_json(recipe.to_json()) == recipe
    assert get_recipe("full-int8", format="onnx") == onnx_qdq_int8()
    assert get_recipe("fp16", format="onnx").format == "onnx"
    with pytest.raises(ConfigError):
        get_recipe("qdq-int8", format="tflite")
    with pytest.raises(ConfigError):
        Recipe.from_json({**onnx_qdq_int8().to_json(), "reduce_rang": True})
    with pytest.raises(ConfigError, match="uint8"):
        full_int8().__class__(onnx=OnnxOptions(activation_dtype=IODType.UINT8))  # TFLite recipes keep int8 activations
    with pytest.raises(ConfigError, match="float32"):
        onnx_qdq_int8().__class__(precision=full_int8().precision, format=onnx_fp32().format, io_dtype=IODType.INT8)


def test_external_data(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(two_head_model(), str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    src = load_onnx_source(path)
    inline = tmp_path / "inline.onnx"
    onnx.save(two_head_model(), str(inline))
    assert src.model_bytes() and len(src.model_bytes()) > inline.stat().st_size * 0.9
    src.close()
    (tmp_path / "ext.onnx.data").rename(tmp_path / "moved.data")
    with pytest.raises(OnnxModelError, match="external data"):
        load_onnx_source(path)
    evil = onnx.load(str(path), load_external_data=False)
    for tensor in evil.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(evil, str(tmp_path / "evil.onnx"))
    with pytest.raises(OnnxModelError):
        load_onnx_source(tmp_path / "evil.onnx")


def test_not_an_onnx_file(tmp_path: Path) -> None:
    text = tmp_path / "model.onnx"
    text.write_text("[project]\nname = 'not a model'\n")
    with pytest.raises(OnnxModelError, match="not an ONNX protobuf"):
        load_onnx_source(text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(OnnxModelError, match="no ONNX graph"):
        load_onnx_source(empty)
    with pytest.raises(SourceModelError, match="does not exist"):
        load_onnx_source(tmp_path / "missing.onnx")
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"\x80\x04")
    with pytest.raises(SourceModelError, match="never unpickles"):
        load_onnx_source(weights)
    with pytest.raises(SourceModelError, match="cannot convert a dict"):
        load_onnx_source({"weights": 1})


def test_custom_domain_op_is_refused() -> None:
    with pytest.raises(OnnxOperatorError, match=r"com\.acme") as info:
        load_onnx_source(one_node("FancyOp", domain="com.acme"))
    assert isinstance(info.value, UnsupportedOperatorError) and isinstance(info.value, SourceModelError)
    assert "custom-op library" in str(info.value)


def test_opset_newer_than_runtime_is_refused() -> None:
    with pytest.raises(OnnxOpsetError, match="newer than onnxruntime") as info:
        load_onnx_source(one_node("Relu", opset=40))
    assert isinstance(info.value, UnsupportedOpsetError)
    assert "lower opset" in str(info.value)


def test_calibration_shape_mismatch(source, samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CalibrationError, match="does not fit model input"):
        calibration_samples(source, [(np.zeros((4, 16, 16), np.float32), np.zeros(5, np.float32))],
                            preprocessing=None, limit=4)
    wrong = [[np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 5), np.float32)]] * 4  # NHWC for an NCHW model
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(CalibrationError, match=r"\[-1, 3, -1, -1\]"):
        build_onnx(source, onnx_qdq_int8(), calibration=wrong, held_back=samples[:2], golden_sample=samples[0])
    assert not list(scratch.iterdir())  # nothing half-written


def test_build_refuses_tflite_recipe_and_double_quantization(source, samples) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConversionError, match="ONNX recipe"):
        build(source, samples, full_int8())
    quantized = load_onnx_source(onnx.load_from_string(build(source, samples, onnx_qdq_int8()).data))
    with pytest.raises(ConversionError, match="already quantized"):
        build(quantized, samples, onnx_qdq_int8())
    assert build(quantized, samples, onnx_fp32()).precision == "full_int8"  # packaged as it is
    quantized.close()
