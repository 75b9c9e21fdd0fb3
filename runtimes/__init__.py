"""edgepack.runtimes — the small on-device runtime: numpy + one interpreter, never TensorFlow.

>>> from edgepack.runtimes import load
>>> session = load("model.epk")
>>> session.delegate, session.fallback_log
"""

from __future__ import annotations

from .bench_process import benchmark_isolated
from .benchmark import BenchmarkError, BenchResult, LatencyStats, benchmark, interleaved
from .bundle import DEFAULT_LIMITS, Bundle, BundleLimits, read_bundle
from .errors import (
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    BundleCorruptError,
    BundleError,
    BundleRejectedError,
    BundleSchemaError,
    ConfigError,
    DowngradeError,
    EdgepackError,
    InputSpecError,
    ModelLoadError,
    NoUsableDelegateError,
    SelfTestFailedError,
    SourceError,
    StoreBusyError,
    StoreEmptyError,
    StoreError,
    StoreNotFoundError,
    StoreNotWritableError,
    StoreStateError,
    UnsafeBundleError,
)
from .ladder import DelegateAttempt
from .manifest import Manifest
from .session import Prediction, Session, load
from .signing import SignatureInfo, TrustStore, verify_bundle
from .store import BundleStore, SlotInfo, StoreStatus

__all__ = [
    "DEFAULT_LIMITS",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "BenchResult",
    "BenchmarkError",
    "Bundle",
    "BundleCorruptError",
    "BundleError",
    "BundleLimits",
    "BundleRejectedError",
    "BundleSchemaError",
    "BundleStore",
    "ConfigError",
    "DelegateAttempt",
    "DowngradeError",
    "EdgepackError",
    "InputSpecError",
    "LatencyStats",
    "Manifest",
    "ModelLoadError",
    "NoUsableDelegateError",
    "Prediction",
    "SelfTestFailedError",
    "Session",
    "SignatureInfo",
    "SlotInfo",
    "SourceError",
    "StoreBusyError",
    "StoreEmptyError",
    "StoreError",
    "StoreNotFoundError",
    "StoreNotWritableError",
    "StoreStateError",
    "StoreStatus",
    "TrustStore",
    "UnsafeBundleError",
    "benchmark",
    "benchmark_isolated",
    "interleaved",
    "load",
    "read_bundle",
    "verify_bundle",
]
