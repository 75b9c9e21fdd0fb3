"""Bundles whose golden check holds on any CPU: one golden file per model, every variant checked on its own
backend, int8 tolerances of a few quantization steps, and the check run under an emulated x86 CPU of another
generation (qemu-user, docs/emulation.md)."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgepack as ep
from edgepack.device.suite import SuiteOptions
from edgepack.device.x86_cpu import (
    EmulationError,
    emulated_golden_errors,
    golden_errors,
    run_suite_x86,
    x86_command,
)
from edgepack.examples.fashion import FASHION_PREPROCESSING
from edgepack.runtimes import BundleSchemaError, load, read_bundle
from edgepack.runtimes.bundle import MANIFEST, sha256_bytes, write_bundle

ORDERS = (("full-int8", "qdq-int8"), ("qdq-int8", "full-int8"))
#: Kernels each backend is checked with: LiteRT's XNNPACK and its reference kernels; ORT's CPU provider.
LADDERS = {"litert": (("xnnpack",), ("cpu",)), "onnxruntime": (("cpu",),)}


@pytest.fixture(scope="module")
def variant_bundles(fashion_model_path: Path, calibration: np.ndarray,
                    tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], Path]:
    """A real .tflite + .onnx int8 bundle of the Fashion CNN in each recipe order."""
    folder = tmp_path_factory.mktemp("variants")
    return {order: ep.convert(fashion_model_path, calibration, recipe=list(order), target="rpi4",
                              preprocessing=FASHION_PREPROCESSING, progress=False
                              ).save(folder / f"{'+'.join(order)}.epk") for order in ORDERS}


@pytest.mark.parametrize("order", ORDERS, ids=["tflite-first", "onnx-first"])
def test_every_variant_passes_its_golden_check_on_its_own_backend(variant_bundles, order) -> None:
    path = variant_bundles[order]
    manifest = read_bundle(path).manifest
    files = [f for m in manifest.models for f in m.golden.outputs]
    assert len(files) == len(set(files)), "each model has its own golden outputs"
    for backend, ladders in LADDERS.items():
        for delegates in ladders:
            with load(path, backend=backend, delegates=delegates) as session:
                assert session.model.format == {"litert": "tflite", "onnxruntime": "onnx"}[backend]
                chosen = session.fallback_log[-1]
                assert (chosen.outcome, chosen.delegate) == ("selected", delegates[0]), session.explain()
                assert chosen.max_abs_error <= min(t.atol for t in session.model.golden.tolerance)
    rows = golden_errors(path)  # also ORT with graph optimizations off (its reference kernels)
    assert {r["kernels"] for r in rows} == {"xnnpack", "reference", "optimized"}
    assert all(r["ok"] for r in rows), rows


def _rewrite(path: Path, out: Path, manifest) -> None:  # type: ignore[no-untyped-def]
    """Copy a bundle with another manifest (bypassing write_bundle's checks, as a tampered file would)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        dst.writestr(MANIFEST, manifest.to_bytes())
        for name in src.namelist():
            if name != MANIFEST:
                dst.writestr(name, src.read(name))


def test_models_sharing_a_golden_output_file_are_refused(variant_bundles, tmp_path: Path) -> None:
    path = variant_bundles[ORDERS[0]]
    bundle = read_bundle(path)
    first, second = bundle.manifest.models
    shared = dataclasses.replace(second, golden=dataclasses.replace(second.golden, outputs=first.golden.outputs))
    manifest = dataclasses.replace(bundle.manifest, models=(first, shared))
    bad = tmp_path / "shared.epk"
    _rewrite(path, bad, manifest)
    with pytest.raises(BundleSchemaError, match="golden output file .* used by .*tflite.* and by .*onnx"):
        read_bundle(bad)
    files = {n: bundle.read(n) for n in bundle.names()}
    with pytest.raises(BundleSchemaError, match="its own golden outputs"):
        write_bundle(tmp_path / "never.epk", manifest, files)
    assert not (tmp_path / "never.epk").exists()
    assert sha256_bytes(files[first.file]) == first.sha256


def _grid_step(values: np.ndarray) -> float:
    """Smallest gap between distinct values of one output element over many inputs."""
    return float(min(np.diff(np.unique(values[:, j])).min() for j in range(values.shape[1])))


def test_int8_tolerance_allows_a_few_output_quantization_steps(variant_bundles, fashion_test) -> None:
    """Kernels of other CPUs round requantizations differently: the golden check must allow several steps."""
    x = (fashion_test[0][:60, :, :, None] / 255).astype(np.float32)
    path = variant_bundles[ORDERS[0]]
    for backend in LADDERS:
        with load(path, backend=backend) as session:
            out = np.concatenate([session.run(x[i:i + 1])[0] for i in range(len(x))])
            atol = session.model.golden.tolerance[0].atol
        assert atol >= 3 * _grid_step(out) * 0.999, (backend, atol, _grid_step(out))


def test_golden_check_holds_under_an_emulated_cpu_without_avx(bundle_factory) -> None:
    result = emulated_golden_errors(bundle_factory("full-int8"), cpu="Nehalem")
    assert not result["features"]["AVX2"] and result["features"]["SSE42"], "qemu hid AVX2 from the runtimes"
    assert {r["kernels"] for r in result["rows"]} == {"xnnpack", "reference"}
    assert all(r["ok"] for r in result["rows"]), json.dumps(result["rows"])


def test_device_tests_pass_under_an_emulated_cpu_without_avx(variant_bundles) -> None:
    path = variant_bundles[ORDERS[1]]  # onnx first: load() picks litert on rpi4, the suite runs the .tflite
    assert run_suite_x86(path, SuiteOptions(stability_runs=20), cpu="Nehalem", timeout=600) == 0


def test_unknown_emulated_cpu_lists_the_usual_ones() -> None:
    with pytest.raises(EmulationError, match="Nehalem"):
        x86_command(["-c", "pass"], cpu="Pentium-9000")
