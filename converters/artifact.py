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
from edgepack.runtimes.recipe import Precision, Recipe
from edgepack.runtimes.serde import to_json
from edgepack.runtimes.tensors import to_model_dtype

from .calibration import shape_template
from .errors import CalibrationError, ConversionError
from .formats.base import ModelFormatPlugin, Source
from .validate import Thresholds, Validation, agreement, check, run_batch


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
    #: The only delegates that run the model (``ModelEntry.requires_delegates``); empty: any.
    requires_delegates: tuple[str, ...] = ()

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
    if len(data) > MAX_FILE_BYTES:
        raise ConversionError(f"the {recipe.precision.value} model is {len(data)} bytes; bundles hold up to 2 GB.")
    convert_s = time.perf_counter() - t0
    engine = fmt.open(data)
    try:
        described = fmt.describe(data, engine)
        if recipe.precision is not Precision.FP32 and fmt.can_validate(source) \
                and described.precision != recipe.precision.value:
            raise ConversionError(
                f"the {recipe.label} recipe quantized nothing: the {fmt.name} model came out {described.precision}, "
                f"not {recipe.precision.value} (e.g. its weights sit inside If/Loop subgraphs the quantizer does not "
                "enter); package it as fp32, or export the model without control flow.")
        in_order, out_names = fmt.io_order(engine, source)
        if golden_sample is None:
            golden_sample, in_order = _random_sample(engine), list(range(len(engine.inputs)))
        golden_inputs = [to_model_dtype(np.asarray(golden_sample[j]), spec) for j, spec in zip(in_order, engine.inputs)]
        try:
            golden_outputs = run_golden(engine, golden_inputs)
        except RuntimeError as exc:
            raise ConversionError(
                f"the {recipe.precision.value} model fails on its golden input (shapes "
                f"{[list(x.shape) for x in golden_inputs]}): {' '.join(str(exc).split())[:300]}; pass real samples "
                "(--calibration samples.npz, one array per input name / calibration=...) or the input shapes "
                "(--input-shape NAME=1x3x224x224 / input_shapes=...)."
            ) from exc
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
        requires=described.requires, validation=validation, report=report, requires_delegates=described.delegates,
    )


def _random_sample(engine: Engine) -> list[np.ndarray]:
    """:func:`random_sample` for the inputs of an engine (quantized inputs get float data, quantized for them)."""
    return random_sample([s.name for s in engine.inputs], [s.shape for s in engine.inputs],
                         ["float32" if s.quantization is not None else s.dtype for s in engine.inputs])


def random_sample(names: Sequence[str], shapes: Sequence[Sequence[int]], dtypes: Sequence[str]) -> list[np.ndarray]:
    """A seeded input when there are no samples: floats uniform in [0, 1), integers and booleans zeros, at the
    model's fixed dimensions (a fixed batch of 10 stays 10); a dynamic first dimension is a batch of 1.

    Raises:
        CalibrationError: another dimension is dynamic, so random data has no shape: the message names the
            inputs and the options that give one (an input shape, or real samples).
    """
    rng = np.random.default_rng(0)
    fixed = [tuple(1 if (k == 0 and d == -1) else d for k, d in enumerate(shape)) for shape in shapes]
    dynamic = [f"{n}={shape_template(s)}" for n, s, f in zip(names, shapes, fixed) if -1 in f]
    if dynamic:
        raise CalibrationError(
            f"dynamic dimensions (N) besides the batch in {', '.join(dynamic)}, so edgepack cannot make random data "
            f"to check the model with; give the sizes (--input-shape {dynamic[0]} with each N a size, repeatable; "
            "API input_shapes={name: shape}) or real samples (--calibration samples.npz, one array per input name, "
            "first axis = sample index; API calibration=...)."
        )
    arrays = []
    for shape, dtype in zip(fixed, dtypes):
        kind = np.dtype(dtype).kind
        arrays.append(rng.random(shape).astype(dtype) if kind == "f" else np.zeros(shape, dtype))
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
    """Tolerance per output that holds on any CPU the bundle may run on (docs/bundle-format.md, "Golden data
    and tolerance"): the largest of

    - a floor by precision, relative to the largest golden magnitude (``fmt.relative_floor``);
    - ``GOLDEN_STEPS`` quantization steps of the output: its scale when the output is quantized, else the step
      of the grid a dequantized int8 output moves on (measured on perturbed golden inputs) — int8 kernels of
      other CPUs (SSE4.1/AVX2/AVX-512 VNNI/AMX/Arm dot-product) round requantizations differently;
    - ``GOLDEN_GAP_FACTOR`` x the largest gap between the runtime's default kernels and its reference kernels
      over the golden input and its perturbed copies (internal requantization differences, propagated).
    """
    probes = [golden_inputs, *_perturbed(golden_inputs)]
    plain = fmt.open(data, reference=True)
    try:
        ref = [run_golden(plain, p) for p in probes]
    finally:
        plain.close()
    default = [golden_outputs, *(run_golden(engine, p) for p in probes[1:])]
    tolerances = []
    for k, (spec, g) in enumerate(zip(engine.outputs, golden_outputs)):
        magnitude = max(1.0, float(np.max(np.abs(g))) if g.size else 1.0)
        floor = fmt.relative_floor.get(precision, 1e-2) * magnitude
        values = np.stack([np.asarray(d[k], np.float64) for d in default])
        step = spec.quantization.scale if spec.quantization is not None else _grid_step(values, magnitude)
        if step:
            floor = max(floor, GOLDEN_STEPS * step)
        gap = max((float(np.max(np.abs(d[k].astype(np.float64) - r[k].astype(np.float64)))) if g.size else 0.0)
                  for d, r in zip(default, ref))
        tolerances.append(Tolerance(atol=float(max(floor, GOLDEN_GAP_FACTOR * gap)), rtol=0.0))
    return tuple(tolerances)


#: Quantization steps of an int8 output the golden check allows (kernels of other CPUs measured ≤ 1 step apart).
GOLDEN_STEPS = 3
#: Multiple of the measured default-vs-reference kernel gap the golden check allows.
GOLDEN_GAP_FACTOR = 4


def _perturbed(inputs: list[np.ndarray], *, scales: tuple[float, ...] = (0.003, 0.01, 0.03), per_scale: int = 4
               ) -> list[list[np.ndarray]]:
    """Seeded copies of the golden inputs with small noise on float inputs (none when no input is float)."""
    if not any(np.asarray(a).dtype.kind == "f" and a.size for a in inputs):
        return []
    rng = np.random.default_rng(0)
    out = []
    for s in scales:
        for _ in range(per_scale):
            out.append([a + (s * (float(np.ptp(a)) or 1.0) * rng.standard_normal(a.shape)).astype(a.dtype)
                        if a.dtype.kind == "f" and a.size else a for a in inputs])
    return out


def _grid_step(values: np.ndarray, magnitude: float) -> float | None:
    """The step of the grid the values of a dequantized output lie on (``values``: runs x output), or None."""
    flat = values.reshape(len(values), -1)
    gaps = np.concatenate([np.diff(np.unique(flat[:, j])) for j in range(flat.shape[1])])
    gaps = gaps[gaps > 1e-6 * magnitude]
    if not gaps.size:
        return None
    step = float(gaps.min())
    units = (flat - flat[0]) / step
    return step if float(np.max(np.abs(units - np.round(units)))) < 0.02 else None
