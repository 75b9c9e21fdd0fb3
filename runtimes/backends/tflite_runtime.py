"""tflite-runtime backend: legacy TFLite runtime found on older devices (numpy<2 environments).

tflite-runtime 2.14 (its last release) is built against numpy 1.x and lacks newer op versions
(e.g. FULLY_CONNECTED v12 of dynamic-range models); see :mod:`edgepack.runtimes.opcheck`.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from .base import Backend, Engine, register_backend
from .tflite_common import TFLITE_DELEGATES, TFLiteEngine


@register_backend
class TFLiteRuntimeBackend(Backend):
    """Runs ``.tflite`` models in ``tflite_runtime.interpreter``."""

    name = "tflite-runtime"
    formats = ("tflite",)
    module = "tflite_runtime"
    delegates = TFLITE_DELEGATES

    def version(self) -> str:
        return importlib.metadata.version("tflite-runtime")

    def open(self, model: bytes, *, delegate: str, num_threads: int | None) -> Engine:
        module = importlib.import_module("tflite_runtime.interpreter")
        return TFLiteEngine(module, model, delegate=delegate, num_threads=num_threads)
