"""One recipe end to end, for every format alike: export → load in the real runtime → golden data and its
tolerance → validation against the source. Formats differ only behind :class:`~.formats.base.ModelFormatPlugin`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.runtimes.backends.base import Engine
from edgepack.runtimes.bundle import MAX_FILE_BYTES
from edgepack.runtimes.ladder import run_golden
from edgepack.runtimes.manifest import Golden, TensorSpec, Tolerance
from edgepack.runtimes.recipe import Recipe
from edgepack.runtimes.serde import to_json
from edgepack.runtimes.tensors import to_model_dtype

from .errors import ConversionError
from .formats.base import ModelFormatPlugin, Source
from .validate import Thresholds, Validation, agreement, check, run_batch

#: Bundles hold one file per model, capped at 2 GB (and protobuf cannot serialise more).
MAX_MODEL_BYTES = MAX_FILE_BYTES


@dataclass
class ModelArtifact:
    """A converted, validated model ready to be written into a bundle."""

    data: bytes
    format: str
    extension: str
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


def build_artifact(
    fmt: ModelFormatPlugin,
    source: Source,
    recipe: Recipe,
    *,
    calibration: Sequence[Sequence[np.ndarray]],
    held_back: Sequence[Sequence[np.ndarray]],
    golden_sample: Sequence[np.ndarray] | None,
    thresholds: Thresholds | None = None,
) -> ModelArtifact:
    """Export ``recipe`` in ``fmt``, load it in the real runtime, validate against the source, make golden data.

    The artifact's ``validation`` lists failed rules; the caller decides whether to raise on them.

    Raises:
        ConfigError, CalibrationError, ConversionError.
    """
    if recipe.format != fmt.name:
        raise ConversionError(f"building {fmt.name} needs an {fmt.name.upper()} recipe (format={fmt.name!r}), not "
                              f"the {recipe.format} recipe {recipe.label!r}; use get_recipe(name, "
                              f"format={fmt.name!r}).")
    t0 = time.perf_counter()
    data, export_report = fmt.export(source, recipe, calibration=calibration)
    if len(data) > MAX_MODEL_BYTES:
        raise ConversionError(f"the {recipe.precision.value} model is {len(data)} bytes; bundles hold up to 2 GB.")
    convert_s = time.perf_counter() - t0
    engine = fmt.open(data)
    try:
        described = fmt.describe(data, engine)
        in_order, out_names = fmt.io_order(engine, source)
        if golden_sample is None:
            golden_sample, in_order = _random_sample(engine), list(range(len(engine.inputs)))
        golden_inputs = [to_model_dtype(np.asarray(golden_sample[j]), spec) for j, spec in zip(in_order, engine.inputs)]
        golden_outputs = run_golden(engine, golden_inputs)
        t1 = time.perf_counter()
        validation = None
        if fmt.can_validate(source):
            samples = [list(golden_sample), *held_back, *calibration[: fmt.validation_calibration_samples]]
            validation = _validate(engine, source, samples, in_order, out_names, recipe, thresholds)
        validate_s = time.perf_counter() - t1
        tolerance = golden_tolerance(fmt, engine, data, golden_inputs, golden_outputs, described.precision)
        inputs, outputs = engine.inputs, engine.outputs
    finally:
        engine.close()
    report: dict[str, Any] = {
        "format": fmt.name,
        "precision": described.precision,
        "bytes": len(data),
        "convert_seconds": round(convert_s, 3),
        "validate_seconds": round(validate_s, 3),
        **export_report,
        **described.report,
        "validation": to_json(validation) if validation else None,
        **fmt.extra_report(source, data, [np.asarray(golden_sample[j]) for j in in_order]),
    }
    if described.warning:
        report["warning"] = described.warning
    return ModelArtifact(
        data=data, format=fmt.name, extension=fmt.extension, precision=described.precision, inputs=inputs,
        outputs=outputs, golden_inputs=golden_inputs, golden_outputs=golden_outputs, tolerance=tolerance,
        requires=described.requires, validation=validation, report=report,
    )


def _random_sample(engine: Engine) -> list[np.ndarray]:
    """A seeded input of batch 1 when there is no calibration data (float inputs random, others zeros)."""
    rng = np.random.default_rng(0)
    arrays = []
    for spec in engine.inputs:
        if -1 in spec.shape[1:]:
            raise ConversionError(f"input {spec.name!r} has dynamic dimensions {list(spec.shape)}; pass calibration "
                                  "data so edgepack has a real input to make golden data from.")
        shape = [1, *spec.shape[1:]] if spec.shape else []
        floating = np.dtype(spec.dtype).kind == "f" or spec.quantization is not None
        arrays.append(rng.random(shape).astype(np.float32) if floating else np.zeros(shape, spec.dtype))
    return arrays


def _validate(engine: Engine, source: Source, samples: list[list[np.ndarray]], in_order: list[int],
              out_names: list[str], recipe: Recipe, thresholds: Thresholds | None) -> Validation:
    """Agreement of every output with the source's on ``samples`` (fidelity, not accuracy)."""
    got = run_batch(engine, samples, in_order)
    refs = [source.predict(list(s)) for s in samples]
    agreements = []
    for k, (name, g) in enumerate(zip(out_names, got)):
        key = name if name in refs[0] else list(refs[0])[k]
        agreements.append(agreement(name, np.concatenate([r[key] for r in refs], axis=0), g))
    return Validation(samples=len(samples), outputs=agreements,
                      failures=check(agreements, precision=recipe.precision.value, samples=len(samples),
                                     thresholds=thresholds))


def golden_tolerance(fmt: ModelFormatPlugin, engine: Engine, data: bytes, golden_inputs: list[np.ndarray],
                     golden_outputs: list[np.ndarray], precision: str) -> tuple[Tolerance, ...]:
    """Tolerance per output: a floor by precision (at least one quantization step for quantized outputs),
    widened to 4x the gap between the runtime's default kernels and its plain reference kernels — how far
    another CPU's kernels may drift."""
    plain = fmt.open(data, reference=True)
    try:
        ref = run_golden(plain, golden_inputs)
    finally:
        plain.close()
    tolerances = []
    for spec, g, r in zip(engine.outputs, golden_outputs, ref):
        magnitude = max(1.0, float(np.max(np.abs(g))) if g.size else 1.0)
        floor = fmt.relative_floor.get(precision, 1e-2) * magnitude
        if spec.quantization is not None:
            floor = max(floor, 1.01 * spec.quantization.scale)
        gap = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if g.size else 0.0
        tolerances.append(Tolerance(atol=float(max(floor, 4 * gap)), rtol=0.0))
    return tuple(tolerances)
