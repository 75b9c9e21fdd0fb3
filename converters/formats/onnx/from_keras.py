"""Keras model / SavedModel → ONNX with tf2onnx (through the SavedModel serving signature).

The Keras model is exported to a SavedModel quietly (``verbose=False``) by :mod:`.sources`, then its
``serving_default`` function is converted with ``tf2onnx.convert.from_function``; input and output names
stay those of the signature, and the layout stays NHWC (as the model was trained).

tf2onnx freezes variables but not the constant tensors a function captures (Keras 3 ``Normalization`` keeps its
mean and variance that way, e.g. in ``EfficientNetB0``): they would become extra graph inputs, so they are
written into the model as initializers (:func:`fold_captured_constants`). tf2onnx's logs (Python and native,
including the tracebacks of optimizers it skips) are captured and shown only when the conversion fails.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.errors import ExportError
from edgepack.converters.formats.onnx.source import OnnxSource, from_model_proto
from edgepack.converters.formats.tflite.source import SourceModel, load_source


def _reference(tf_source: SourceModel, output_names: list[str]) -> Any:
    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        outs = tf_source.predict(list(inputs))
        if set(output_names) <= set(outs):
            return [outs[n] for n in output_names]
        return [outs[k] for k in sorted(outs)]

    return run


def keras_to_onnx(model: Path | Any, *, opset: int | None = None) -> OnnxSource:
    """Convert a ``.keras``/``.h5`` file, a SavedModel directory or a ``keras.Model``; check ORT loads it.

    Raises:
        SourceModelError: the model cannot be loaded by Keras / TensorFlow.
        ExportError: tf2onnx failed.
    """
    tf_source = load_source(model)
    try:
        proto, versions = _convert(tf_source, opset=opset)
        src = from_model_proto(
            proto, kind=tf_source.kind, name=tf_source.name, file_name=tf_source.file_name,
            sha256=tf_source.sha256, reference=None,
            provenance={"exporter": "tf2onnx.convert.from_function", **versions, "opset_requested": opset},
        )
    except BaseException:
        tf_source.close()
        raise
    src.reference = _reference(tf_source, src.output_names)
    src._closers.append(tf_source.close)
    return src


def _convert(source: SourceModel, *, opset: int | None) -> tuple[Any, dict[str, str]]:
    from edgepack.converters.tfenv import import_tensorflow, quiet_native_output

    tf = import_tensorflow()
    import tf2onnx

    fn = source._fn
    names = [i.name for i in source.inputs]
    specs = [tf.TensorSpec([None if d == -1 else d for d in i.shape], i.dtype, name=i.name) for i in source.inputs]

    @tf.function(input_signature=specs)
    def serving(*args: Any) -> Any:
        return fn(**dict(zip(names, args)))

    concrete = serving.get_concrete_function()  # the trace from_function converts (same signature: cached)
    constants = {internal.name: np.asarray(external.numpy()) for external, internal in concrete.graph.captures
                 if external.dtype != tf.resource and hasattr(external, "numpy")}
    captured = io.StringIO()
    try:
        with quiet_native_output() as native, contextlib.redirect_stdout(captured), \
                contextlib.redirect_stderr(captured):
            proto, _ = tf2onnx.convert.from_function(serving, input_signature=specs, opset=opset)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError, AttributeError) as exc:
        log = _tail([*captured.getvalue().splitlines(), *native])
        raise ExportError(
            f"tf2onnx {tf2onnx.__version__} could not convert {source.file_name}: {type(exc).__name__}: "
            f"{str(exc)[:400]}. Try another opset (opset=...) or convert to TFLite instead."
            + (f" tf2onnx said: {log}" if log else "")
        ) from exc
    folded = fold_captured_constants(proto, constants, keep=[f"{n}:0" for n in names] + names)
    extra = [i.name for i in proto.graph.input if i.name not in names and i.name not in {f"{n}:0" for n in names}]
    if extra:
        raise ExportError(f"tf2onnx turned tensors the model captures into extra inputs {extra} of "
                          f"{source.file_name} that edgepack cannot fill; convert to TFLite instead, or save the model "
                          "with those values as constants.")
    warned = sorted({line.strip() for line in [*captured.getvalue().splitlines(), *native]
                     if line.startswith(("WARNING:tf2onnx", "ERROR:tf2onnx"))})
    return proto, {"tf2onnx": str(tf2onnx.__version__), "tensorflow": str(tf.__version__),
                   **({"captured_constants_folded": folded} if folded else {}),
                   **({"tf2onnx_warnings": warned[:5]} if warned else {})}


def fold_captured_constants(model: Any, constants: Mapping[str, np.ndarray], *, keep: list[str]) -> list[str]:
    """Make graph inputs that stand for captured constants (by tensor name) initializers; returns their names.

    Inputs named in ``keep`` (the real inputs) stay inputs whatever ``constants`` holds.
    """
    from onnx import numpy_helper

    folded = []
    remaining = []
    for value in model.graph.input:
        if value.name in constants and value.name not in keep:
            model.graph.initializer.append(numpy_helper.from_array(constants[value.name], value.name))
            folded.append(value.name)
        else:
            remaining.append(value)
    if folded:
        del model.graph.input[:]
        model.graph.input.extend(remaining)
    return folded


def _tail(lines: list[str], count: int = 6) -> str:
    """The last ``count`` non-empty log lines, joined on one line."""
    kept = [" ".join(line.split()) for line in lines if line.strip()]
    return " | ".join(kept[-count:])[:800]
