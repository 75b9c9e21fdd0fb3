"""``tf.lite`` backend: last resort on a host that has TensorFlow but no LiteRT.

Never chosen automatically when another TFLite backend is installed (importing TensorFlow costs
seconds and hundreds of MB); the ladder lists it last.
"""

from __future__ import annotations

import importlib
import types

from .base import Backend, Engine, register_backend
from .tflite_common import TFLITE_DELEGATES, TFLiteEngine


@register_backend
class TFLiteTensorFlowBackend(Backend):
    """Runs ``.tflite`` models in ``tensorflow.lite.Interpreter``."""

    name = "tf-lite"
    formats = ("tflite",)
    module = "tensorflow"
    delegates = TFLITE_DELEGATES

    def version(self) -> str:
        return str(importlib.import_module("tensorflow").__version__)

    def open(self, model: bytes, *, delegate: str, num_threads: int | None) -> Engine:
        tf = importlib.import_module("tensorflow")
        shim = types.SimpleNamespace(
            Interpreter=tf.lite.Interpreter,
            load_delegate=tf.lite.experimental.load_delegate,
            OpResolverType=tf.lite.experimental.OpResolverType,
        )
        return TFLiteEngine(shim, model, delegate=delegate, num_threads=num_threads)  # type: ignore[arg-type]
