"""fp32 ONNX → fp16 / dynamic int8 / static QDQ int8 (or int16x8) with ``onnxruntime.quantization``.

Nothing here re-implements quantization: pre-processing is ``quant_pre_process``, static QDQ is
``quantize_static`` fed by a ``CalibrationDataReader`` over the same calibration samples as the TFLite path,
dynamic is ``quantize_dynamic``, fp16 is ORT's ``float16.convert_float_to_float16``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.errors import CalibrationError, ConversionError
from edgepack.converters.formats.base import InputInfo
from edgepack.converters.formats.onnx.inspect import name_nodes, summarize
from edgepack.converters.formats.onnx.prepare import (
    PreparedModel,
    default_opset,
    first_layers,
    mark_source_opset,
    prepare_float,
    resolve_exclude,
    upgrade_opset,
)
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import CalibrationMethod, IODType, Precision, Recipe

_METHODS = {CalibrationMethod.MINMAX: "MinMax", CalibrationMethod.ENTROPY: "Entropy",
            CalibrationMethod.PERCENTILE: "Percentile"}


class SampleReader:
    """``CalibrationDataReader`` over batch-of-one samples (lists of arrays in model input order)."""

    def __init__(self, names: Sequence[str], samples: Sequence[Sequence[np.ndarray]]) -> None:
        self._names = list(names)
        self._samples = samples
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Next ``{input name: array}``, or None at the end."""
        return next(self._it, None)

    def rewind(self) -> None:
        """Start again from the first sample."""
        self._it = (dict(zip(self._names, s)) for s in self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """The remaining samples (ORT's ``qdq_loss_debug.collect_activations`` iterates its reader)."""
        return self._it


def check_samples(samples: Sequence[Sequence[np.ndarray]], inputs: Sequence[InputInfo], *, what: str) -> None:
    """Raise :class:`CalibrationError` unless every sample fits the model's inputs (``-1`` = any size)."""
    if not samples:
        raise CalibrationError(f"{what} is empty; pass representative samples (100-500).")
    for k, sample in enumerate(samples):
        if len(sample) != len(inputs):
            raise CalibrationError(f"{what} sample {k} has {len(sample)} array(s); the model takes {len(inputs)} "
                                   f"({[i.name for i in inputs]}).")
        for arr, spec in zip(sample, inputs):
            fits = arr.ndim == len(spec.shape) and all(w in (-1, g) for w, g in zip(spec.shape, arr.shape))
            if not fits:
                raise CalibrationError(
                    f"{what} sample {k}: input {spec.name!r} got shape {list(arr.shape)}, the model takes "
                    f"{list(spec.shape)} (-1 = any); pass samples shaped like one model input (batch of 1) in "
                    "the model's layout, or uint8 images with a pre-processing spec."
                )


def _check_exclude(model: Any, exclude: Sequence[str]) -> None:
    names = [n.name for n in model.graph.node]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        sample = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        raise ConfigError(f"recipe.exclude names nodes the model does not have: {unknown}; its nodes are "
                          f"named like: {sample} (unnamed nodes are called <Op>_<index>).")


def quantize(
    model: Any,
    recipe: Recipe,
    *,
    calibration: Sequence[Sequence[np.ndarray]],
    inputs: Sequence[InputInfo],
) -> tuple[Any, dict[str, Any]]:
    """Apply ``recipe`` to an fp32 ``ModelProto``; return the new model and what was done (for report.json).

    Raises:
        ConfigError: ``recipe.exclude`` names unknown or folded nodes (matched against the graph after
            ``quant_pre_process``, see :mod:`.onnx_prepare`), or ``float_first_layers`` is too many.
        CalibrationError: calibration samples missing or not shaped like the inputs.
        OnnxOpsetError: the model's opset is too old for the recipe and cannot be upgraded.
        ConversionError: ONNX Runtime's quantization tools failed.

    A model whose opset is older than the recipe needs (:func:`required_opset`) is upgraded first; the report's
    ``opset_upgrade`` and the output's metadata record the original opset.
    """
    import onnx

    p = recipe.precision
    info: dict[str, Any] = {"tool": "onnxruntime.quantization", "precision": p.value}
    if p is Precision.FP32:
        if recipe.exclude:
            raise ConfigError("recipe.exclude has no meaning for fp32; remove it.")
        return model, info
    already = summarize(model).precision
    if already not in ("fp32", "fp16"):
        raise ConversionError(f"the source model is already quantized ({already}); quantize its fp32 original, "
                              "or package it as it is with onnx_fp32().")
    start = time.perf_counter()
    if p is Precision.FP16:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        info["nodes_named"] = name_nodes(work)
        _check_exclude(work, recipe.exclude)
        out = _fp16(work, recipe, info)
    else:
        model, upgraded_from = upgrade_opset(model, required_opset(recipe))
        if upgraded_from is not None:
            info["opset_upgrade"] = {"from": upgraded_from, "to": default_opset(model)}
        prepared = prepare_float(model)
        info.update(nodes_named=prepared.named, preprocess_notes=list(prepared.notes),
                    nodes_named_after_preprocess=prepared.renamed)
        excluded = _float_nodes(prepared, recipe, info)
        with tempfile.TemporaryDirectory(prefix="edgepack-onnxq-") as tmp:
            pre, dst = Path(tmp, "pre.onnx"), Path(tmp, "quant.onnx")
            onnx.save(prepared.model, str(pre))
            if p is Precision.DYNAMIC_INT8:
                _dynamic(pre, dst, recipe, info, excluded)
            elif p in (Precision.FULL_INT8, Precision.INT16X8):
                check_samples(calibration, inputs, what="calibration data")
                _static(pre, dst, recipe, info, SampleReader([i.name for i in inputs], calibration), excluded)
            else:
                raise ConfigError(f"precision {p.value} is not available for ONNX")
            out = onnx.load(str(dst))
        if upgraded_from is not None:
            mark_source_opset(out, upgraded_from)
    info["seconds"] = round(time.perf_counter() - start, 3)
    return out, info


def required_opset(recipe: Recipe) -> int:
    """The ``ai.onnx`` opset an int8 recipe's output needs: 13 for per-channel scales (``DequantizeLinear``'s
    ``axis``), else 11 (``DynamicQuantizeLinear``, QDQ fusions)."""
    return 13 if recipe.per_channel else 11


def _float_nodes(prepared: PreparedModel, recipe: Recipe, info: dict[str, Any]) -> list[str]:
    """The pre-processed names to keep float: ``recipe.exclude`` mapped onto the graph ``quant_pre_process``
    made, plus the first ``recipe.options.float_first_layers`` layers."""
    original, pre = prepared.original, prepared.model
    chosen = set(resolve_exclude(original, pre, recipe.exclude))
    if recipe.options.float_first_layers:
        chosen.update(first_layers(pre, recipe.options.float_first_layers))
        info["float_first_layers"] = recipe.options.float_first_layers
    return [n.name for n in pre.graph.node if n.name in chosen]


def _fp16(model: Any, recipe: Recipe, info: dict[str, Any]) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep_io = recipe.io_dtype is not IODType.FLOAT16
    info.update(tool="onnxruntime.transformers.float16", keep_io_float32=keep_io, excluded=list(recipe.exclude))
    try:
        return convert_float_to_float16(model, keep_io_types=keep_io, node_block_list=list(recipe.exclude) or None)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ConversionError(f"fp16 conversion failed: {type(exc).__name__}: {exc}") from exc


def _dynamic(pre: Path, dst: Path, recipe: Recipe, info: dict[str, Any], excluded: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    info.update(mode="dynamic", weights="int8", per_channel=recipe.per_channel, excluded=excluded,
                reduce_range=bool(recipe.options.reduce_range))
    try:
        quantize_dynamic(str(pre), str(dst), per_channel=recipe.per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=excluded, reduce_range=bool(recipe.options.reduce_range))
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ConversionError(f"quantize_dynamic failed: {type(exc).__name__}: {exc}") from exc


def _static(pre: Path, dst: Path, recipe: Recipe, info: dict[str, Any], reader: SampleReader,
            excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgepack.runtimes.backends.onnxruntime import ort_errors

    if recipe.precision is Precision.INT16X8:
        act, act_name = QuantType.QUInt16, "uint16"
    elif recipe.options.activation_dtype is IODType.UINT8:
        act, act_name = QuantType.QUInt8, "uint8"
    else:
        act, act_name = QuantType.QInt8, "int8"
    method = _METHODS[recipe.options.calibration_method]
    info.update(mode="static QDQ", weights="int8", activations=act_name, per_channel=recipe.per_channel,
                calibration_method=method, calibration_samples=len(reader), excluded=excluded,
                reduce_range=bool(recipe.options.reduce_range))
    try:
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel,
                        activation_type=act, weight_type=QuantType.QInt8, calibrate_method=getattr(OrtMethod, method),
                        nodes_to_exclude=excluded, reduce_range=bool(recipe.options.reduce_range))
    except ort_errors() as exc:
        raise CalibrationError(f"onnxruntime could not run the model on the calibration data: {exc}") from exc
    except (ValueError, TypeError, KeyError, RuntimeError, IndexError) as exc:
        raise ConversionError(f"quantize_static failed: {type(exc).__name__}: {exc}") from exc
