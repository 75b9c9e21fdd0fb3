"""Unstructured magnitude sparsity (issue 12): Keras 3 masks and schedule, ONNX initializers, sparse TFLite export,
and the bundle that compresses — with real TF, LiteRT and ONNX Runtime on tiny models."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgepack.converters.errors import PruningError


def _tiny(seed: int = 0):  # type: ignore[no-untyped-def]
    from edgepack.converters.tfenv import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((12, 12, 1), name="image"),
        layers.Conv2D(4, 3, padding="same", activation="relu"),  # 36 weights: left dense
        layers.Conv2D(16, 3, padding="same", activation="relu"),  # 576
        layers.DepthwiseConv2D(3, padding="same"),  # 144: dense
        layers.Conv2D(32, 1, activation="relu"),  # 512
        layers.Flatten(),
        layers.Dense(24, activation="relu"),  # 110,592
        layers.Dense(5, name="logits"),  # 120
    ])


def _data(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 12, 12, 1)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) * 10).astype("int64") % 5
    return x, y


def test_global_sparsity_matches_the_claim_and_small_kernels_stay_dense() -> None:
    from edgepack.converters.pruning.keras_sparsity import measured_sparsity, sparsify

    model = _tiny()
    pruned, report = sparsify(model, sparsity=0.6, epochs=0, progress=False, min_weights=500)
    overall, per = measured_sparsity(pruned)
    assert abs(overall - 0.6) <= 0.01 and abs(report["sparsity"] - overall) < 1e-9
    assert set(report["dense_layers"]) == {n for n, s in per.items() if s == 0.0}
    assert report["dense_layers"] and report["schedule"]["kind"] == "one-shot"
    assert measured_sparsity(model)[0] == 0.0  # the caller's model is untouched


def test_per_layer_mode_gives_each_layer_the_ratio() -> None:
    from edgepack.converters.pruning.keras_sparsity import magnitude_masks, sparsify

    _, report = sparsify(_tiny(), sparsity=0.7, epochs=0, global_sparsity=False, progress=False,
                         min_weights=100)
    pruned_layers = {n: s for n, s in report["layers"].items() if n not in report["dense_layers"]}
    assert len(pruned_layers) >= 4
    for name, s in pruned_layers.items():
        assert abs(s - 0.7) <= 0.01, name
    masks = magnitude_masks(_tiny(), sparsity=0.3, global_sparsity=False, min_weights=100)
    assert all(abs(1 - m.mean() - 0.3) <= 0.01 for m in masks.masks.values())


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, float("nan"), "half"])
def test_ratio_outside_zero_one_is_refused(bad: object) -> None:
    from edgepack.converters.pruning.keras_sparsity import sparsify
    from edgepack.converters.pruning.onnx_sparsity import sparsify_onnx

    with pytest.raises(PruningError, match="sparsity"):
        sparsify(_tiny(), sparsity=bad, epochs=0)  # type: ignore[arg-type]
    with pytest.raises(PruningError, match="sparsity"):
        sparsify_onnx(_onnx_mlp(), sparsity=bad)  # type: ignore[arg-type]


def test_nothing_prunable_and_missing_data_are_refused() -> None:
    import keras

    from edgepack.converters.pruning.keras_sparsity import sparsify

    flat = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(PruningError, match="nothing|no Conv"):
        sparsify(flat, sparsity=0.5, epochs=0)
    with pytest.raises(PruningError, match="needs data"):
        sparsify(_tiny(), sparsity=0.5, epochs=1)


def test_gradual_schedule_keeps_zeros_through_finetuning_save_reload_and_convert(tmp_path: Path) -> None:
    import keras

    import edgepack as ep
    from edgepack.converters.pruning.keras_sparsity import PolynomialSchedule, measured_sparsity, sparsify
    from edgepack.runtimes import load

    sched = PolynomialSchedule.for_steps(0.5, 30)
    levels = [sched.sparsity_at(t) for t in range(31)]
    assert levels[0] == 0.0 and levels[sched.end_step] == pytest.approx(0.5) and levels == sorted(levels)

    x, y = _data()
    pruned, report = sparsify(_tiny(), x, y, sparsity=0.5, epochs=3, progress=False, min_weights=500)
    assert report["finetune"]["mode"] == "labels" and report["schedule"]["kind"] == "polynomial"
    assert abs(measured_sparsity(pruned)[0] - 0.5) <= 0.01
    path = tmp_path / "sparse.keras"
    pruned.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    assert abs(measured_sparsity(reloaded)[0] - 0.5) <= 0.01
    bundle = ep.convert(reloaded, x[:60], target="x86", recipe="fp32", progress=False).save(tmp_path / "s.epk")
    out = load(bundle).run(x[:1])[0]
    np.testing.assert_allclose(out, reloaded.predict(x[:1], verbose=0), atol=1e-4)


def test_sparse_bundle_compresses_smaller_than_the_dense_one(tmp_path: Path) -> None:
    import edgepack as ep
    from edgepack.converters.pruning.keras_sparsity import sparsify

    x, _ = _data(80)
    model = _tiny()
    pruned, _ = sparsify(model, sparsity=0.8, epochs=0, progress=False)

    def entry_bytes(m, name: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        path = ep.convert(m, x, target="x86", recipe="full-int8", progress=False).save(tmp_path / f"{name}.epk")
        with zipfile.ZipFile(path) as z:
            info = next(i for i in z.infolist() if i.filename.endswith(".tflite"))
        return info.compress_size, path.stat().st_size

    dense_entry, dense_file = entry_bytes(model, "dense")
    sparse_entry, sparse_file = entry_bytes(pruned, "sparse")
    assert sparse_entry < 0.6 * dense_entry and sparse_file < dense_file


@pytest.mark.parametrize(("precision", "densify"), [("fp32", True), ("fp16", True), ("full-int8", False),
                                                    ("dynamic-int8", False)])
def test_tflite_export_stores_weights_sparse_only_for_float(precision: str, densify: bool) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.converters.formats.tflite.export import export_tflite
    from edgepack.converters.formats.tflite.source import load_source
    from edgepack.converters.pruning.keras_sparsity import sparsify
    from edgepack.runtimes.recipe import PruneOptions, get_recipe

    x, _ = _data(20)
    pruned, _ = sparsify(_tiny(), sparsity=0.8, epochs=0, progress=False)
    recipe = get_recipe(precision)
    source = load_source(pruned)
    try:
        plain = export_tflite(source, recipe, calibration=[[s[None]] for s in x])
        from dataclasses import replace

        sparse = export_tflite(source, replace(recipe, prune=PruneOptions(sparsity=0.8)),
                               calibration=[[s[None]] for s in x])
    finally:
        source.close()
    interp = Interpreter(model_content=sparse, num_threads=1)  # XNNPACK (the default delegate) accepts it
    interp.allocate_tensors()
    ops = [o["op_name"] for o in interp._get_ops_details()]
    assert ("DENSIFY" in ops) is densify
    assert (len(sparse) < 0.6 * len(plain)) is densify
    if densify:  # same numbers as the dense storage of the same zeros
        ref = Interpreter(model_content=plain, num_threads=1)
        ref.allocate_tensors()
        for it in (interp, ref):
            it.set_tensor(it.get_input_details()[0]["index"], x[:1])
            it.invoke()
        np.testing.assert_allclose(interp.get_tensor(interp.get_output_details()[0]["index"]),
                                   ref.get_tensor(ref.get_output_details()[0]["index"]), atol=1e-5)


def _onnx_mlp():  # type: ignore[no-untyped-def]
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w_conv = numpy_helper.from_array(rng.normal(size=(16, 3, 3, 3)).astype("float32"), "w_conv")
    b_conv = numpy_helper.from_array(rng.normal(size=(16,)).astype("float32"), "b_conv")
    shape = numpy_helper.from_array(np.array([1, 16 * 8 * 8], dtype=np.int64), "shape")
    w_gemm = numpy_helper.from_array(rng.normal(size=(16 * 8 * 8, 64)).astype("float32"), "w_gemm")
    b_gemm = numpy_helper.from_array(rng.normal(size=(64,)).astype("float32"), "b_gemm")
    w_mm = numpy_helper.from_array(rng.normal(size=(64, 10)).astype("float32"), "w_mm")
    nodes = [
        helper.make_node("Conv", ["x", "w_conv", "b_conv"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "w_gemm", "b_gemm"], ["g"]),
        helper.make_node("MatMul", ["g", "w_mm"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [w_conv, b_conv, shape, w_gemm, b_gemm, w_mm])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("global_sparsity", [True, False])
def test_sparsify_onnx_gives_the_claimed_sparsity_and_still_runs(global_sparsity: bool) -> None:
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgepack.converters.pruning.onnx_sparsity import sparsify_onnx

    model = _onnx_mlp()
    pruned, report = sparsify_onnx(model, sparsity=0.5, global_sparsity=global_sparsity)
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert set(report["layers"]) == {"w_conv", "w_gemm", "w_mm"}
    for bias in ("b_conv", "b_gemm"):
        assert np.count_nonzero(inits[bias]) == inits[bias].size
    if global_sparsity:
        assert abs(report["sparsity"] - 0.5) <= 0.01
    else:
        for name in set(report["layers"]) - set(report["dense_layers"]):
            assert abs(report["layers"][name] - 0.5) <= 0.01
    zeros = sum(inits[n].size - np.count_nonzero(inits[n]) for n in report["layers"])
    assert zeros == report["weights"]["zeros"]
    originals = [numpy_helper.to_array(i) for i in model.graph.initializer]
    assert all(np.count_nonzero(a) == a.size for a in originals)  # the input model is untouched
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype("float32")
    dense_out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    out = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert out[0].shape == (1, 10) and np.isfinite(out[0]).all() and not np.allclose(out[0], dense_out[0])
