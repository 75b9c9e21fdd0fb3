"""One ONNX precision end to end: quantize → load in real ONNX Runtime → compare with the source → golden data.

:func:`build_onnx` is the ONNX twin of :func:`~edgepack.converters.formats.tflite.pipeline.build_tflite` and returns
the same :class:`~edgepack.converters.formats.tflite.pipeline.ModelArtifact`, so ``package.assemble`` and the
runtime treat both formats alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgepack.runtimes.backends import get_backend
from edgepack.runtimes.backends.base import DELEGATE_ERRORS, Engine
from edgepack.runtimes.backends.onnxruntime import GraphOptimization, OnnxRuntimeBackend, OrtEngine, OrtOptions
from edgepack.runtimes.errors import ModelLoadError
from edgepack.runtimes.ladder import run_golden
from edgepack.runtimes.manifest import Preprocessing, Tolerance
from edgepack.runtimes.serde import to_json
from edgepack.runtimes.tensors import to_model_dtype

from edgepack.converters.calibration import Calibration, collect
from edgepack.converters.errors import ConversionError
from edgepack.converters.formats.onnx.inspect import summarize
from edgepack.converters.formats.onnx.quantize import quantize
from edgepack.converters.formats.onnx.source import MAX_MODEL_BYTES, OnnxSource
from edgepack.runtimes.recipe import ModelFormat, Recipe
from edgepack.converters.formats.tflite.pipeline import RELATIVE_FLOOR, ModelArtifact
from edgepack.converters.validate import Thresholds, Validation, agreement, check, run_batch

#: Runs per latency figure in report.json (single thread, golden input, after 3 warm-up runs).
LATENCY_RUNS = 20


def open_ort(data: bytes, *, level: GraphOptimization = GraphOptimization.ALL, num_threads: int | None = None,
             what: str = "the converted model") -> OrtEngine:
    """Load model bytes in real ONNX Runtime (CPU); a model it cannot load is a :class:`ConversionError`."""
    backend = get_backend("onnxruntime")
    assert isinstance(backend, OnnxRuntimeBackend)
    backend.configure(OrtOptions(graph_optimization=level))
    try:
        engine = backend.open(data, delegate="cpu", num_threads=num_threads)
    except (ModelLoadError, *DELEGATE_ERRORS) as exc:
        raise ConversionError(f"{what} does not load in onnxruntime ({exc}); this recipe produced a model the "
                              "runtime cannot prepare — try another recipe or exclude the failing nodes.") from exc
    assert isinstance(engine, OrtEngine)
    return engine


def calibration_samples(source: OnnxSource, calibration: Calibration, *, preprocessing: Preprocessing | None,
                        limit: int, progress: bool = False) -> list[list[np.ndarray]]:
    """Calibration data (numpy, :class:`ImageFolder`, iterable) as batch-of-one samples for ``source``."""
    return collect(calibration, shapes=[i.shape for i in source.inputs], dtypes=[i.dtype for i in source.inputs],
                   preprocessing=preprocessing, limit=limit, progress=progress)


def _golden_sample(engine: Engine, golden_sample: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    if golden_sample is not None:
        return [to_model_dtype(np.asarray(x), spec) for x, spec in zip(golden_sample, engine.inputs)]
    rng = np.random.default_rng(0)
    arrays = []
    for spec in engine.inputs:
        if -1 in spec.shape[1:]:
            raise ConversionError(f"input {spec.name!r} has dynamic dimensions {list(spec.shape)}; pass calibration "
                                  "data so edgepack has a real input to make golden data from.")
        shape = [1, *spec.shape[1:]] if spec.shape else []
        kind = np.dtype(spec.dtype).kind
        arrays.append(rng.random(shape).astype(spec.dtype) if kind == "f" else np.zeros(shape, spec.dtype))
    return arrays


def golden_tolerance(engine: OrtEngine, data: bytes, golden_inputs: list[np.ndarray],
                     golden_outputs: list[np.ndarray], precision: str) -> tuple[Tolerance, ...]:
    """Tolerance per output: a floor by precision, widened to 4x the gap to ORT without graph optimizations.

    Fused and integer kernels (ORT_ENABLE_ALL) versus the plain reference kernels (ORT_DISABLE_ALL) show how
    far another CPU's kernels may drift.
    """
    plain = open_ort(data, level=GraphOptimization.DISABLE)
    ref = run_golden(plain, golden_inputs)
    plain.close()
    tolerances = []
    for g, r in zip(golden_outputs, ref):
        magnitude = max(1.0, float(np.max(np.abs(g))) if g.size else 1.0)
        floor = RELATIVE_FLOOR.get(precision, 1e-2) * magnitude
        gap = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if g.size else 0.0
        tolerances.append(Tolerance(atol=float(max(floor, 4 * gap)), rtol=0.0))
    return tuple(tolerances)


def median_latency_ms(data: bytes, inputs: list[np.ndarray], *, runs: int = LATENCY_RUNS) -> float:
    """Median single-thread latency of one run in ONNX Runtime (CPU), after 3 warm-up runs."""
    engine = open_ort(data, num_threads=1)
    try:
        for _ in range(3):
            engine.run(inputs)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            engine.run(inputs)
            times.append(time.perf_counter() - t0)
    finally:
        engine.close()
    return round(float(np.median(times)) * 1e3, 4)


def build_onnx(
    source: OnnxSource,
    recipe: Recipe,
    *,
    calibration: Sequence[Sequence[np.ndarray]],
    held_back: Sequence[Sequence[np.ndarray]],
    golden_sample: Sequence[np.ndarray] | None,
    thresholds: Thresholds | None = None,
) -> ModelArtifact:
    """Quantize per ``recipe``, load in ONNX Runtime, validate against the source, and make golden data.

    The artifact's ``validation`` lists failed rules; the caller raises on them (as for TFLite).

    Raises:
        ConfigError, CalibrationError, ConversionError.
    """
    if recipe.format is not ModelFormat.ONNX:
        raise ConversionError(f"build_onnx needs an ONNX recipe (format=onnx), got {recipe.format.value}; "
                              "use recipes.onnx_qdq_int8() / get_recipe(name, format='onnx').")
    t0 = time.perf_counter()
    model, quant_info = quantize(source.model, recipe, calibration=calibration, inputs=source.inputs)
    data = bytes(model.SerializeToString())
    if len(data) > MAX_MODEL_BYTES:
        raise ConversionError(f"the {recipe.precision.value} model is {len(data)} bytes; bundles hold up to 2 GB.")
    convert_s = time.perf_counter() - t0
    summary = summarize(model)
    engine = open_ort(data)
    golden_inputs = _golden_sample(engine, golden_sample)
    golden_outputs = run_golden(engine, golden_inputs)
    t1 = time.perf_counter()
    samples = [list(golden_sample), *held_back] if golden_sample is not None else list(held_back)
    validation = None
    if samples:
        got = run_batch(engine, samples, list(range(len(engine.inputs))))  # type: ignore[arg-type]
        refs = [source.predict(list(s)) for s in samples]
        names = [s.name for s in engine.outputs]
        agreements = []
        for k, (name, g) in enumerate(zip(names, got)):
            key = name if name in refs[0] else list(refs[0])[k]
            agreements.append(agreement(name, np.concatenate([r[key] for r in refs], axis=0), g))
        validation = Validation(samples=len(samples), outputs=agreements,
                                failures=check(agreements, precision=recipe.precision.value, samples=len(samples),
                                              thresholds=thresholds))
    validate_s = time.perf_counter() - t1
    tolerance = golden_tolerance(engine, data, golden_inputs, golden_outputs, summary.precision)
    ort_version = get_backend("onnxruntime").version()
    fp32 = source.model_bytes()
    fp32_engine = open_ort(fp32, what="the fp32 source")
    fp32_inputs = _golden_sample(fp32_engine, golden_sample)
    fp32_engine.close()
    report: dict[str, Any] = {
        "format": "onnx",
        "precision": summary.precision,
        "recipe": recipe.name or recipe.precision.value,
        "bytes": len(data),
        "fp32_bytes": len(fp32),
        "size_ratio": round(len(data) / max(1, len(fp32)), 4),
        "convert_seconds": round(convert_s, 3),
        "validate_seconds": round(validate_s, 3),
        "latency_ms_median": median_latency_ms(data, golden_inputs),
        "fp32_latency_ms_median": median_latency_ms(fp32, fp32_inputs),
        "latency_note": f"host CPU, onnxruntime {ort_version}, 1 thread, {LATENCY_RUNS} runs, batch 1",
        "providers": list(engine.providers),
        "node_assignment": engine.node_assignment,
        "quantization": quant_info,
        "opset": summary.opset,
        "ops": summary.ops,
        "initializer_types": summary.initializer_types,
        "validation": to_json(validation) if validation else None,
        "source_provenance": source.provenance,
    }
    report["latency_ratio_vs_fp32"] = round(report["latency_ms_median"] / max(report["fp32_latency_ms_median"],
                                                                                1e-9), 3)
    artifact = ModelArtifact(
        data=data, precision=summary.precision, inputs=engine.inputs, outputs=engine.outputs,
        golden_inputs=golden_inputs, golden_outputs=golden_outputs, tolerance=tolerance,
        requires={"runtime": "onnxruntime", "opset": summary.opset, "domains": sorted(summary.opset),
                  "ir_version": summary.ir_version, "custom_domains": summary.custom_domains,
                  "validated_with": f"onnxruntime {ort_version}"},
        validation=validation, report=report,
    )
    engine.close()
    if summary.custom_domains:
        report["warning"] = f"ops from {summary.custom_domains} need an onnxruntime that registers them"
    return artifact
