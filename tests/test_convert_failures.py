"""Models the converter or the runtime cannot handle fail with a typed error that quotes the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgepack as ep
from edgepack.converters import ConversionError


def _det_model():
    import keras
    import tensorflow as tf

    class Det(keras.layers.Layer):
        def call(self, x):
            return tf.expand_dims(tf.linalg.det(x), -1)

    return keras.Sequential([keras.Input((3, 3)), Det()])


def test_op_without_tflite_kernel_is_a_conversion_error(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="TFLite conversion to fp32 failed.*MatrixDeterminant"):
        ep.convert(_det_model(), recipe="fp32", progress=False)


def test_model_that_does_not_prepare_in_litert(tmp_path: Path) -> None:
    """A third-party .tflite with Select-TF (Flex) ops loads nowhere without the Flex delegate."""
    import tensorflow as tf

    model = _det_model()
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    (tmp_path / "flex.tflite").write_bytes(conv.convert())
    with pytest.raises(ConversionError, match="does not load in ai-edge-litert.*Select TensorFlow op.*Flex"):
        ep.convert(tmp_path / "flex.tflite", progress=False)
    assert not list(tmp_path.glob("*.epk"))
