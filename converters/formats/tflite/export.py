"""SavedModel → ``.tflite`` bytes for every precision of a :class:`Recipe`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgepack.converters.errors import ConversionError
from edgepack.converters.formats.tflite.source import SourceModel
from edgepack.converters.tfenv import import_tensorflow, quiet_native_output
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import IODType, Precision, Recipe


def configured_converter(source: SourceModel, recipe: Recipe, *,
                         calibration: Sequence[Sequence[np.ndarray]] = ()) -> Any:
    """A ``tf.lite.TFLiteConverter`` set up for ``recipe`` (optimizations, types, ops, calibration data).

    :func:`export_tflite` converts with it; ``tf.lite.experimental.QuantizationDebugger`` takes it as it is.
    ``calibration`` samples are in the source signature's input order (sorted by name).

    Raises:
        ConversionError: the source cannot be re-converted, or calibration is missing.
        ConfigError: ``recipe.exclude`` is set on a recipe that is not full int8.
    """
    tf = import_tensorflow()
    if source.saved_model_dir is None:
        raise ConversionError(f"{source.kind} source cannot be re-converted; it is packaged as it is.")
    if source.tf1:  # a SavedModel TF2 cannot restore: the v1 converter reads its graph
        conv = tf.compat.v1.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir),
                                                                  signature_key="serving_default")
    else:
        conv = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir))
    p = recipe.precision
    if recipe.exclude and p is not Precision.FULL_INT8:  # full int8 keeps them in float: selective.py
        raise ConfigError(f"recipe.exclude keeps layers in float inside a full-int8 TFLite model; a {p.value} "
                          "recipe has no int8 layers to exclude — remove exclude.")
    if p is not Precision.FP32:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if p is Precision.FP16:
        conv.target_spec.supported_types = [tf.float16]
    # Sparse weight storage (DENSIFY) only for float models, measured (benchmarks/sparsity.py): XNNPACK refuses
    # dynamic-range + sparsity ("failed to delegate CONV_2D"); full int8 loads but deflates 10-12 % larger than the
    # same zeros stored dense; fp32/fp16 load with identical outputs, a 3x smaller file (5 % smaller deflated).
    # No speed-up is claimed: LiteRT's x86 XNNPACK densifies the weights at load (same latency as dense storage).
    if recipe.prune is not None and recipe.prune.sparsity and p in (Precision.FP32, Precision.FP16):
        conv.optimizations = [*conv.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if recipe.needs_calibration:
        if not calibration:
            raise ConversionError(f"{p.value} needs calibration data (100-500 samples); pass --calibration DIR or .npy "
                                  "(API: calibration=...).")
        names = [i.name for i in source.inputs]

        def representative() -> Any:
            for sample in calibration:  # the v1 converter takes a list in input order, v2 a dict by name
                yield list(sample) if source.tf1 else dict(zip(names, sample))

        conv.representative_dataset = representative
        if p is Precision.FULL_INT8:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if recipe.io_dtype is not IODType.FLOAT32:
                io = tf.int8 if recipe.io_dtype is IODType.INT8 else tf.uint8
                conv.inference_input_type = io
                conv.inference_output_type = io
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
    if not recipe.per_channel:
        conv._experimental_disable_per_channel = True
    return conv


def export_tflite(source: SourceModel, recipe: Recipe, *, calibration: Sequence[Sequence[np.ndarray]] = ()) -> bytes:
    """Convert with the TFLite converter; raise :class:`ConversionError` with the converter's reason.

    ``calibration`` samples are in the source signature's input order (sorted by name).
    """
    conv = configured_converter(source, recipe, calibration=calibration)
    if recipe.exclude:
        from edgepack.converters.formats.tflite.selective import export_selective

        return export_selective(conv, recipe)
    from tensorflow.lite.python.convert_phase import ConverterError

    try:
        with quiet_native_output() as log:
            return bytes(conv.convert())
    except (ConverterError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines() + [line for line in log if "error" in line.lower()]
        reason = next((line for line in first if "error" in line.lower()), first[0] if first else repr(exc))
        raise ConversionError(
            f"TFLite conversion to {recipe.precision.value} failed: {type(exc).__name__}: {reason[:500]}. "
            "Try another recipe (e.g. fp16 or dynamic_int8) or check the model's ops."
        ) from exc
