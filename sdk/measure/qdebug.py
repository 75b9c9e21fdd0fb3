"""Which layers lose the most when quantized — and which to keep in float.

TFLite: ``tf.lite.experimental.QuantizationDebugger`` (per-op error of each quantized op given quantized
inputs). ONNX: ``onnxruntime.quantization.qdq_loss_debug`` (activation and weight SNR, and float-vs-quantized
drift at every tensor). Both give a ranked :class:`QuantDebugReport`; ``suggested_float`` lists the layers to
exclude from quantization, and (with ``verify=True``) the output SNR with those layers kept in float is measured.
Both quantize with the converters' own code and a real recipe (a bundle's own, or ``recipe=``), so what is
analysed is what ``convert`` makes.

>>> report = debug_quantization("fashion_cnn.keras", "fashion-mnist:train", limit=100)
>>> print(report.table(top=10)); report.suggested_float
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.measure.data import DataSource, open_data
from edgepack.measure.runners import Runner, RunOptions, open_runner, prepare
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.errors import EdgepackError
from edgepack.runtimes.manifest import ModelEntry, Preprocessing
from edgepack.runtimes.recipe import Precision, Recipe, get_recipe
from edgepack.runtimes.serde import to_json

#: Layers whose local quantization SNR is below this are suggested for float (int8 rounding alone gives ~40 dB).
DEFAULT_MIN_SNR_DB = 25.0


class QuantDebugError(EdgepackError):
    """Per-layer debugging cannot run on this model (wrong precision, missing source, unsupported format)."""


@dataclass(frozen=True)
class LayerError:
    """Quantization error of one layer; ``snr_db`` (higher is better) ranks the layers.

    ``snr_db`` is local: TFLite compares each quantized op with the float op on the same (dequantized) inputs;
    ONNX combines the SNR of the layer's output activation and of its weights. ``cumulative_snr_db`` (ONNX)
    compares the quantized model's tensor with the float model's. ``rmse_over_scale`` (TFLite) is ≈0.29 for
    pure rounding error; much more means the op amplifies quantization noise.
    """

    name: str
    op: str
    snr_db: float
    rmse_over_scale: float | None = None
    max_abs_error: float | None = None
    cumulative_snr_db: float | None = None
    weight_snr_db: float | None = None
    elements: int | None = None


@dataclass(frozen=True)
class QuantDebugReport:
    """Ranked per-layer quantization errors (worst first) and the layers suggested to stay in float."""

    method: str
    model: str
    samples: int
    layers: tuple[LayerError, ...]
    suggested_float: tuple[str, ...]
    min_snr_db: float
    output_snr_db: float | None = None
    output_snr_db_kept_float: float | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values."""
        return to_json(self)  # type: ignore[no-any-return]

    def table(self, *, top: int = 20) -> str:
        """The ranked table as Markdown."""
        rows = ["| rank | layer | op | SNR dB | RMSE/scale | cumulative SNR dB | weight SNR dB |",
                "| ---: | --- | --- | ---: | ---: | ---: | ---: |"]
        for k, layer in enumerate(self.layers[:top], 1):
            cells = [_f(layer.snr_db, ".1f"), _f(layer.rmse_over_scale, ".3f"), _f(layer.cumulative_snr_db, ".1f"),
                     _f(layer.weight_snr_db, ".1f")]
            mark = " **(float)**" if layer.name in self.suggested_float else ""
            rows.append(f"| {k} | `{short_name(layer.name)}`{mark} | {layer.op} | " + " | ".join(cells) + " |")
        lines = [f"{self.method} on {self.model}, {self.samples} samples; layers below {self.min_snr_db:g} dB "
                 "are suggested for float.", "", *rows, ""]
        if self.suggested_float:
            lines.append("Keep in float: " + ", ".join(f"`{short_name(n)}`" for n in self.suggested_float))
        else:
            lines.append("No layer is below the threshold: nothing needs to stay in float.")
        if self.output_snr_db is not None:
            after = (f"; with the suggested layers in float {self.output_snr_db_kept_float:.1f} dB"
                     if self.output_snr_db_kept_float is not None else "")
            lines.append(f"Output SNR vs float: {self.output_snr_db:.1f} dB{after}.")
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)


def _f(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def short_name(name: str) -> str:
    """First part of a fused TFLite tensor name (``a/Relu;a/BiasAdd;...`` → ``a/Relu``)."""
    return name.split(";", 1)[0]


def snr_db(reference: np.ndarray, value: np.ndarray) -> float:
    """Signal-to-noise ratio of ``value`` against ``reference`` in dB (inf when identical)."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(value, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-30) / noise)


def suggest(layers: Sequence[LayerError], *, min_snr_db: float, max_layers: int) -> tuple[str, ...]:
    """Names of the worst layers below ``min_snr_db`` (at most ``max_layers``), worst first."""
    return tuple(layer.name for layer in layers if layer.snr_db < min_snr_db)[:max_layers]


def debug_quantization(
    model: Any,
    data: DataSource,
    *,
    source: Any = None,
    quantized: str | os.PathLike[str] | None = None,
    recipe: str | Recipe | None = None,
    preprocessing: Preprocessing | None = None,
    limit: int = 100,
    min_snr_db: float = DEFAULT_MIN_SNR_DB,
    max_suggested: int = 5,
    verify: bool = True,
) -> QuantDebugReport:
    """Rank layers by quantization error and suggest which to keep in float.

    Args:
        model: a float source (``.keras``/SavedModel/``keras.Model`` → TFLite int8; ``.onnx`` → ONNX QDQ), or a
            full-int8 TFLite / QDQ ONNX bundle (then ``source`` is the float model it was made from).
        data: calibration / debug samples (same kinds as :func:`edgepack.measure.evaluate`; images use the bundle's
            pre-processing or ``preprocessing``).
        source: the float model of a bundle.
        quantized: an existing QDQ ``.onnx`` (or ONNX ``.epk``) of ``model`` (ONNX only); default: quantized here.
        recipe: how to quantize here and re-quantize with the suggested layers in float, with the converters' own
            code (name or :class:`Recipe`); default: a bundle's own recipe, else ``qdq-int8`` resolved for this
            host (ONNX) or ``full-int8`` (TFLite).
        preprocessing: how images become tensors when no bundle gives the spec.
        limit: samples used.
        min_snr_db: layers below this local SNR are suggested for float.
        max_suggested: at most this many suggestions.
        verify: re-quantize with the suggested layers in float and measure the output SNR.

    Raises:
        QuantDebugError, EvalDataError, InputSpecError, SourceModelError.
    """
    plan = _resolve(model, source, preprocessing, recipe, quantized)
    runner = open_runner(plan.float_model, preprocessing=plan.preprocessing, options=RunOptions())
    try:
        dataset = open_data(data, limit=limit)
        samples = [prepare(s, dataset.color, runner)[0].astype(np.float32) for s, _ in dataset]
        if plan.kind == "tflite":
            from edgepack.measure.qdebug_tflite import debug_tflite

            result = debug_tflite(runner, samples, recipe=plan.recipe, min_snr_db=min_snr_db,
                                  max_suggested=max_suggested, verify=verify)
        else:
            from edgepack.measure.qdebug_onnx import debug_onnx

            result = debug_onnx(Path(os.fspath(plan.float_model)), runner, samples, quantized=plan.given,
                                recipe=plan.recipe, min_snr_db=min_snr_db, max_suggested=max_suggested,
                                verify=verify)
    finally:
        runner.close()
    name = Path(os.fspath(model)).name if isinstance(model, (str, os.PathLike)) else runner.name
    return QuantDebugReport(model=name, min_snr_db=min_snr_db, notes=plan.notes + result.notes,
                            method=result.method, samples=result.samples, layers=result.layers,
                            suggested_float=result.suggested_float, output_snr_db=result.output_snr_db,
                            output_snr_db_kept_float=result.output_snr_db_kept_float)


@dataclass(frozen=True)
class GivenModel:
    """A quantized model to analyse instead of quantizing here, and where it came from (``bundle`` or ``file``)."""

    data: bytes
    origin: str


@dataclass(frozen=True)
class _Plan:
    """What to debug: the float model, the format's debugger, pre-processing, recipe, a given quantized model."""

    float_model: Any
    kind: str
    preprocessing: Preprocessing | None
    recipe: Recipe
    given: GivenModel | None = None
    notes: tuple[str, ...] = ()


def _is_epk(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".epk")


def _resolve(model: Any, source: Any, pre: Preprocessing | None, recipe: str | Recipe | None,
             quantized: str | os.PathLike[str] | None) -> _Plan:
    """What :func:`debug_quantization` was asked to debug, checked before any work."""
    if _is_epk(model):
        bundle = read_bundle(os.fspath(model))
        entry = bundle.manifest.models[0]
        name = Path(os.fspath(model)).name
        if source is None:
            raise QuantDebugError(
                f"{name}: per-layer debugging compares with the float model it was made from "
                f"({bundle.manifest.source.file}); pass it as source=... (CLI: --source)."
            )
        if entry.format == "tflite" and entry.precision != "full_int8":
            why = {"fp32": "it is not quantized", "fp16": "fp16 keeps float math",
                   "dynamic_int8": "dynamic-range models quantize only weights (activations stay float)",
                   "int16x8": "TFLite's QuantizationDebugger analyses int8 quantization only"}
            raise QuantDebugError(f"{entry.file} is {entry.precision}: no per-layer int8 analysis "
                                  f"({why.get(entry.precision, 'unsupported precision')}).")
        if entry.format == "onnx" and entry.precision not in ("full_int8", "int16x8"):
            why_onnx = {"fp32": "it is not quantized", "fp16": "fp16 keeps float math",
                        "dynamic_int8": "dynamic quantization has no QDQ pairs (activations are quantized at run time)"}
            raise QuantDebugError(f"{entry.file} is {entry.precision}: no per-layer QDQ analysis "
                                  f"({why_onnx.get(entry.precision, 'unsupported precision')}).")
        if recipe is not None or quantized is not None:
            raise QuantDebugError(f"{name} is analysed as it is, with the recipe in its manifest; drop "
                                  f"{'recipe=' if recipe is not None else 'quantized='}.")
        notes = ("the bundle's calibration data is not stored in it: layers were analysed on a re-quantization "
                 "of the source with the given data",) if entry.format == "tflite" else ()
        kind = "tflite" if entry.format == "tflite" else "onnx"
        if kind == "onnx" and not str(source).lower().endswith(".onnx"):
            raise QuantDebugError("an ONNX bundle is debugged against its float .onnx model; pass that as source=.")
        given = GivenModel(bundle.model_bytes(entry), "bundle") if kind == "onnx" else None
        return _Plan(source, kind, bundle.manifest.preprocessing, bundle_recipe(entry), given, notes)
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".onnx"):
        if quantized is None:
            return _Plan(model, "onnx", pre, _recipe_for(recipe, "onnx"))
        if not _is_epk(quantized):
            try:
                return _Plan(model, "onnx", pre, _recipe_for(recipe, "onnx"),
                             GivenModel(Path(os.fspath(quantized)).read_bytes(), "file"))
            except OSError as exc:
                raise QuantDebugError(f"cannot read the quantized model {quantized}: {exc}") from exc
        if recipe is not None:
            raise QuantDebugError("quantized= is a bundle: it is analysed with the recipe in its manifest; "
                                  "drop recipe=.")
        bundle = read_bundle(os.fspath(quantized))
        entry = bundle.manifest.model("onnx")
        return _Plan(model, "onnx", pre, bundle_recipe(entry), GivenModel(bundle.model_bytes(entry), "bundle"))
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".tflite"):
        raise QuantDebugError("a .tflite file is already converted; pass the float source (.keras / SavedModel).")
    if quantized is not None:
        raise QuantDebugError("quantized= is for ONNX models (a QDQ .onnx or ONNX bundle of a float .onnx); the "
                              "TFLite debugger re-quantizes the Keras / SavedModel source itself: drop it.")
    return _Plan(model, "tflite", pre, _recipe_for(recipe, "tflite"))


def _recipe_for(recipe: str | Recipe | None, kind: str) -> Recipe:
    """The caller's recipe or the default one for ``kind``; ONNX recipes resolved for this host's CPU."""
    chosen = get_recipe(recipe if recipe is not None else ("qdq-int8" if kind == "onnx" else "full-int8"),
                        format=kind)
    if kind == "onnx":
        chosen = chosen.resolved_for(platform.machine())
    allowed = (Precision.FULL_INT8, Precision.INT16X8) if kind == "onnx" else (Precision.FULL_INT8,)
    if chosen.precision not in allowed:
        what = "static QDQ (qdq-int8, qdq-int16x8)" if kind == "onnx" else "full int8 (full-int8)"
        raise QuantDebugError(f"recipe {chosen.name or chosen.precision.value} is {chosen.precision.value}: "
                              f"per-layer {kind} debugging analyses {what} quantization; pass such a recipe.")
    return chosen


def bundle_recipe(entry: ModelEntry) -> Recipe:
    """The recipe a bundle's model was converted with, as its manifest records it (target choices made).

    Raises:
        QuantDebugError: the manifest records no recipe for that model.
    """
    if entry.recipe is None:
        raise QuantDebugError(f"the bundle's manifest records no recipe for {entry.file}; re-convert it with this "
                              "edgepack, or debug the float source with recipe=...")
    return entry.recipe


@dataclass(frozen=True)
class BackendResult:
    """What a backend-specific debugger returns."""

    method: str
    samples: int
    layers: tuple[LayerError, ...]
    suggested_float: tuple[str, ...]
    output_snr_db: float | None
    output_snr_db_kept_float: float | None
    notes: tuple[str, ...] = ()


def rank(layers: Sequence[LayerError]) -> tuple[LayerError, ...]:
    """Worst (lowest SNR) first."""
    return tuple(sorted(layers, key=lambda layer: (layer.snr_db, layer.name)))


def output_snr(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Lowest SNR over the model outputs (matched like :func:`edgepack.measure.evaluate` matches them)."""
    from edgepack.measure.evaluate import agreement_per_output

    return min(a.snr_db for a in agreement_per_output(reference, outputs, where="quantized model"))


def float_outputs(runner: Runner, samples: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The float model's outputs on the samples."""
    outs = [runner.run(x) for x in samples]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
