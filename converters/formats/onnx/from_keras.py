"""Keras model / SavedModel → ONNX with tf2onnx (through the SavedModel serving signature).

The Keras model is exported to a SavedModel quietly (``verbose=False``) by :mod:`.sources`, then its
``serving_default`` function is converted with ``tf2onnx.convert.from_function``; input and output names
stay those of the signature, and the layout stays NHWC (as the model was trained).
"""

from __future__ import annotations

import contextlib
import io
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
    from edgepack.converters.tfenv import import_tensorflow

    tf = import_tensorflow()
    import tf2onnx

    fn = source._fn
    names = [i.name for i in source.inputs]
    specs = [tf.TensorSpec([None if d == -1 else d for d in i.shape], i.dtype, name=i.name) for i in source.inputs]

    @tf.function(input_signature=specs)
    def serving(*args: Any) -> Any:
        return fn(**dict(zip(names, args)))

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            proto, _ = tf2onnx.convert.from_function(serving, input_signature=specs, opset=opset)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError, AttributeError) as exc:
        raise ExportError(
            f"tf2onnx {tf2onnx.__version__} could not convert {source.file_name}: {type(exc).__name__}: "
            f"{str(exc)[:400]}. Try another opset (opset=...) or convert to TFLite instead."
        ) from exc
    return proto, {"tf2onnx": str(tf2onnx.__version__), "tensorflow": str(tf.__version__)}
