"""TFLite half of :mod:`edgepack.measure.qdebug`: ``tf.lite.experimental.QuantizationDebugger`` on full-int8."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgepack.converters.formats.tflite.export import configured_converter
from edgepack.converters.tfenv import import_tensorflow, quiet_native_output
from edgepack.measure.qdebug import (
    BackendResult,
    LayerError,
    QuantDebugError,
    float_outputs,
    output_snr,
    rank,
    snr_db,
    suggest,
)
from edgepack.measure.runners import KerasRunner, Runner
from edgepack.runtimes.backends import DELEGATE_ERRORS, get_backend
from edgepack.runtimes.recipe import Recipe
from edgepack.runtimes.tensors import dequantize, to_model_dtype

METHOD = "TFLite QuantizationDebugger (full int8)"


def _direct_snr(float_values: Any, quant_values: Any, scale: float, zero_point: int) -> float:
    """Layer SNR from the op's float output and its quantized output (the debugger's direct-compare hook)."""
    dq = (np.asarray(quant_values, np.float64) - zero_point) * scale
    return snr_db(np.asarray(float_values, np.float64), dq)


def _converter(runner: KerasRunner, samples: Sequence[np.ndarray], recipe: Recipe) -> Any:
    """The converters' own TFLite converter set-up for ``recipe``, calibrated on the debug samples."""
    if runner.src.saved_model_dir is None:
        raise QuantDebugError(f"{runner.name} cannot be re-converted (no SavedModel); pass the Keras source.")
    return configured_converter(runner.src, recipe, calibration=[[x] for x in samples])


def _debugger(conv: Any, dataset: Callable[[], Iterator[list[np.ndarray]]], **options: Any) -> Any:
    tf = import_tensorflow()
    opts = tf.lite.experimental.QuantizationDebugOptions(**options)
    with warnings.catch_warnings(), quiet_native_output():
        warnings.simplefilter("ignore")
        return tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=dataset, debug_options=opts)


def _run_litert(model: bytes, samples: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Outputs of a ``.tflite`` model in the litert backend (XNNPACK), dequantized."""
    try:
        engine = get_backend("litert").open(model, delegate="xnnpack", num_threads=None)
    except DELEGATE_ERRORS as exc:
        raise QuantDebugError(f"LiteRT cannot load the quantized model: {exc}") from exc
    try:
        outs = []
        for x in samples:
            raw = engine.run([to_model_dtype(x, engine.inputs[0])])
            outs.append([dequantize(o, s) for o, s in zip(raw, engine.outputs)])
    finally:
        engine.close()
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def debug_tflite(runner: Runner, samples: Sequence[np.ndarray], *, recipe: Recipe, min_snr_db: float,
                 max_suggested: int, verify: bool) -> BackendResult:
    """Per-layer int8 errors of a Keras/SavedModel source converted per ``recipe``; suggestions verified by
    selective quantization (the same converter set-up with the suggested layers denylisted)."""
    if not isinstance(runner, KerasRunner):
        raise QuantDebugError(f"{runner.name}: TFLite per-layer debugging needs the Keras / SavedModel source.")
    tf = import_tensorflow()

    def dataset() -> Iterator[list[np.ndarray]]:
        for x in samples:
            yield [x]

    conv = _converter(runner, samples, recipe)
    first = _debugger(conv, dataset)
    with quiet_native_output():
        debug_model = first.get_debug_quantized_model()
        full_model = first.get_nondebug_quantized_model() if verify else b""
    opts = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"snr_db": _direct_snr})
    with warnings.catch_warnings(), quiet_native_output():
        warnings.simplefilter("ignore")
        # Built from the debug model's bytes, the debugger keeps every tensor, so direct comparison is exact.
        dbg = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug_model,
                                                        debug_dataset=dataset, debug_options=opts)
        dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    layers = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(row["scale"])
        mse = float(row["mean_squared_error"])
        layers.append(LayerError(
            name=row["tensor_name"], op=row["op_name"], snr_db=float(row["snr_db"]),
            rmse_over_scale=math.sqrt(mse) / scale if scale else None, max_abs_error=float(row["max_abs_error"]),
            elements=int(float(row["num_elements"])),
        ))
    ranked = rank(layers)
    suggested = suggest(ranked, min_snr_db=min_snr_db, max_layers=max_suggested)
    out_snr = kept = None
    notes: tuple[str, ...] = ()
    if verify:
        reference = float_outputs(runner, samples)
        out_snr = output_snr(reference, _run_litert(full_model, samples))
        if suggested and len(suggested) >= len(ranked):
            # TFLite's debugger cannot build a model with every op denylisted (it raises ValueError): that model
            # is the float model itself.
            notes = ("every layer is suggested: keeping all of them in float is the float model; not re-measured",)
        elif suggested:
            partial = _debugger(_converter(runner, samples, recipe), dataset, denylisted_nodes=list(suggested))
            with quiet_native_output():
                kept_model = partial.get_nondebug_quantized_model()
            kept = output_snr(reference, _run_litert(kept_model, samples))
    return BackendResult(method=METHOD, samples=len(samples), layers=ranked, suggested_float=suggested,
                         output_snr_db=out_snr, output_snr_db_kept_float=kept, notes=notes)
