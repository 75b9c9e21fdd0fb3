"""TFLite selective quantization: full int8 with the layers named in ``recipe.exclude`` kept in float.

The converter calibrates the model once (``_experimental_calibrate_only``), then the MLIR quantizer quantizes it with
those layers denylisted — what ``tf.lite.experimental.QuantizationDebugger(..., debug_options=
QuantizationDebugOptions(denylisted_nodes=[...])).get_nondebug_quantized_model()`` does, without the debugger's
extra float and instrumented conversions, and with the recipe's integer I/O. Without exclusions the result is the
model the plain converter makes (it runs the same two steps). A float layer gets a DEQUANTIZE before it and a QUANTIZE
after it, so its neighbours stay int8.

Names are the output tensor names of the layers, as ``edgepack qdebug`` / :func:`debug_quantization` reports them:
the full fused name (``model/conv/Relu;model/conv/BiasAdd;...``) or any one ``;``-separated part of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepack.converters.errors import ConversionError
from edgepack.converters.formats.tflite.inspect import _names, _schema
from edgepack.converters.tfenv import import_tensorflow, quiet_native_output
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import IODType, Recipe
from edgepack.runtimes.tensors import dequantize, to_model_dtype

#: Output types of the ops that are layers (shape arithmetic such as SHAPE/PACK yields int32 and is not one).
_ACTIVATION_TYPES = ("FLOAT32", "INT8", "UINT8", "INT16")


@dataclass(frozen=True)
class LayerType:
    """One op of a ``.tflite`` model: its op code, first output tensor's name and type (``FLOAT32``, ``INT8``...)."""

    op: str
    name: str
    dtype: str


def layer_types(model: bytes) -> list[LayerType]:
    """Every op of the main subgraph in order, with its first output's name and type."""
    schema = _schema()
    m = schema.Model.GetRootAsModel(model, 0)
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    g = m.Subgraphs(0)
    out = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = m.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if op.OutputsLength() == 0:
            continue
        tensor = g.Tensors(op.Outputs(0))
        out.append(LayerType(op_names.get(builtin, f"BUILTIN_{builtin}"), (tensor.Name() or b"").decode(),
                             type_names.get(tensor.Type(), str(tensor.Type()))))
    return out


def resolve_layers(calibrated: bytes, exclude: Sequence[str]) -> list[str]:
    """The full output tensor names that ``exclude`` names (full names or one ``;``-part of a fused name).

    Raises:
        ConfigError: a name matches no layer, or a part matches several (listing valid names).
    """
    layers = [t for t in layer_types(calibrated) if t.dtype in _ACTIVATION_TYPES and t.name]
    full = {t.name for t in layers}
    chosen: list[str] = []
    unknown: list[str] = []
    for name in exclude:
        hits = [name] if name in full else [t.name for t in layers if name in t.name.split(";")]
        if len(hits) > 1:
            raise ConfigError(f"recipe.exclude name {name!r} is part of {len(hits)} layers ({', '.join(hits[:3])}); "
                              "give the full name.")
        if not hits:
            unknown.append(name)
        elif hits[0] not in chosen:
            chosen.append(hits[0])
    if unknown:
        shown = ", ".join(repr(t.name.split(";", 1)[0]) for t in layers[:8])
        raise ConfigError(f"recipe.exclude names layers the model does not have: {unknown}; its {len(layers)} layers "
                          f"include {shown}{', ...' if len(layers) > 8 else ''} (`edgepack qdebug` ranks them all).")
    if len(chosen) >= len(layers):
        raise ConfigError(f"recipe.exclude names every layer ({len(layers)}): that is the float model; use the fp32 "
                          "recipe instead.")
    return chosen


def export_selective(conv: Any, recipe: Recipe) -> bytes:
    """Full int8 with ``recipe.exclude`` in float, from a converter :func:`configured_converter` set up (which
    refuses ``exclude`` on any other precision; sparse storage is never set for int8).

    Raises:
        ConfigError: ``recipe.exclude`` names unknown layers.
        ConversionError: calibration or quantization fails (the converter's reason quoted).
    """
    tf = import_tensorflow()
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python.convert_phase import ConverterError

    io = {IODType.INT8: tf.int8, IODType.UINT8: tf.uint8}.get(recipe.io_dtype, tf.float32)
    conv.experimental_new_quantizer = True
    conv._experimental_calibrate_only = True
    try:
        with quiet_native_output():
            calibrated = bytes(conv.convert())
        nodes = resolve_layers(calibrated, recipe.exclude)
        with quiet_native_output():
            model = tf_convert.mlir_quantize(calibrated, disable_per_channel=not recipe.per_channel,
                                             input_data_type=io, output_data_type=io, denylisted_nodes=nodes)
    except (ConverterError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:500]
        raise ConversionError(f"TFLite selective quantization (exclude={list(recipe.exclude)}) failed: "
                              f"{type(exc).__name__}: {reason}. Try fewer excluded layers or another recipe.") from exc
    return bytes(model)


@dataclass(frozen=True)
class LayerSensitivity:
    """Output SNR (dB, vs the float model) when only this layer is int8 and every other layer stays float."""

    name: str
    op: str
    output_snr_db: float


def layer_sensitivity(conv: Any, recipe: Recipe, samples: Sequence[Any]) -> list[LayerSensitivity]:
    """Quantize one layer at a time (all others denylisted) and measure the output SNR on ``samples``; worst first.

    Unlike the debugger's local SNR (an op's own output rounding, given quantized inputs), this also counts how the
    layer's quantized *input* hurts — e.g. an op whose input range is wide for its values, or a fixed-scale SOFTMAX
    feeding a sum — so it finds the layers whose float copies restore accuracy. One calibration, then one MLIR
    quantization and a LiteRT run per layer. ``samples`` are single-input batches (model-ready float arrays).
    """
    from edgepack.converters.formats.tflite.pipeline import open_litert  # lazy: the export path stays light

    import_tensorflow()
    from tensorflow.lite.python import convert as tf_convert

    conv.experimental_new_quantizer = True
    conv._experimental_calibrate_only = True
    with quiet_native_output():
        calibrated = bytes(conv.convert())
    layers = [t for t in layer_types(calibrated) if t.dtype in _ACTIVATION_TYPES and t.name]

    def outputs(model: bytes) -> np.ndarray:
        engine = open_litert(model, num_threads=1)
        try:
            got = [dequantize(engine.run([to_model_dtype(x, engine.inputs[0])])[0], engine.outputs[0])
                   for x in samples]
        finally:
            engine.close()
        return np.concatenate(got).astype(np.float64)

    reference = outputs(calibrated)
    signal = float(np.sum(reference**2))
    result = []
    for layer in layers:
        others = [t.name for t in layers if t.name != layer.name]
        with quiet_native_output():
            model = tf_convert.mlir_quantize(calibrated, disable_per_channel=not recipe.per_channel,
                                             denylisted_nodes=others)
        noise = float(np.sum((outputs(bytes(model)) - reference) ** 2))
        snr = float("inf") if noise == 0 else 10 * float(np.log10(max(signal, 1e-30) / noise))
        result.append(LayerSensitivity(layer.name, layer.op, snr))
    return sorted(result, key=lambda s: (s.output_snr_db, s.name))
