"""The one small interface every output format implements, and the format registry.

A format (``tflite``, ``onnx``, ...) knows how to load a source model for itself, shape calibration samples for
it, export a model for a :class:`~edgepack.runtimes.recipe.Recipe`, load the result in its real runtime and
describe what the file needs. Everything else of ``convert`` (hold-out, golden data, tolerance, validation,
budgets, assembly) is written once in :mod:`edgepack.converters.convert` and :mod:`edgepack.converters.artifact`.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from edgepack.runtimes.backends.base import Engine
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import Precision, Recipe


@dataclass
class InputInfo:
    """One input of a source model: name, shape (``-1`` for a dynamic dimension), numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class Source(Protocol):
    """A loaded source model, as every format hands it to the shared pipeline."""

    kind: str
    name: str
    file_name: str
    sha256: str
    inputs: list[InputInfo]

    def predict(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Reference outputs (by output name) for one batch of inputs, in ``inputs`` order."""
        ...

    def close(self) -> None:
        """Release temporary files and sessions."""
        ...


@dataclass(frozen=True)
class Description:
    """What an exported model file is and needs (read from the file itself)."""

    precision: str
    requires: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None
    #: The only delegates that run the model (its custom ops exist only there); empty: any.
    delegates: tuple[str, ...] = ()


class ModelFormatPlugin(ABC):
    """One output format. Subclass, set the class attributes, register with :func:`register_format`."""

    #: Format name as written in recipes and manifests (``tflite``, ``onnx``).
    name: ClassVar[str]
    #: File extension of its models inside the bundle (no dot).
    extension: ClassVar[str]
    #: One line for ``edgepack formats``.
    description: ClassVar[str] = ""
    #: Calibration samples that also run through both models when validating (besides the held-back ones).
    validation_calibration_samples: ClassVar[int] = 0
    #: Smallest golden tolerance, relative to the largest golden magnitude, by precision.
    relative_floor: ClassVar[dict[str, float]] = {
        "fp32": 1e-4, "fp16": 1e-3, "dynamic_int8": 5e-3, "full_int8": 1e-2, "int16x8": 1e-2,
    }

    @classmethod
    def claims(cls, model: Any) -> bool:
        """True when ``model`` is natively of this format, so its recipes apply by default (``.onnx`` files)."""
        return False

    @abstractmethod
    def load_source(self, model: Any, *, example_input: Any = None) -> Source:
        """Load ``model`` as a source this format can export from.

        Raises:
            SourceModelError (or a subclass): the model cannot be loaded; the message says what to pass.
        """

    def input_specs(self, source: Source) -> tuple[list[tuple[int, ...]], list[str]]:
        """Shapes and dtypes calibration samples are fitted to, in source-input order."""
        return [i.shape for i in source.inputs], [i.dtype for i in source.inputs]

    def input_names(self, source: Source) -> list[str]:
        """Input names that calibration arrays and ``input_shapes`` refer to, in source-input order."""
        return [i.name for i in source.inputs]

    @abstractmethod
    def export(self, source: Source, recipe: Recipe, *, calibration: Sequence[Sequence[np.ndarray]]
               ) -> tuple[bytes, dict[str, Any]]:
        """Model bytes for ``recipe`` plus format-specific report fields (quantization details...)."""

    @abstractmethod
    def open(self, data: bytes, *, reference: bool = False, num_threads: int | None = None) -> Engine:
        """Load ``data`` in the format's real runtime: its default accelerated kernels, or with
        ``reference=True`` its plain reference kernels (their gap sizes the golden tolerance).

        Raises:
            ConversionError: the runtime cannot prepare the model.
        """

    @abstractmethod
    def describe(self, data: bytes, engine: Engine) -> Description:
        """Precision, runtime requirements and report fields of an exported model."""

    def io_order(self, engine: Engine, source: Source) -> tuple[list[int], list[str]]:
        """For each engine input, its index in ``source.inputs``; for each engine output, the source output name."""
        return list(range(len(engine.inputs))), [s.name for s in engine.outputs]

    def can_validate(self, source: Source) -> bool:
        """False when the source cannot be run for comparison (a model packaged as it is)."""
        return True

    def tolerance_hint(self, precision: Precision) -> str:
        """What to try when a model of ``precision`` misses tolerance (appended to the ToleranceError)."""
        return ""

    def extra_report(self, source: Source, data: bytes, golden_inputs: list[np.ndarray]) -> dict[str, Any]:
        """Further report fields measured on the exported model (latency...); none by default."""
        return {}


_REGISTRY: dict[str, type[ModelFormatPlugin]] = {}
#: Listed first; every other sub-package of ``formats/`` is imported too (a new format = one folder).
_FIRST = ("tflite", "onnx")


def register_format(cls: type[ModelFormatPlugin]) -> type[ModelFormatPlugin]:
    """Class decorator: make an output format known by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def unregister_format(name: str) -> None:
    """Forget a registered format (tests register and remove their own)."""
    _REGISTRY.pop(name, None)


def registered_formats() -> dict[str, type[ModelFormatPlugin]]:
    """Every registered output format by name, the built-in ones first."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            importlib.import_module(f"{__package__}.{info.name}")
    first = [n for n in _FIRST if n in _REGISTRY]
    return {n: _REGISTRY[n] for n in [*first, *(n for n in _REGISTRY if n not in first)]}


def get_format(name: str) -> ModelFormatPlugin:
    """An instance of output format ``name``; an unknown name lists the known ones."""
    formats = registered_formats()
    if str(name) not in formats:
        raise ConfigError(f"unknown format {name!r}; known formats: {', '.join(formats)}")
    return formats[str(name)]()


def format_claiming(model: Any) -> str | None:
    """The format a source natively belongs to (``onnx`` for an ``.onnx`` file or a torch module), else None."""
    for name, cls in registered_formats().items():
        if cls.claims(model):
            return name
    return None
