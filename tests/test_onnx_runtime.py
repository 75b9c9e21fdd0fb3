"""ONNX Runtime backend: provider ladder, what ORT really uses, session options, optimized-model cache."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.converters.formats.onnx.pipeline import build_onnx
from edgepack.converters.formats.onnx.source import load_onnx_source
from edgepack.converters.package import assemble
from edgepack.runtimes import load, read_bundle
from edgepack.runtimes.backends import get_backend
from edgepack.runtimes.backends import onnxruntime as ortb
from edgepack.runtimes.errors import (
    ConfigError,
    ModelLoadError,
    NoUsableDelegateError,
    UnsupportedOperatorError,
    UnsupportedOpsetError,
)
from edgepack.runtimes.manifest import Postprocessing
from edgepack.runtimes.recipe import onnx_fp32
from edgepack.runtimes.target import get_target


def tiny_cnn(*, opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """NCHW conv net with a dynamic batch: Conv → Relu → GlobalAveragePool → Flatten → Gemm (3 classes)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "w2", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def one_node(op: str, *, domain: str = "", opset: int = 17) -> bytes:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports, ir_version=10).SerializeToString()


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = load_onnx_source(tiny_cnn())
    x = np.random.default_rng(1).random((6, 1, 3, 8, 8)).astype(np.float32)
    art = build_onnx(src, onnx_fp32(), calibration=[], held_back=[[s] for s in x[1:]], golden_sample=[x[0]])
    bundle = assemble(name="tiny", source=src, target=get_target("x86"), recipe=onnx_fp32(), artifacts=[art],
                      preprocessing=None, postprocessing=Postprocessing(), labels=None, provenance={},
                      report={"models": [art.report]})
    src.close()
    return bundle.save(tmp_path_factory.mktemp("ort") / "tiny.epk")


def test_runtime_import_stays_light(bundle_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "import edgepack.runtimes as rt\n"
        "from edgepack.runtimes.backends import registered_backends\n"
        "registered_backends()\n"
        "heavy = {'onnx', 'onnxruntime', 'tensorflow', 'torch', 'keras'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        f"s = rt.load({str(bundle_path)!r})\n"
        "s.run(np.zeros((1, 3, 8, 8), np.float32))\n"
        "heavy = {'onnx', 'tensorflow', 'torch', 'keras'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert 'onnxruntime' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_provider_mapping() -> None:
    assert ortb.providers_for("cpu") == ["CPUExecutionProvider"]
    assert set(ortb.PROVIDERS) >= {"gpu", "nnapi", "qnn", "xnnpack", "cpu"}
    with pytest.raises(ValueError, match="unknown ONNX Runtime delegate"):
        ortb.providers_for("warp-drive")
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):  # the real build here has no GPU provider
        ortb.providers_for("gpu")
    with pytest.raises(RuntimeError, match="onnxruntime-qnn"):
        ortb.providers_for("qnn")


def test_real_missing_provider_is_logged(bundle_path: Path) -> None:
    """Providers this build lacks by design (the PyPI wheel: CPU only) are recorded as absent, not as failures."""
    session = load(bundle_path, delegates=("gpu", "nnapi", "xnnpack", "cpu"))
    outcomes = [(a.delegate, a.outcome) for a in session.fallback_log]
    assert outcomes == [("gpu", "absent"), ("nnapi", "absent"), ("xnnpack", "absent"), ("cpu", "selected")]
    assert "XnnpackExecutionProvider" in session.fallback_log[2].reason
    assert "dropped" not in session.explain()  # nothing failed: nothing to show
    with pytest.raises(NoUsableDelegateError, match="xnnpack: absent — this onnxruntime build has no Xnnpack"):
        load(bundle_path, delegates=("xnnpack",))
    engine = session.raw_engine()
    assert engine.providers == ("CPUExecutionProvider",)
    assert engine.node_assignment["CPUExecutionProvider"] >= 3


def test_silent_cpu_fallback_is_caught(bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider the build claims but cannot use: ORT drops it with a warning; edgepack logs a failure."""
    monkeypatch.setattr(ortb, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert ortb.providers_for("gpu") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = load(bundle_path, delegates=("gpu", "cpu"))
    assert not [w for w in caught if "provider" in str(w.message)]
    first = session.fallback_log[0]
    assert (first.delegate, first.outcome) == ("gpu", "load-failed")
    assert "CUDAExecutionProvider" in first.reason and "runs on ['CPUExecutionProvider'] only" in first.reason
    assert session.delegate == "cpu"
    with pytest.raises(NoUsableDelegateError, match="gpu: load-failed"):
        load(bundle_path, delegates=("gpu",))


def test_model_level_failures_are_typed() -> None:
    backend = get_backend("onnxruntime")
    with pytest.raises(UnsupportedOpsetError, match="opset"):
        backend.open(one_node("Relu", opset=40), delegate="cpu", num_threads=None)
    with pytest.raises(UnsupportedOperatorError, match=r"com\.acme"):
        backend.open(one_node("FancyOp", domain="com.acme"), delegate="cpu", num_threads=None)
    with pytest.raises(ModelLoadError, match="not a valid ONNX"):
        backend.open(b"definitely not a protobuf" * 4, delegate="cpu", num_threads=None)


def test_graph_optimization_levels(bundle_path: Path) -> None:
    bundle = read_bundle(bundle_path)
    x = bundle.golden_inputs()[0]
    outs = {}
    for level in ("disable", "basic", "extended", "all"):
        session = load(bundle, delegates=("cpu",), options=ortb.OrtOptions(graph_optimization=level,
                                                                          inter_op_threads=1))
        outs[level] = session.run(x)[0]
    for level, out in outs.items():
        np.testing.assert_allclose(out, outs["disable"], atol=1e-5, err_msg=level)
    with pytest.raises(ConfigError, match="graph_optimization"):
        ortb.OrtOptions(graph_optimization="turbo")
    with pytest.raises(ConfigError, match="OrtOptions"):
        load(bundle, options={"graph_optimization": "all"})
    with pytest.raises(ConfigError, match="cache_dir"):
        load(dataclasses.replace(bundle, path=None), options=ortb.OrtOptions(cache=True))  # no place beside it


def test_optimized_model_cache(bundle_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    local = tmp_path / "tiny.epk"
    local.write_bytes(bundle_path.read_bytes())
    options = ortb.OrtOptions(cache=True)
    first = load(local, delegates=("cpu",), options=options)
    cache_dir = tmp_path / "tiny.epk.ort-cache"
    assert first.raw_engine().cache.startswith("saved") and cache_dir.is_dir()
    cached = sorted(cache_dir.glob("*.onnx"))
    assert len(cached) == 1 and not list(cache_dir.glob(".*.tmp"))
    second = load(local, delegates=("cpu",), options=options)
    assert second.raw_engine().cache.startswith("hit")
    x = read_bundle(local).golden_inputs()[0]
    np.testing.assert_allclose(first.run(x)[0], second.run(x)[0], atol=1e-6)
    cached[0].write_bytes(cached[0].read_bytes()[:-7] + b"garbage")  # damaged: rebuilt, not trusted
    with caplog.at_level(logging.WARNING, logger="edgepack.runtimes"):
        third = load(local, delegates=("cpu",), options=options)
    assert third.raw_engine().cache.startswith("saved") and "checksum" in caplog.text
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    fourth = load(local, delegates=("cpu",), options=ortb.OrtOptions(cache_dir=str(blocker / "cache")))
    assert fourth.raw_engine().cache.startswith("unwritable")
    np.testing.assert_allclose(fourth.run(x)[0], first.run(x)[0], atol=1e-6)
