"""Conversion recipes as data: how to quantize (and prune) a model, saved in every bundle."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.serde import from_json, to_json


class Precision(str, Enum):
    """Numeric precision of the exported model."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC_INT8 = "dynamic_int8"
    FULL_INT8 = "full_int8"
    INT16X8 = "int16x8"


class IODType(str, Enum):
    """Dtype of the model's inputs/outputs after quantization."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"


class ModelFormat(str, Enum):
    """File format of the exported model."""

    TFLITE = "tflite"
    ONNX = "onnx"


class CalibrationMethod(str, Enum):
    """How activation ranges are estimated from calibration data."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


@dataclass(frozen=True)
class Recipe:
    """What to do to a model. Build it with a factory (:func:`full_int8`...) and tweak with ``replace``."""

    precision: Precision = Precision.FP32
    format: ModelFormat = ModelFormat.TFLITE
    io_dtype: IODType = IODType.FLOAT32
    per_channel: bool = True
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    calibration_samples: int = 200
    exclude: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        if self.io_dtype is not IODType.FLOAT32 and self.precision is not Precision.FULL_INT8:
            raise ConfigError(f"io_dtype={self.io_dtype.value} needs precision full_int8, not {self.precision.value}")
        if self.calibration_samples < 1:
            raise ConfigError("calibration_samples must be at least 1")

    @property
    def needs_calibration(self) -> bool:
        """True when the recipe quantizes activations (needs representative data)."""
        return self.precision in (Precision.FULL_INT8, Precision.INT16X8)

    def to_json(self) -> dict[str, object]:
        """JSON form, as saved in the bundle manifest."""
        return to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Recipe:
        """Parse the JSON form; unknown keys are errors."""
        return from_json(cls, data, where="recipe")


def fp32() -> Recipe:
    """No quantization: the float reference."""
    return Recipe(precision=Precision.FP32, name="fp32")


def fp16() -> Recipe:
    """Float16 weights (half the size; dequantized on CPU, native on GPU delegates)."""
    return Recipe(precision=Precision.FP16, name="fp16")


def dynamic_int8() -> Recipe:
    """Int8 weights, float activations. Small, but often *slower* than fp32 under XNNPACK."""
    return Recipe(precision=Precision.DYNAMIC_INT8, name="dynamic_int8")


def full_int8(*, io_dtype: IODType = IODType.FLOAT32, samples: int = 200) -> Recipe:
    """Int8 weights and activations, calibrated on representative data; fastest on CPUs and NPUs."""
    return Recipe(precision=Precision.FULL_INT8, io_dtype=io_dtype, calibration_samples=samples, name="full_int8")


def int16x8(*, samples: int = 200) -> Recipe:
    """Int16 activations, int8 weights: more accurate than int8, but no XNNPACK kernels (slow)."""
    return Recipe(precision=Precision.INT16X8, calibration_samples=samples, name="int16x8")


RECIPES = {"fp32": fp32, "fp16": fp16, "dynamic-int8": dynamic_int8, "full-int8": full_int8, "int16x8": int16x8}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A recipe by name (``full-int8``...) or passed through; an unknown name lists the known ones."""
    if isinstance(recipe, Recipe):
        return recipe
    key = recipe.replace("_", "-")
    if key not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[key]()
