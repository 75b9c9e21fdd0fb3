"""edgepack.runtimes — the small on-device runtime: numpy + one interpreter, never TensorFlow.

>>> from edgepack.runtimes import load
>>> session = load("model.epk")
>>> session.delegate, session.fallback_log
"""

from __future__ import annotations

from .bundle import Bundle, read_bundle
from .errors import (
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    BundleCorruptError,
    BundleError,
    BundleSchemaError,
    ConfigError,
    EdgepackError,
    InputSpecError,
    ModelLoadError,
    NoUsableDelegateError,
    UnsafeBundleError,
)
from .ladder import DelegateAttempt
from .manifest import Manifest
from .session import Prediction, Session, load

__all__ = [
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "Bundle",
    "BundleCorruptError",
    "BundleError",
    "BundleSchemaError",
    "ConfigError",
    "DelegateAttempt",
    "EdgepackError",
    "InputSpecError",
    "Manifest",
    "ModelLoadError",
    "NoUsableDelegateError",
    "Prediction",
    "Session",
    "UnsafeBundleError",
    "load",
    "read_bundle",
]
