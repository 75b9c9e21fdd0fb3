"""One precision end to end: export → load in real LiteRT → compare with the source → golden data."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.runtimes.backends import get_backend
from edgepack.runtimes.backends.base import DELEGATE_ERRORS
from edgepack.runtimes.backends.tflite_common import TFLiteEngine
from edgepack.runtimes.ladder import run_golden
from edgepack.runtimes.manifest import Golden, TensorSpec, Tolerance
from edgepack.runtimes.serde import to_json

from edgepack.converters.errors import ConversionError
from edgepack.runtimes.recipe import Recipe
from edgepack.converters.formats.tflite.source import SourceModel
from edgepack.converters.formats.tflite.export import export_tflite
from edgepack.converters.formats.tflite.inspect import summarize
from edgepack.converters.validate import Thresholds, Validation, agreement, check, run_batch

#: Smallest golden tolerance, relative to the largest golden magnitude, by precision.
#: Calibration samples also run through both models to judge fidelity (besides the held-back ones).
VALIDATION_CALIBRATION_SAMPLES = 100
RELATIVE_FLOOR = {"fp32": 1e-4, "fp16": 1e-3, "dynamic_int8": 5e-3, "full_int8": 1e-2, "int16x8": 1e-2}


@dataclass
class ModelArtifact:
    """A converted, validated model ready to be written into a bundle."""

    data: bytes
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    golden_inputs: list[np.ndarray]
    golden_outputs: list[np.ndarray]
    tolerance: tuple[Tolerance, ...]
    requires: dict[str, Any]
    validation: Validation | None
    report: dict[str, Any] = field(default_factory=dict)

    def golden(self, files: Sequence[str]) -> Golden:
        """Manifest golden entry for these output file names."""
        return Golden(outputs=tuple(files), tolerance=self.tolerance)


def open_litert(data: bytes, *, delegate: str = "xnnpack") -> TFLiteEngine:
    """Load model bytes in real ai-edge-litert; a model that fails to prepare is a ConversionError."""
    try:
        engine = get_backend("litert").open(data, delegate=delegate, num_threads=None)
    except DELEGATE_ERRORS as exc:
        raise ConversionError(
            f"the model does not load in ai-edge-litert ({type(exc).__name__}: {exc}); a model with custom or "
            "Select-TF (Flex) ops needs a runtime that registers them — otherwise try another recipe."
        ) from exc
    assert isinstance(engine, TFLiteEngine)
    return engine


def signature_order(engine: TFLiteEngine, source: SourceModel) -> tuple[list[int], list[str]]:
    """For each engine input, its index in ``source.inputs``; for each engine output, the source name."""
    interp = engine.raw_interpreter()
    n_in, n_out = len(engine.inputs), len(engine.outputs)
    if not source.inputs or "serving_default" not in interp.get_signature_list():
        return list(range(n_in)), [f"output_{k}" for k in range(n_out)]
    runner = interp.get_signature_runner("serving_default")
    by_index_in = {d["index"]: name for name, d in runner.get_input_details().items()}
    by_index_out = {d["index"]: name for name, d in runner.get_output_details().items()}
    names = [i.name for i in source.inputs]
    in_idx = [d["index"] for d in interp.get_input_details()]
    out_idx = [d["index"] for d in interp.get_output_details()]
    return [names.index(by_index_in[i]) for i in in_idx], [by_index_out[i] for i in out_idx]


def golden_tolerance(engine: TFLiteEngine, data: bytes, golden_inputs: list[np.ndarray],
                     golden_outputs: list[np.ndarray], precision: str) -> tuple[Tolerance, ...]:
    """Tolerance per output: a floor by precision, widened to 4x the XNNPACK-vs-reference-kernel gap."""
    cpu = open_litert(data, delegate="cpu")
    ref = run_golden(cpu, golden_inputs)
    cpu.close()
    tolerances = []
    for spec, g, r in zip(engine.outputs, golden_outputs, ref):
        magnitude = max(1.0, float(np.max(np.abs(g))) if g.size else 1.0)
        floor = RELATIVE_FLOOR.get(precision, 1e-2) * magnitude
        if spec.quantization is not None:
            floor = max(floor, 1.01 * spec.quantization.scale)
        gap = float(np.max(np.abs(g.astype(np.float64) - r))) if g.size else 0.0
        tolerances.append(Tolerance(atol=float(max(floor, 4 * gap)), rtol=0.0))
    return tuple(tolerances)


def build_tflite(
    source: SourceModel,
    recipe: Recipe,
    *,
    calibration: Sequence[Sequence[np.ndarray]],
    held_back: Sequence[Sequence[np.ndarray]],
    golden_sample: Sequence[np.ndarray] | None,
    thresholds: Thresholds | None = None,
) -> ModelArtifact:
    """Convert (or take as is), load in LiteRT, validate against the source, and make golden data."""
    t0 = time.perf_counter()
    data = source.tflite_bytes if source.kind == "tflite" else export_tflite(source, recipe, calibration=calibration)
    assert data is not None
    convert_s = time.perf_counter() - t0
    summary = summarize(data)
    engine = open_litert(data)
    in_order, out_names = signature_order(engine, source)
    if golden_sample is None:
        rng = np.random.default_rng(0)
        golden_sample = [rng.random([1 if d == -1 else d for d in s.shape]).astype(np.float32)
                         if np.dtype(s.dtype).kind == "f" or s.quantization else
                         np.zeros([1 if d == -1 else d for d in s.shape], s.dtype) for s in engine.inputs]
        in_order = list(range(len(engine.inputs)))
    from edgepack.runtimes.tensors import to_model_dtype

    golden_inputs = [to_model_dtype(np.asarray(golden_sample[j]), spec) for j, spec in zip(in_order, engine.inputs)]
    golden_outputs = run_golden(engine, golden_inputs)
    t1 = time.perf_counter()
    validation = None
    if source.kind != "tflite":
        # Fidelity to the source: held-back samples plus calibration samples (agreement, not accuracy).
        samples = ([list(golden_sample)] if golden_sample is not None else []) + list(held_back)
        samples += list(calibration[:VALIDATION_CALIBRATION_SAMPLES])
        got = run_batch(engine, samples, in_order)
        refs = [source.predict(list(s)) for s in samples]
        agreements = [
            agreement(name, np.concatenate([r[name] for r in refs], axis=0), g) for name, g in zip(out_names, got)
        ]
        validation = Validation(samples=len(samples), outputs=agreements,
                                failures=check(agreements, precision=recipe.precision.value,
                                              samples=len(samples), thresholds=thresholds))
    tolerance = golden_tolerance(engine, data, golden_inputs, golden_outputs, summary.precision)
    artifact = ModelArtifact(
        data=data, precision=summary.precision, inputs=engine.inputs, outputs=engine.outputs,
        golden_inputs=golden_inputs, golden_outputs=golden_outputs, tolerance=tolerance,
        requires={"runtime": "tflite", "ops": summary.ops, "custom_ops": list(summary.custom_ops)},
        validation=validation,
        report={
            "precision": summary.precision,
            "bytes": len(data),
            "convert_seconds": round(convert_s, 3),
            "validate_seconds": round(time.perf_counter() - t1, 3),
            "xnnpack_partitions": engine.delegated_partitions,
            "validation": to_json(validation) if validation else None,
            "tensor_types": summary.tensor_types,
        },
    )
    engine.close()
    if summary.custom_ops:
        artifact.report["warning"] = f"custom ops {list(summary.custom_ops)} need a runtime that registers them"
    return artifact
