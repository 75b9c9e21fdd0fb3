"""ONNX Runtime backend: ``.onnx`` models on execution providers (``pip install 'edgepack[onnxruntime]'``).

edgepack's delegate names map to ORT execution providers (:data:`PROVIDERS`). ORT is quiet about two things
(DESIGN.md §6): a requested provider missing from the build is dropped with a warning, and nodes a provider
cannot run go to the CPU. So every engine asks the session which providers it really uses and which nodes each
one took; a requested accelerator that ended up unused is a failed attempt, never a silent success.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelLoadError, UnsupportedOperatorError, UnsupportedOpsetError
from ..fileio import atomic_write_bytes, atomic_write_text
from ..manifest import TensorSpec
from .base import Backend, Engine, register_backend

log = logging.getLogger("edgepack.runtimes")

CPU = "CPUExecutionProvider"
#: Execution providers by delegate name, best first; ``gpu`` takes every GPU provider this build has.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "gpu": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
            "MIGraphXExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider",),
    "cuda": ("CUDAExecutionProvider",),
    "coreml": ("CoreMLExecutionProvider",),
    "dml": ("DmlExecutionProvider",),
    "nnapi": ("NnapiExecutionProvider",),
    "qnn": ("QNNExecutionProvider",),
    "xnnpack": ("XnnpackExecutionProvider",),
    "cpu": (CPU,),
}
ORT_DELEGATES = tuple(PROVIDERS)
_INSTALL_HINTS = {
    "gpu": "install onnxruntime-gpu (CUDA/TensorRT), onnxruntime-directml (Windows) or use the macOS wheel (CoreML)",
    "tensorrt": "install onnxruntime-gpu with TensorRT libraries", "cuda": "install onnxruntime-gpu",
    "coreml": "use the macOS onnxruntime wheel", "dml": "install onnxruntime-directml (Windows)",
    "nnapi": "use onnxruntime-android (NNAPI ships only in the Android package)",
    "qnn": "install onnxruntime-qnn (Qualcomm NPUs)",
    "xnnpack": "XNNPACK ships only in the Android/iOS packages or a build with --use_xnnpack",
}

#: Names of the exception classes ORT's C extension raises (they derive from ``Exception`` only).
_ORT_ERROR_NAMES = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
                    "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail",
                    "ModelLoadCanceled", "ModelRequiresCompilation", "NotFound", "DeviceReset")

_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(uint32)": "uint32", "tensor(int64)": "int64", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


class GraphOptimization(str, Enum):
    """ORT graph optimization level (``all`` adds layout changes specific to this CPU: never ship its output)."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    LAYOUT = "layout"
    ALL = "all"


@dataclass(frozen=True)
class OrtOptions:
    """Session options of the ONNX Runtime backend: ``load(bundle, options=OrtOptions(...))``.

    Attributes:
        graph_optimization: how much ORT rewrites the graph when it loads the model.
        inter_op_threads: threads running independent nodes in parallel (None: ORT's default).
        cache: save the optimized model beside the bundle (``<bundle>.ort-cache/``) and load it next time;
            CPU provider only, keyed by model, ORT version, machine and optimization level.
        cache_dir: where to keep that cache instead (also enables it).
    """

    graph_optimization: GraphOptimization = GraphOptimization.ALL
    inter_op_threads: int | None = None
    cache: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.graph_optimization, GraphOptimization):
            try:
                object.__setattr__(self, "graph_optimization", GraphOptimization(self.graph_optimization))
            except ValueError:
                choices = ", ".join(g.value for g in GraphOptimization)
                raise ConfigError(f"graph_optimization {self.graph_optimization!r} is not one of: {choices}") from None
        if self.inter_op_threads is not None and self.inter_op_threads < 1:
            raise ConfigError("inter_op_threads must be at least 1 (or None for ORT's default)")


def ort_module() -> ModuleType:
    """The ``onnxruntime`` module (imported on first use only)."""
    return importlib.import_module("onnxruntime")


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception classes ONNX Runtime raises from C++."""
    state = importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")
    return tuple(getattr(state, n) for n in _ORT_ERROR_NAMES if isinstance(getattr(state, n, None), type))


def available_providers() -> list[str]:
    """Execution providers compiled into the installed ONNX Runtime (tests replace this list only)."""
    return list(ort_module().get_available_providers())


def providers_for(delegate: str) -> list[str]:
    """ORT providers for one delegate, CPU last for the nodes an accelerator does not take.

    Raises:
        ValueError: unknown delegate name.
        RuntimeError: none of the delegate's providers is in this ONNX Runtime build.
    """
    if delegate not in PROVIDERS:
        raise ValueError(f"unknown ONNX Runtime delegate {delegate!r}; choose from {ORT_DELEGATES}")
    have = available_providers()
    wanted = [p for p in PROVIDERS[delegate] if p in have]
    if not wanted:
        raise RuntimeError(
            f"this onnxruntime build has no {'/'.join(PROVIDERS[delegate])} (it has {have}); "
            f"{_INSTALL_HINTS.get(delegate, 'install an onnxruntime build that has it')}."
        )
    return wanted if CPU in wanted else [*wanted, CPU]


def classify_load_error(exc: BaseException, *, what: str = "the model") -> BaseException:
    """Turn an ORT load failure into a typed edgepack error, or a ``RuntimeError`` for the ladder to log.

    Model-level problems (not ONNX, an opset newer than this runtime, an operator it lacks) are the same on
    every provider, so they become :class:`ModelLoadError` subclasses that stop the ladder at once.
    """
    text = str(exc)
    version = getattr(ort_module(), "__version__", "?")
    if type(exc).__name__ == "InvalidProtobuf" or "Protobuf parsing failed" in text:
        return ModelLoadError(f"{what} is not a valid ONNX protobuf ({text[:200]}); re-export it or re-copy the file.")
    if "is under development" in text or "official support for domain" in text:
        tail = text[text.find("Current official support"):] if "Current official support" in text else text[-300:]
        return UnsupportedOpsetError(
            f"{what} needs an opset newer than onnxruntime {version} supports ({tail.strip()}); export it "
            "with a lower opset (e.g. torch.onnx.export(..., opset_version=18)) or upgrade onnxruntime."
        )
    markers = ("is not a registered function/op", "No opset import for domain", "Could not find an implementation")
    if any(m in text for m in markers):
        return UnsupportedOperatorError(
            f"{what} uses an operator that onnxruntime {version} does not have: {text[-300:].strip()}. "
            "Custom-domain ops need their custom-op library registered, or re-export without them."
        )
    return RuntimeError(f"onnxruntime {version} could not load {what}: {type(exc).__name__}: {text[:500]}")


def _spec(arg: Any) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"tensor {arg.name!r} has ONNX type {arg.type}, which edgepack cannot feed or read.")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(name=arg.name, shape=shape, dtype=dtype)


def _level(ort: ModuleType, level: GraphOptimization) -> Any:
    names = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
             "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}
    levels = ort.GraphOptimizationLevel
    return getattr(levels, names[level.value], levels.ORT_ENABLE_EXTENDED)


class OrtEngine(Engine):
    """An ``InferenceSession`` on one delegate, with what ORT really did with the graph."""

    def __init__(self, session: Any, *, delegate: str, requested: list[str], cache: str = "off") -> None:
        self.delegate = delegate
        self.requested_providers = tuple(requested)
        self.providers = tuple(session.get_providers())
        self.cache = cache
        self._sess = session
        self._inputs = tuple(_spec(a) for a in session.get_inputs())
        self._outputs = tuple(_spec(a) for a in session.get_outputs())
        self._in_names = [s.name for s in self._inputs]
        self.node_assignment, subgraphs = _assignment(session)
        if subgraphs is None:  # ORT too old to say: unknown unless nothing but the CPU was asked for
            self.delegated_partitions = 0 if delegate == "cpu" else -1
        else:
            self.delegated_partitions = sum(1 for ep in subgraphs if ep != CPU)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = dict(zip(self._in_names, inputs))
        try:
            return [np.asarray(o) for o in self._sess.run(None, feed)]
        except ort_errors() as exc:
            raise RuntimeError(f"onnxruntime failed to run the model: {type(exc).__name__}: {exc}") from exc

    def raw_session(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession``."""
        return self._sess

    def close(self) -> None:
        self._sess = None


def _assignment(session: Any) -> tuple[dict[str, int], list[str] | None]:
    """Nodes per provider and the provider of each subgraph (None when this ORT cannot tell)."""
    try:
        info = session.get_provider_graph_assignment_info()
    except AttributeError:
        return {}, None
    counts: dict[str, int] = {}
    subgraphs = []
    for sub in info:
        subgraphs.append(sub.ep_name)
        counts[sub.ep_name] = counts.get(sub.ep_name, 0) + len(sub.get_nodes())
    return counts, subgraphs


@register_backend
class OnnxRuntimeBackend(Backend):
    """Runs ``.onnx`` models in ``onnxruntime.InferenceSession``."""

    name = "onnxruntime"
    formats = ("onnx",)
    module = "onnxruntime"
    delegates = ORT_DELEGATES

    def __init__(self) -> None:
        self.options = OrtOptions()
        self.cache_root: Path | None = None

    def configure(self, options: object | None = None, *, bundle_path: Path | None = None) -> None:
        """Take :class:`OrtOptions`; the optimized-model cache lives beside ``bundle_path``."""
        if options is None:
            return
        if not isinstance(options, OrtOptions):
            raise ConfigError(f"the onnxruntime backend takes OrtOptions, not {type(options).__name__}")
        self.options = options
        if options.cache_dir is not None:
            self.cache_root = Path(options.cache_dir)
        elif options.cache and bundle_path is not None:
            self.cache_root = bundle_path.with_name(bundle_path.name + ".ort-cache")
        elif options.cache:
            raise ConfigError("OrtOptions(cache=True) needs a bundle path or cache_dir=... to keep the cache in.")

    def version(self) -> str:
        return str(ort_module().__version__)

    def session_options(self, num_threads: int | None, *, level: GraphOptimization | None = None) -> Any:
        """``SessionOptions`` from :class:`OrtOptions` and the thread count."""
        ort = ort_module()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = int(num_threads or 0)
        if self.options.inter_op_threads:
            so.inter_op_num_threads = self.options.inter_op_threads
        so.graph_optimization_level = _level(ort, level or self.options.graph_optimization)
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        return so

    def absent_delegates(self) -> dict[str, str]:
        """Delegates none of whose providers is compiled into this onnxruntime (the PyPI wheel has CPU only)."""
        have = set(available_providers())
        return {d: f"this onnxruntime build has no {'/'.join(p)}; {_INSTALL_HINTS.get(d, 'install a build with it')}"
                for d, p in PROVIDERS.items() if d != "cpu" and not have & set(p)}

    def open(self, model: bytes, *, delegate: str, num_threads: int | None) -> Engine:
        requested = providers_for(delegate)
        if self.cache_root is not None and delegate == "cpu":
            session, status = self._open_cached(model, num_threads=num_threads, root=self.cache_root)
        else:
            session, status = self.create_session(model, self.session_options(num_threads), requested), "off"
        used = list(session.get_providers())
        dropped = [p for p in requested if p != CPU and p not in used]
        if dropped and not any(p in used for p in requested if p != CPU):
            raise RuntimeError(f"asked onnxruntime for {dropped} but the session runs on {used} only "
                               "(the provider is not usable in this build or on this machine)")
        return OrtEngine(session, delegate=delegate, requested=requested, cache=status)

    def _open_cached(self, model: bytes, *, num_threads: int | None, root: Path) -> tuple[Any, str]:
        """Load the optimized model from the cache, or optimize now and save it there (atomically).

        The cache is a convenience: a missing, unwritable or damaged cache falls back to a normal load,
        and the ladder still checks the golden outputs of whatever was loaded.
        """
        level = self.options.graph_optimization
        key = cache_key(model, level.value)
        path, digest = root / f"{key}.onnx", root / f"{key}.sha256"
        if path.is_file() and digest.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == digest.read_text(encoding="utf-8").strip():
                so = self.session_options(num_threads, level=GraphOptimization.DISABLE)
                try:
                    return self.create_session(data, so, [CPU]), f"hit {path}"
                except (ModelLoadError, RuntimeError) as exc:
                    log.warning("optimized-model cache %s does not load (%s); rebuilding it", path, exc)
            else:
                log.warning("optimized-model cache %s does not match its checksum; rebuilding it", path)
        tmp = root / f".{key}.{os.getpid()}.tmp"
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(b"")
        except OSError as exc:
            log.warning("cannot write the optimized-model cache in %s (%s); loading without it", root, exc)
            return self.create_session(model, self.session_options(num_threads), [CPU]), f"unwritable {root}"
        so = self.session_options(num_threads)
        so.optimized_model_filepath = str(tmp)  # ORT writes it there; we keep it only once it is complete
        try:
            session = self.create_session(model, so, [CPU])
            data = tmp.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
        try:  # the model first: a reader in between sees a checksum mismatch and rebuilds
            atomic_write_bytes(path, data)
            atomic_write_text(digest, hashlib.sha256(data).hexdigest())
        except OSError as exc:
            log.warning("cannot save the optimized-model cache %s (%s); loaded without it", path, exc)
            return session, f"unwritable {root}"
        return session, f"saved {path}"

    def create_session(self, model: bytes | str, so: Any, providers: list[str]) -> Any:
        """``InferenceSession`` with ORT's warnings and errors turned into edgepack's."""
        ort = ort_module()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                session = ort.InferenceSession(model, so, providers=providers)
            except ort_errors() as exc:
                raise classify_load_error(exc) from exc
        for w in caught:
            log.info("onnxruntime: %s", w.message)
        return session


def cache_key(model: bytes, *parts: str) -> str:
    """Key of an optimized model: the model bytes plus everything that changes what ORT writes."""
    h = hashlib.sha256(model)
    for part in (*parts, platform.machine(), str(ort_module().__version__), _cpu_features()):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:40]


def _cpu_features() -> str:
    """The CPU's feature flags (ORT's optimized layouts depend on them), or '' where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""
