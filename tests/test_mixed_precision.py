"""Accuracy-aware mixed precision (issue 13): TFLite selective quantization through ``recipe.exclude`` in every
``convert``, and :func:`mixed_precision` on a real model that plain int8 hurts (softmax attention pooling, trained on
real Fashion-MNIST here: ``edgepack.examples.attention``). Real TF, LiteRT; small eval subsets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import edgepack as ep
from edgepack.auto.mixed_precision import MixedPrecisionError, mixed_precision
from edgepack.converters.formats.tflite.selective import layer_types
from edgepack.converters.package import ConvertedBundle
from edgepack.examples.datasets import FASHION_LABELS
from edgepack.examples.fashion import FASHION_PREPROCESSING
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import Recipe, fp32, full_int8

ROOT = Path(__file__).resolve().parents[1]
WEIGHTED = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")


def _convert(model: Path, calibration: np.ndarray, recipe: Recipe) -> ConvertedBundle:
    return ep.convert(model, calibration, target="x86", recipe=recipe, labels=FASHION_LABELS,
                      preprocessing=FASHION_PREPROCESSING, progress=False)


def test_tflite_exclude_keeps_the_named_layers_float(fashion_model_path, calibration, tmp_path: Path) -> None:
    plain = _convert(fashion_model_path, calibration, full_int8())
    layers = [t for t in layer_types(plain.files[plain.manifest.models[0].file]) if t.op in WEIGHTED]
    assert layers and all(t.dtype == "INT8" for t in layers)
    dense = next(t for t in layers if t.op == "FULLY_CONNECTED")  # the hidden Dense (the logits come last)
    short = dense.name.split(";", 1)[0]  # as `edgepack qdebug` shows it; the full fused name works too
    mixed = _convert(fashion_model_path, calibration, replace(full_int8(), exclude=(short,)))
    entry = mixed.manifest.models[0]
    assert entry.precision == "full_int8" and entry.recipe is not None and entry.recipe.exclude == (short,)
    got = [t for t in layer_types(mixed.files[entry.file]) if t.op in WEIGHTED]
    assert [t.op for t in got] == [t.op for t in layers]
    assert [t.dtype for t in got if t.name == dense.name] == ["FLOAT32"]
    assert all(t.dtype == "INT8" for t in got if t.name != dense.name and not t.name.startswith(short))
    assert mixed.size_bytes > plain.size_bytes  # that layer's weights are float32 now
    path = mixed.save(tmp_path / "mixed.epk")
    assert read_bundle(path).manifest.models[0].recipe.exclude == (short,)
    session = ep.load(path)  # verifies the sha256 and runs the golden input against the golden outputs
    try:
        assert session.fallback_log[-1].outcome == "selected" and session.delegate == "xnnpack"
    finally:
        session.close()


def test_tflite_exclude_errors_name_what_exists(fashion_model_path, calibration) -> None:
    with pytest.raises(ConfigError, match=r"does not have: \['no_such_layer'\]; its \d+ layers include '.*conv2d"):
        _convert(fashion_model_path, calibration[:30], replace(full_int8(), exclude=("no_such_layer",)))
    with pytest.raises(ConfigError, match="full-int8 TFLite model; a fp32 recipe"):
        _convert(fashion_model_path, calibration[:30], replace(fp32(), exclude=("conv2d",)))


def test_mixed_precision_refuses_bad_input(fashion_model_path, calibration) -> None:
    with pytest.raises(ConfigError, match="needs eval_data"):
        mixed_precision(fashion_model_path, calibration, base=full_int8(), eval_data=None, max_accuracy_drop=0.5,
                        target="x86", progress=False)
    with pytest.raises(ConfigError, match="must be 0 or more"):
        mixed_precision(fashion_model_path, calibration, base=full_int8(), eval_data="fashion-mnist:test",
                        max_accuracy_drop=-1, target="x86", progress=False)
    with pytest.raises(ConfigError, match="starts from a full int8 recipe"):
        mixed_precision(fashion_model_path, calibration, base="fp16", eval_data="fashion-mnist:test",
                        max_accuracy_drop=0.5, target="x86", progress=False)
    assert issubclass(MixedPrecisionError, ep.EdgepackError)


@pytest.fixture(scope="module")
def attention_model_path() -> Path:
    from edgepack.examples.attention import train_attention_cnn

    return train_attention_cnn(ROOT / ".cache" / "tests" / "attention_cnn.keras", epochs=3, limit=12000)


def test_mixed_precision_meets_a_budget_plain_int8_misses(attention_model_path, calibration, tmp_path: Path) -> None:
    bundle, report = mixed_precision(attention_model_path, calibration[:100], base=full_int8(),
                                     eval_data="fashion-mnist:test", eval_limit=400, max_accuracy_drop=0.5,
                                     target="x86", labels=FASHION_LABELS, preprocessing=FASHION_PREPROCESSING,
                                     debug_samples=40, latency_blocks=20, progress=False)
    source, plain, mixed = report["source_score"], report["plain_int8_score"], report["score"]
    assert source - plain > 0.5 >= source - mixed  # int8 misses the budget, the mix meets it
    names, count, total = report["float_layers"]["names"], report["float_layers"]["count"], report["float_layers"]["of"]
    assert 0 < count == len(names) < total
    tries = report["tries"]
    assert tries[0]["float_layers"] == 0 and not tries[0]["meets"] and all(t["score"] is not None for t in tries)
    assert min(t["float_layers"] for t in tries if t["meets"]) == count  # the fewest that met it were kept
    assert all(not t["meets"] for t in tries if t["float_layers"] < count)
    entry = bundle.manifest.models[0]
    assert entry.precision == "full_int8" and entry.recipe is not None and list(entry.recipe.exclude) == names
    kinds = layer_types(bundle.files[entry.file])
    assert all(t.dtype == "INT8" for t in kinds if t.op in WEIGHTED)  # every conv / dense stays int8
    assert {t.name for t in kinds if t.dtype == "FLOAT32"} >= set(names)
    # the figures: sizes and interleaved latencies of fp32, plain int8 and the mix, and the share of the speed-up kept
    size, lat = report["size_bytes"], report["latency_p50_ms"]
    assert size["int8"] <= size["mixed"] < size["fp32"]
    gain = lat["fp32"] - lat["int8"]
    if gain > 0:
        assert report["speed_up_kept"] == pytest.approx((lat["fp32"] - lat["mixed"]) / gain)
    if lat["int8"] < 0.8 * lat["fp32"]:  # where int8 pays off at all (it does not on every CPU: DESIGN.md §6)
        assert report["speed_up_kept"] >= 0.8
    assert bundle.report["mixed_precision"] is report
    path = bundle.save(tmp_path / "mixed.epk")
    stored = read_bundle(path)
    assert stored.manifest.models[0].recipe.exclude == tuple(names)
    assert '"mixed_precision"' in stored.read("report.json").decode()
    session = ep.load(path)  # sha256 + golden outputs checked on load
    session.close()
