"""ai-edge-litert backend: the primary TFLite runtime (``pip install 'edgepack[litert]'``)."""

from __future__ import annotations

import importlib
import importlib.metadata

from .base import Backend, Engine, register_backend
from .tflite_common import TFLITE_DELEGATES, TFLiteEngine


@register_backend
class LiteRTBackend(Backend):
    """Runs ``.tflite`` models in ``ai_edge_litert.interpreter``."""

    name = "litert"
    formats = ("tflite",)
    module = "ai_edge_litert"
    delegates = TFLITE_DELEGATES

    def version(self) -> str:
        return importlib.metadata.version("ai-edge-litert")

    def open(self, model: bytes, *, delegate: str, num_threads: int | None) -> Engine:
        module = importlib.import_module("ai_edge_litert.interpreter")
        return TFLiteEngine(module, model, delegate=delegate, num_threads=num_threads)
