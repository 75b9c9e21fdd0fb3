"""ONNX recipe options on real ONNX Runtime: nodes kept in float, and ``reduce_range`` chosen by the target.

Float nodes: ``recipe.exclude`` and ``float_first_layers`` are matched on the graph ORT quantizes.
``quant_pre_process`` folds BatchNormalization into Conv, inlines HardSwish as HardSigmoid + Mul and fuses
MatMul + Add into Gemm; the model here has all three, so every mapping rule is exercised on real ORT output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgepack as ep
from edgepack.converters.formats.onnx.inspect import name_nodes
from edgepack.converters.formats.onnx.pipeline import build_onnx, calibration_samples
from edgepack.converters.formats.onnx.prepare import first_layers, name_rewritten_nodes, preprocess, resolve_exclude
from edgepack.converters.formats.onnx.source import load_onnx_source
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import (
    CalibrationMethod,
    IODType,
    OnnxOptions,
    Recipe,
    full_int8,
    onnx_dynamic_int8,
    onnx_qdq_int8,
    onnx_qdq_int16x8,
)

STEM = ["Conv_0", "HardSwish_2/HardSigmoid", "HardSwish_2/Mul"]


def stem_model() -> onnx.ModelProto:
    """Conv → BatchNorm → HardSwish → Conv → Relu → pool → MatMul + Add (opset 15, unnamed nodes)."""
    r = np.random.default_rng(7)

    def init(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
        value = r.normal(size=shape).astype(np.float32) * 0.3
        return numpy_helper.from_array(np.abs(value) + 0.5 if positive else value, name)

    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c0", "g", "bb", "m", "v"], ["n0"]),
             helper.make_node("HardSwish", ["n0"], ["h0"]),
             helper.make_node("Conv", ["h0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("GlobalAveragePool", ["r1"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "mw"], ["mm"]),
             helper.make_node("Add", ["mm", "ab"], ["y"])]
    inits = [init("w0", 8, 3, 3, 3), init("b0", 8), init("g", 8, positive=True), init("bb", 8), init("m", 8),
             init("v", 8, positive=True), init("w1", 8, 8, 3, 3), init("b1", 8), init("mw", 8, 5), init("ab", 5)]
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


@pytest.fixture(scope="module")
def graphs() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    original = stem_model()
    name_nodes(original)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(original, f"{tmp}/in.onnx")
        preprocess(Path(tmp, "in.onnx"), Path(tmp, "pre.onnx"))
        pre = onnx.load(f"{tmp}/pre.onnx")
    return original, pre


def test_rewritten_nodes_are_named_after_the_original(graphs) -> None:  # type: ignore[no-untyped-def]
    original, pre = graphs
    assert "BatchNormalization" not in {n.op_type for n in pre.graph.node}  # folded by quant_pre_process
    assert sum(not n.name for n in pre.graph.node) == 2  # HardSigmoid + Mul come unnamed
    assert name_rewritten_nodes(original, pre) == 2
    assert [(n.name, n.op_type) for n in pre.graph.node] == [
        ("Conv_0", "Conv"), ("HardSwish_2/HardSigmoid", "HardSigmoid"), ("HardSwish_2/Mul", "Mul"),
        ("Conv_3", "Conv"), ("Relu_4", "Relu"), ("GlobalAveragePool_5", "GlobalAveragePool"),
        ("Flatten_6", "Flatten"), ("MatMul_7/MatMulAddFusion", "Gemm")]


def test_exclude_names_map_onto_the_preprocessed_graph(graphs) -> None:  # type: ignore[no-untyped-def]
    original, pre = graphs
    assert resolve_exclude(original, pre, ["HardSwish_2"]) == STEM[1:]  # a rewritten node: all its parts
    assert resolve_exclude(original, pre, ["HardSwish_2/Mul"]) == ["HardSwish_2/Mul"]  # a part alone
    assert resolve_exclude(original, pre, ["MatMul_7"]) == ["MatMul_7/MatMulAddFusion"]
    # folded nodes are fine when what they were folded into stays float too
    assert resolve_exclude(original, pre, ["Conv_0", "BatchNormalization_1"]) == ["Conv_0"]
    assert resolve_exclude(original, pre, ["MatMul_7", "Add_8"]) == ["MatMul_7/MatMulAddFusion"]
    with pytest.raises(ConfigError, match="folds into 'Conv_0'; exclude 'Conv_0' instead"):
        resolve_exclude(original, pre, ["BatchNormalization_1"])
    with pytest.raises(ConfigError, match="folds into 'MatMul_7/MatMulAddFusion'"):
        resolve_exclude(original, pre, ["Add_8"])
    with pytest.raises(ConfigError, match=r"does not have: 'conv0'.*HardSwish_2/HardSigmoid"):
        resolve_exclude(original, pre, ["conv0"])


def test_first_layers_cut_before_the_next_weighted_layer(graphs) -> None:  # type: ignore[no-untyped-def]
    original, pre = graphs
    name_rewritten_nodes(original, pre)
    assert first_layers(pre, 1) == STEM
    assert first_layers(pre, 2)[-1] == "Flatten_6" and len(first_layers(pre, 2)) == 7
    with pytest.raises(ConfigError, match="has 3 weighted layers"):
        first_layers(pre, 3)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("stem") / "stem.onnx"
    onnx.save(stem_model(), str(path))
    src = load_onnx_source(path)
    yield src
    src.close()


def _samples(source) -> list[list[np.ndarray]]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    items = [rng.random((3, 12, 12), dtype=np.float32) for _ in range(40)]
    return calibration_samples(source, items, preprocessing=None, limit=40)


def _float_weights(data: bytes) -> set[str]:
    """Nodes of a quantized model whose weight input is a float32 initializer (not quantized)."""
    model = onnx.load_from_string(data)
    floats = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    return {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in floats}


@pytest.mark.parametrize("recipe", [onnx_qdq_int8(exclude=("Conv_0", "HardSwish_2")),
                                    onnx_qdq_int8(float_first_layers=1, method=CalibrationMethod.PERCENTILE),
                                    onnx_dynamic_int8(exclude=("Conv_0", "BatchNormalization_1", "HardSwish_2"))],
                         ids=["exclude", "float-first-layers", "dynamic"])
def test_float_nodes_stay_float_in_the_quantized_model(source, recipe: Recipe) -> None:  # type: ignore[no-untyped-def]
    samples = _samples(source)
    art = build_onnx(source, recipe, calibration=samples[:32], held_back=samples[33:], golden_sample=samples[32])
    assert art.report["quantization"]["excluded"] == STEM
    if recipe.needs_calibration:
        assert _float_weights(art.data) == {"Conv_0"}  # Conv_3 and the Gemm are quantized
    assert art.validation is not None and art.validation.outputs[0].cosine > 0.99


def test_recipe_rules_for_float_nodes() -> None:
    assert Recipe.from_json(onnx_qdq_int8(float_first_layers=3).to_json()).options.float_first_layers == 3
    assert Recipe.from_json({"precision": "fp32"}).options.float_first_layers == 0  # bundles made before the field
    with pytest.raises(ConfigError, match="ONNX int8"):
        full_int8().__class__(precision=full_int8().precision, onnx=OnnxOptions(float_first_layers=2))  # TFLite
    with pytest.raises(ConfigError, match="0 or more"):
        onnx_qdq_int8(float_first_layers=-1)
    with pytest.raises(ConfigError, match="min/max"):
        full_int8().__class__(precision=full_int8().precision,
                              onnx=OnnxOptions(calibration_method=CalibrationMethod.PERCENTILE))


def test_cli_float_options(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, cal = tmp_path / "stem.onnx", tmp_path / "cal.npy"
    onnx.save(stem_model(), str(model))
    np.save(cal, np.random.default_rng(2).random((24, 1, 3, 12, 12), dtype=np.float32))
    out = tmp_path / "stem.epk"
    cmd = [sys.executable, "-m", "edgepack.cli", "convert", str(model), "--recipe", "qdq-int8", "--calibration",
           str(cal), "--calibration-method", "percentile", "--float-first-layers", "1", "--exclude", "Relu_4",
           "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    bundle = read_bundle(out)
    recipe = bundle.manifest.recipe
    assert (recipe.options.float_first_layers, recipe.exclude, recipe.options.calibration_method.value) == (
        1, ("Relu_4",), "percentile")
    report = json.loads(bundle.read("report.json"))
    assert report["models"][0]["quantization"]["excluded"] == [*STEM, "Relu_4"]
    bad = subprocess.run([*cmd[:-2], "--exclude", "BatchNormalization_1", "--float-first-layers", "0", "-o",
                          str(tmp_path / "bad.epk")], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "exclude 'Conv_0' instead" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.epk").exists()


def test_reduce_range_is_the_targets_choice_unless_set() -> None:
    assert onnx_qdq_int8().options.reduce_range is None
    assert onnx_qdq_int8().resolved_for("x86_64").options.reduce_range is True  # uint8 x int8 kernels without VNNI
    assert onnx_qdq_int8().resolved_for("aarch64").options.reduce_range is True  # and the same outputs as on x86
    assert onnx_qdq_int8().resolved_for("riscv64").options.reduce_range is False  # not measured: full 8 bits
    assert onnx_dynamic_int8().resolved_for("x86_64").options.reduce_range is True
    assert onnx_qdq_int8(activation=IODType.INT8).resolved_for("x86_64").options.reduce_range is False
    assert onnx_qdq_int16x8().resolved_for("x86_64").options.reduce_range is False
    assert onnx_qdq_int8(reduce_range=False).resolved_for("x86_64").options.reduce_range is False  # asked for: kept
    assert full_int8().resolved_for("x86_64") == full_int8()  # TFLite: not applicable
    with pytest.raises(ConfigError, match="ONNX int8"):
        full_int8().__class__(precision=full_int8().precision, onnx=OnnxOptions(reduce_range=True))


def _int8_weight_extremes(data: bytes) -> int:
    model = onnx.load_from_string(data)
    return max(int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max()) for i in model.graph.initializer
               if i.data_type == TensorProto.INT8 and len(i.dims) == 4)


@pytest.mark.parametrize(("target", "recipe", "reduced"), [("x86", "qdq-int8", True), ("rpi4", "qdq-int8", True),
                                                           ("rpi4", onnx_qdq_int8(reduce_range=False), False)])
def test_reduce_range_reaches_the_bundle(target: str, recipe: str | Recipe, reduced: bool, tmp_path: Path) -> None:
    model = tmp_path / "stem.onnx"
    onnx.save(stem_model(), str(model))
    calibration = np.random.default_rng(3).random((30, 3, 12, 12), dtype=np.float32)
    bundle = ep.convert(model, calibration, target=target, recipe=recipe, progress=False)
    assert bundle.manifest.recipe.options.reduce_range is reduced  # recorded as chosen, not left to the reader
    assert bundle.report["models"][0]["quantization"]["reduce_range"] is reduced
    # 7-bit weights span [-64, 63]; 8-bit per-channel MinMax weights reach 127 in every channel
    assert _int8_weight_extremes(bundle.files[bundle.manifest.models[0].file]) == (64 if reduced else 127)
