"""``edgepack.runtimes.benchmark`` on real bundles: statistics on known inputs, the JSON schema (as documented),
pinning, isolation, per-op profiles, versions recorded with every result, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.runtimes import BackendUnavailableError, ConfigError, benchmark, load
from edgepack.runtimes.bench_process import benchmark_isolated
from edgepack.runtimes.benchmark import SCHEMA, BenchResult, LatencyStats, interleaved, latency_stats
from edgepack.runtimes.manifest import ColorOrder
from edgepack.runtimes.profiling import op_profile

DOC = Path(__file__).resolve().parents[1] / "docs" / "measurement.md"


def test_latency_stats_on_known_inputs() -> None:
    s = latency_stats([k / 1000 for k in range(1, 101)])  # 1..100 ms
    assert s.runs == 100 and s.min_ms == pytest.approx(1) and s.max_ms == pytest.approx(100)
    assert s.p50_ms == pytest.approx(50.5) and s.mean_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.std_ms == pytest.approx(np.std(np.arange(1, 101)))
    assert s.throughput_per_s == pytest.approx(1000 * 100 / 5050)
    assert len(s.samples_ms) == 100 and latency_stats([0.002] * 3, keep_samples=False).samples_ms == ()


def test_interleaved_keeps_ratios() -> None:
    def fast() -> float:
        return float(np.sum(np.ones(1000)))

    def slow() -> float:
        return float(np.sum(np.ones(400_000)))

    r = interleaved({"fast": fast, "slow": slow}, blocks=5, per_block=10, warmup=2)
    assert r["fast"].runs == r["slow"].runs == 50
    assert r["slow"].p50_ms > 5 * r["fast"].p50_ms


def _paths(cls: type, prefix: str = "") -> set[str]:
    """Dotted key paths of a result dataclass, as docs/measurement.md lists them."""
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        tp = hints[f.name]
        optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
        inner = next(a for a in typing.get_args(tp) if a is not type(None)) if optional else tp
        if typing.get_origin(inner) is tuple and dataclasses.is_dataclass(typing.get_args(inner)[0]):
            out |= _paths(typing.get_args(inner)[0], key + "[].")
        elif dataclasses.is_dataclass(inner) and key != "end_to_end":
            if optional:
                out.add(key)
            out |= _paths(inner, key + ".")
        else:
            out.add(key)
    return out


def test_json_schema_is_documented_and_validated(bundle_factory, fashion_test) -> None:
    x, _ = fashion_test
    result = benchmark(bundle_factory("full-int8"), runs=30, warmup=3, threads=1, images=list(x[:5]),
                       image_color=ColorOrder.GRAY, profile=True)
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["schema"] == SCHEMA == "edgepack.bench/1"
    assert BenchResult.from_json(doc) == result  # strict round trip
    section = DOC.read_text().split("### Bench JSON", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z0-9_.\[\]]+)` \|", section, re.M))
    assert documented == _paths(BenchResult), documented ^ _paths(BenchResult)
    with pytest.raises(ConfigError, match="unknown key"):
        BenchResult.from_json({**doc, "extra": 1})
    with pytest.raises(ConfigError, match="expected a number"):
        BenchResult.from_json({**doc, "first_run_seconds": "fast"})
    with pytest.raises(ConfigError, match="not a edgepack.bench/1"):
        BenchResult.from_json({**doc, "schema": "other/1"})


def test_benchmark_measures_everything(bundle_factory, fashion_test) -> None:
    x, _ = fashion_test
    path = bundle_factory("full-int8")
    result = benchmark(path, runs=50, warmup=5, threads=1, images=list(x[:8]), image_color=ColorOrder.GRAY,
                       profile=True)
    assert result.load_seconds is not None and 0 < result.load_seconds < 10
    assert result.first_run_seconds > 0 and result.invoke.runs == 50 and len(result.invoke.samples_ms) == 50
    inv, e2e = result.invoke, result.end_to_end
    assert e2e is not None and e2e.runs == 50 and inv.min_ms <= inv.p50_ms <= inv.p90_ms <= inv.p99_ms <= inv.max_ms
    assert result.runtime.backend == "litert" and result.runtime.threads == 1
    assert result.model.precision == "full_int8" and result.model.inputs == ((1, 28, 28, 1),)
    assert result.memory.peak_rss_bytes >= (result.memory.rss_after_load_bytes or 0) > 0
    env = result.environment
    assert env.libraries["numpy"] == np.__version__ and "ai-edge-litert" in env.libraries and env.python
    prof = result.profile
    assert prof is not None and not prof.available and "per-op profiler" in prof.reason
    assert prof.op_counts.get("DELEGATE", 0) >= 1
    text = result.summary()
    assert "p50" in text and "peak RSS" in text and "not available" in text


def test_pinning_and_errors(bundle_factory) -> None:
    path = bundle_factory("fp32")
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("CPU pinning needs Linux")
    before = os.sched_getaffinity(0)
    result = benchmark(path, runs=10, warmup=1, pin_cpus=[min(before)])
    assert result.runtime.pinned_cpus == (min(before),) and os.sched_getaffinity(0) == before
    with pytest.raises(ConfigError, match="cannot pin to CPUs"):
        benchmark(path, runs=5, pin_cpus=[10_000])
    with pytest.raises(ConfigError, match="runs >= 1"):
        benchmark(path, runs=0)
    with pytest.raises(ConfigError, match="pass a path"):
        benchmark(load(path), threads=2)
    with pytest.raises(BackendUnavailableError, match="tflite-runtime"):
        benchmark(path, backend="tflite-runtime")


def test_isolated_process_has_its_own_memory_and_no_tensorflow(bundle_factory) -> None:
    import tensorflow  # noqa: F401 - this process is big; the child must not inherit its peak

    result = benchmark_isolated(bundle_factory("fp32"), runs=20, warmup=2, threads=1)
    assert result.memory.peak_rss_source == "VmHWM" if sys.platform == "linux" else True
    assert result.memory.peak_rss_bytes < 300 * 2**20  # numpy + LiteRT, not this TF-laden process
    assert isinstance(result.invoke, LatencyStats) and result.load_seconds is not None


def test_onnx_per_op_profile() -> None:
    from measure_helpers import orientation_onnx

    from edgepack.runtimes.profiling import _onnx_profile

    model = orientation_onnx().read_bytes()
    prof = _onnx_profile(model, [np.random.default_rng(0).random((1, 3, 224, 224), np.float32)], runs=3, threads=1)
    assert prof.available and prof.source.startswith("onnxruntime") and prof.runs >= 3
    assert sum(o.percent for o in prof.ops) == pytest.approx(100, abs=0.5)
    assert prof.ops[0].total_ms >= prof.ops[-1].total_ms and prof.op_counts.get("Conv", 0) > 10


def test_onnx_bundle_profile_through_session(tmp_path: Path) -> None:
    """An ONNX bundle (when this checkout can make one) is profiled with ORT's enable_profiling."""
    from measure_helpers import orientation_onnx, orientation_preprocessing, page_images

    import edgepack as ep
    from edgepack.runtimes import EdgepackError

    x, _ = page_images(1)
    try:
        bundle = ep.convert(orientation_onnx(), x, recipe="onnx-fp32", preprocessing=orientation_preprocessing(),
                            progress=False)
    except EdgepackError as exc:
        pytest.skip(f"ONNX bundles are not available in this checkout: {exc}")
    if bundle.manifest.models[0].format != "onnx":
        pytest.skip("convert() does not make ONNX bundles in this checkout yet")
    session = load(bundle.save(tmp_path / "o.epk"), num_threads=1)
    prof = op_profile(session, session.bundle.golden_inputs(), runs=2, threads=1)
    assert prof.available and prof.ops


def test_cli_bench_writes_schema_json(bundle_factory, tmp_path: Path, capsys) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", str(bundle_factory("fp16")), "--runs", "20", "--warmup", "2", "--threads", "1",
                 "--images", "fashion-mnist", "--profile", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "invoke" in text and "end-to-end" in text
    doc = json.loads(out.read_text())
    assert BenchResult.from_json(doc).model.precision == "fp16"
    assert doc["environment"]["libraries"]["edgepack"] and doc["end_to_end"]["runs"] == 20
    assert main(["bench", str(tmp_path / "missing.epk")]) == 2


def test_benchmark_results_carry_versions() -> None:
    """Every result file under benchmarks/results records the machine and the library versions."""
    results = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "results").glob("*.json"))
    assert results
    for path in results:
        env = json.loads(path.read_text())["environment"]
        assert env["machine"] and env["python"] and env["cpus"] >= 1 and env["date"], path.name
        assert {"edgepack", "numpy"} <= set(env["libraries"]), path.name
