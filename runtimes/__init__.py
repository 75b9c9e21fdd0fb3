"""edgepack.runtimes — the small on-device runtime: numpy + one interpreter, never TensorFlow.

>>> from edgepack.runtimes import load
>>> session = load("model.epk")
>>> session.delegate, session.fallback_log
"""

from __future__ import annotations

from .bench_process import benchmark_isolated
from .benchmark import BenchmarkError, BenchResult, LatencyStats, benchmark, interleaved
from .bundle import Bundle, read_bundle
from .errors import (
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    BundleCorruptError,
    BundleError,
    BundleRejectedError,
    BundleSchemaError,
    ConfigError,
    EdgepackError,
    InputSpecError,
    ModelLoadError,
    NoUsableDelegateError,
    SelfTestFailedError,
    StoreBusyError,
    StoreEmptyError,
    StoreError,
    StoreNotWritableError,
    StoreStateError,
    UnsafeBundleError,
)
from .ladder import DelegateAttempt
from .manifest import Manifest
from .session import Prediction, Session, load
from .store import BundleStore, SlotInfo, StoreStatus

__all__ = [
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "BenchResult",
    "BenchmarkError",
    "Bundle",
    "BundleCorruptError",
    "BundleError",
    "BundleRejectedError",
    "BundleSchemaError",
    "BundleStore",
    "ConfigError",
    "DelegateAttempt",
    "EdgepackError",
    "InputSpecError",
    "LatencyStats",
    "Manifest",
    "ModelLoadError",
    "NoUsableDelegateError",
    "Prediction",
    "SelfTestFailedError",
    "Session",
    "SlotInfo",
    "StoreBusyError",
    "StoreEmptyError",
    "StoreError",
    "StoreNotWritableError",
    "StoreStateError",
    "StoreStatus",
    "UnsafeBundleError",
    "benchmark",
    "benchmark_isolated",
    "interleaved",
    "load",
    "read_bundle",
]
