"""The one small interface every runtime backend implements, and the backend registry."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import BackendNotFoundError, BackendUnavailableError, ConfigError
from ..manifest import TensorSpec

#: Exceptions a delegate / provider raises when it cannot be set up (DESIGN.md §6): catch exactly these.
DELEGATE_ERRORS: tuple[type[BaseException], ...] = (OSError, AttributeError, ValueError, RuntimeError)


class Engine(ABC):
    """A model loaded on one delegate / execution provider, ready to run."""

    #: Delegate name this engine was opened with (``gpu``, ``nnapi``, ``xnnpack``, ``cpu``...).
    delegate: str
    #: How many graph partitions the accelerator really took (``0`` for plain CPU kernels).
    delegated_partitions: int

    @property
    @abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs, in call order."""

    @property
    @abstractmethod
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs, in result order."""

    @abstractmethod
    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run once on arrays of the model's own dtypes; return arrays of the model's output dtypes."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources."""


class Backend(ABC):
    """A runtime library (ai-edge-litert, tflite-runtime, onnxruntime...)."""

    name: ClassVar[str]
    #: Model formats it runs (``tflite``, ``onnx``).
    formats: ClassVar[tuple[str, ...]]
    #: Importable module that must exist for the backend to be available.
    module: ClassVar[str]
    #: Delegate names it understands, best first.
    delegates: ClassVar[tuple[str, ...]]

    @classmethod
    def available(cls) -> bool:
        """True when the backend's library is installed (checked without importing it)."""
        try:
            return importlib.util.find_spec(cls.module) is not None
        except (ImportError, ValueError):
            return False

    def configure(self, options: object | None = None, *, bundle_path: Path | None = None) -> None:
        """Apply backend-specific session options (``load(..., options=...)``); most backends take none.

        Raises:
            ConfigError: options were given to a backend that has none, or of the wrong kind.
        """
        if options is not None:
            raise ConfigError(f"backend {self.name!r} takes no options (got {type(options).__name__}).")

    @abstractmethod
    def version(self) -> str:
        """Version string of the underlying library."""

    def absent_delegates(self) -> dict[str, str]:
        """Delegates this build of the library lacks by design (nothing to try, so not a failed attempt), each with
        what to install to get it; none by default."""
        return {}

    @abstractmethod
    def open(self, model: bytes, *, delegate: str, num_threads: int | None) -> Engine:
        """Load ``model`` on ``delegate``; raise one of :data:`DELEGATE_ERRORS` if it cannot be set up."""


_REGISTRY: dict[str, type[Backend]] = {}
#: Modules of this package that hold no backend.
_NOT_BACKENDS = frozenset({"base", "tflite_common"})


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend known by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def unregister_backend(name: str) -> None:
    """Forget a registered backend (tests register and remove their own)."""
    _REGISTRY.pop(name, None)


def _load_all() -> None:
    """Import every module of this package once: each backend file registers itself (a new backend = one file)."""
    for info in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
        if info.name not in _NOT_BACKENDS:
            importlib.import_module(f"{__package__}.{info.name}")


def registered_backends() -> dict[str, type[Backend]]:
    """Every registered backend class by name (installed or not)."""
    _load_all()
    return dict(_REGISTRY)


def get_backend(name: str) -> Backend:
    """An instance of backend ``name``.

    Raises:
        BackendNotFoundError: unknown name (lists the known ones).
        BackendUnavailableError: known, but its library is not installed (says which extra to install).
    """
    backends = registered_backends()
    if name not in backends:
        raise BackendNotFoundError(f"no backend {name!r}; known backends: {', '.join(sorted(backends))}")
    cls = backends[name]
    if not cls.available():
        raise BackendUnavailableError(
            f"backend {name!r} needs the Python module {cls.module!r}, which is not installed; "
            f"install it with `pip install 'edgepack[{_EXTRAS.get(name, name)}]'`."
        )
    return cls()


_EXTRAS = {"litert": "litert", "tflite-runtime": "tflite-runtime", "onnxruntime": "onnxruntime", "tf-lite": "convert"}


def backends_for(fmt: str, *, preferred: Sequence[str] = ()) -> list[str]:
    """Installed backends that run ``fmt``, the ``preferred`` ones first."""
    backends = registered_backends()
    names = [n for n in preferred if n in backends] + sorted(set(backends) - set(preferred))
    return [n for n in names if fmt in backends[n].formats and backends[n].available()]


Factory = Callable[[], Backend]
