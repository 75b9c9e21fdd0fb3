"""Op versions recorded at conversion are checked against a frozen runtime before loading."""

from __future__ import annotations

import dataclasses
import json

import pytest

import edgepack as ep
from edgepack.converters import ConversionError
from edgepack.examples.fashion import FASHION_PREPROCESSING
from edgepack.runtimes import ModelLoadError, read_bundle
from edgepack.runtimes.backends.tflite_runtime import TFLiteRuntimeBackend
from edgepack.runtimes.opcheck import check_runtime_supports, max_op_versions, unsupported_ops


def test_measured_table_is_packaged() -> None:
    table = max_op_versions("tflite-runtime")
    assert table["CONV_2D"] >= 3 and table["FULLY_CONNECTED"] >= 4
    assert max_op_versions("litert") == {}  # current runtimes have no frozen table


def test_dynamic_range_model_is_refused_for_tflite_runtime(bundle_factory) -> None:
    entry = read_bundle(bundle_factory("dynamic-int8")).manifest.models[0]
    problems = unsupported_ops(entry, "tflite-runtime")
    assert any(p.startswith("FULLY_CONNECTED v") for p in problems), problems
    with pytest.raises(ModelLoadError, match="FULLY_CONNECTED v.*Use the litert backend"):
        check_runtime_supports(entry, TFLiteRuntimeBackend())


@pytest.mark.parametrize("recipe", ["fp32", "full-int8"])
def test_fp32_and_full_int8_pass_for_tflite_runtime(bundle_factory, recipe: str) -> None:
    bundle = read_bundle(bundle_factory(recipe))
    assert unsupported_ops(bundle.manifest.models[0], "tflite-runtime") == []
    report = json.loads(bundle.read("report.json"))["models"][0]
    assert report["runtime_compatibility"] == {"tflite-runtime": "ok"}  # rpi4 names tflite-runtime


def test_conversion_for_a_tflite_runtime_only_target_checks_ops(fashion_model_path, calibration) -> None:
    legacy_pi = dataclasses.replace(ep.targets.RPI4, name="legacy-pi", runtimes=("tflite-runtime",))
    with pytest.raises(ConversionError, match="lacks FULLY_CONNECTED v"):
        ep.convert(fashion_model_path, recipe="dynamic-int8", target=legacy_pi, progress=False)
    with pytest.warns(UserWarning, match="tflite-runtime on rpi4 cannot run this model"):
        ep.convert(fashion_model_path, recipe="dynamic-int8", target="rpi4", progress=False)
    ok = ep.convert(fashion_model_path, calibration, recipe="full-int8", target=legacy_pi,
                    preprocessing=FASHION_PREPROCESSING, progress=False)
    assert ok.report["models"][0]["runtime_compatibility"] == {"tflite-runtime": "ok"}
