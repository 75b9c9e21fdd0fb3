"""edgepack — package trained models for edge devices and run them there.

Host side: ``edgepack.convert(...)``. Device side: ``edgepack.runtimes.load(...)``.
Attributes are imported lazily so that ``import edgepack.runtimes`` stays small.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "__version__": ("edgepack.runtimes.versions", "EDGEPACK_VERSION"),
    "convert": ("edgepack.api", "convert"),
    "prune": ("edgepack.pruning", "prune"),
    "ConvertedBundle": ("edgepack.api", "ConvertedBundle"),
    "ImageFolder": ("edgepack.converters.calibration", "ImageFolder"),
    "targets": ("edgepack.runtimes.target", None),
    "recipes": ("edgepack.runtimes.recipe", None),
    "load": ("edgepack.runtimes", "load"),
    "EdgepackError": ("edgepack.runtimes.errors", "EdgepackError"),
    "evaluate": ("edgepack.measure.evaluate", "evaluate"),
    "benchmark": ("edgepack.runtimes.benchmark", "benchmark"),
    "debug_quantization": ("edgepack.measure.qdebug", "debug_quantization"),
    "build_report": ("edgepack.measure.report", "build_report"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgepack' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value
