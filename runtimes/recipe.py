"""Conversion recipes as data: how to quantize (and prune) a model, saved in every bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
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
    FLOAT16 = "float16"
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


_ONNX_INT = (Precision.FULL_INT8, Precision.INT16X8, Precision.DYNAMIC_INT8)
#: CPU architectures whose ONNX Runtime uint8 x int8 kernels get ``reduce_range`` by default: x86-64 without VNNI
#: saturates without it, and with it x86-64 and arm64 give bit-identical outputs (measured, docs/onnx.md).
REDUCE_RANGE_ARCHS = ("x86_64", "amd64", "aarch64", "arm64")


@dataclass(frozen=True)
class OnnxOptions:
    """The ONNX-only knobs of a recipe (ONNX Runtime quantization); other formats take none of them."""

    #: Activation dtype of QDQ models (uint8 is fastest on x86 ORT; TFLite full int8 is always int8).
    activation_dtype: IODType = IODType.INT8
    #: How activation ranges are estimated from calibration data.
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    #: Int8: keep the first N weighted layers (Conv/Gemm/MatMul) and the nodes before and between them in float
    #: (the "float stem"; early layers often lose the most accuracy, ``edgepack qdebug`` shows which).
    float_first_layers: int = 0
    #: Int8: 7-bit weights (ORT ``reduce_range``), so that the uint8 x int8 kernels of x86 CPUs without VNNI cannot
    #: overflow and every CPU computes the same outputs. None: the target decides when converting (CPU targets: on
    #: for uint8-activation QDQ and dynamic int8); the bundle records the value used.
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        if self.activation_dtype not in (IODType.INT8, IODType.UINT8):
            raise ConfigError(f"activation_dtype must be int8 or uint8, not {self.activation_dtype.value}")
        if self.float_first_layers < 0:
            raise ConfigError("float_first_layers must be 0 or more")


_NO_ONNX = OnnxOptions()


class Importance(str, Enum):
    """How structured pruning ranks channels: weight magnitude, or activations measured on data."""

    L1 = "l1"
    L2 = "l2"
    ACTIVATION = "activation"


@dataclass(frozen=True)
class PruneOptions:
    """Pruning done before quantization (``convert --prune channels=0.5``); saved in the bundle's recipe.

    ``channels``: the fraction of prunable channels/units removed (a smaller dense model); ``sparsity``: the
    fraction of weights set to zero (unstructured; the bundle shrinks when compressed). Both may be given.
    """

    channels: float | None = None
    sparsity: float | None = None
    importance: Importance = Importance.L1
    #: Channel counts are rounded to a multiple of this (None: the target's ``channel_multiple``).
    round_to: int | None = None
    #: Fine-tuning epochs after pruning (0: none; labelled data trains, unlabelled data distils).
    epochs: int = 2
    #: Sparsity: one threshold over every prunable layer (True) or the same fraction in each layer (False).
    global_sparsity: bool = True

    def __post_init__(self) -> None:
        if self.channels is None and self.sparsity is None:
            raise ConfigError("prune options need channels=R or sparsity=R (a fraction between 0 and 1).")
        for key in ("channels", "sparsity"):
            value = getattr(self, key)
            if value is not None and not 0.0 < float(value) < 1.0:
                raise ConfigError(f"prune {key}={value!r} must lie strictly between 0 and 1 (0.5 removes half).")
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"prune round_to={self.round_to} must be 1 or more.")
        if self.epochs < 0:
            raise ConfigError(f"prune epochs={self.epochs} must be 0 or more.")

    @classmethod
    def parse(cls, text: str) -> PruneOptions:
        """``"channels=0.5"``, ``"sparsity=0.5,epochs=3"``, ``"channels=0.3,importance=l2,round_to=8"``."""
        values: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in {f.name for f in fields(cls)}:
                raise ConfigError(f"cannot read prune option {part!r}; write e.g. channels=0.5 or sparsity=0.5,"
                                  f"epochs=2 (keys: {', '.join(f.name for f in fields(cls))}).")
            values[key] = value.strip()
        try:
            typed: dict[str, object] = {}
            for key, value in values.items():
                if key in ("channels", "sparsity"):
                    typed[key] = float(str(value))
                elif key in ("round_to", "epochs"):
                    typed[key] = int(str(value))
                elif key == "global_sparsity":
                    typed[key] = str(value).lower() in ("1", "true", "yes", "global")
                else:
                    typed[key] = Importance(str(value).lower())
        except ValueError as exc:
            raise ConfigError(f"cannot read prune options {text!r} ({exc}); write e.g. channels=0.5.") from None
        return cls(**typed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Recipe:
    """What to do to a model. Build it with a factory (:func:`full_int8`...) and tweak with ``replace``.

    ``format`` names a registered output format (``tflite``, ``onnx``, or one a plug-in registers); the knobs
    only one format understands live in their own small dataclass (``onnx``).
    """

    precision: Precision = Precision.FP32
    format: str = ModelFormat.TFLITE.value
    io_dtype: IODType = IODType.FLOAT32
    per_channel: bool = True
    calibration_samples: int = 200
    exclude: tuple[str, ...] = ()
    name: str = ""
    onnx: OnnxOptions | None = None
    #: Prune before quantizing (None: no pruning).
    prune: PruneOptions | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", str(getattr(self.format, "value", self.format)))
        onnx = self.format == ModelFormat.ONNX.value
        if self.io_dtype is IODType.FLOAT16:
            if not (onnx and self.precision is Precision.FP16):
                raise ConfigError("io_dtype=float16 needs an ONNX fp16 recipe (onnx_fp16(keep_io_float32=False)).")
        elif self.io_dtype is not IODType.FLOAT32:
            if self.precision is not Precision.FULL_INT8:
                raise ConfigError(
                    f"io_dtype={self.io_dtype.value} needs precision full_int8, not {self.precision.value}"
                )
            if onnx:
                raise ConfigError("ONNX QDQ models keep float32 inputs/outputs; use io_dtype=float32.")
        if self.calibration_samples < 1:
            raise ConfigError("calibration_samples must be at least 1")
        if self.onnx is not None and self.onnx != _NO_ONNX:
            if not onnx:
                raise ConfigError(f"onnx options ({_changed(self.onnx)}) are for ONNX recipes (float layers and "
                                  f"reduce_range: ONNX int8 ones), not {self.format}; "
                                  "for TFLite use full-int8 or int16x8 (TFLite calibration is always min/max).")
            if (self.onnx.float_first_layers or self.onnx.reduce_range) and self.precision not in _ONNX_INT:
                raise ConfigError("float_first_layers and reduce_range are for ONNX int8 recipes (qdq-int8, "
                                  "qdq-int16x8, onnx-dynamic-int8).")

    @property
    def options(self) -> OnnxOptions:
        """The ONNX options in force (defaults when none were given)."""
        return self.onnx or _NO_ONNX

    @property
    def needs_calibration(self) -> bool:
        """True when the recipe quantizes activations (needs representative data)."""
        return self.precision in (Precision.FULL_INT8, Precision.INT16X8)

    @property
    def label(self) -> str:
        """Its name, or its precision when unnamed."""
        return self.name or self.precision.value

    def resolved_for(self, arch: str) -> Recipe:
        """This recipe with the choices left to the target made: ``reduce_range`` on for ONNX models that run
        ORT's uint8 x int8 CPU kernels (dynamic int8, QDQ with uint8 activations) on x86-64 and arm64, where it
        makes the host's validation bit-exact with the device's arithmetic (docs/onnx.md); off otherwise."""
        opts = self.options
        if opts.reduce_range is None and self.format == ModelFormat.ONNX.value and self.precision in _ONNX_INT:
            u8 = self.precision is Precision.DYNAMIC_INT8 or (
                self.precision is Precision.FULL_INT8 and opts.activation_dtype is IODType.UINT8)
            return replace(self, onnx=replace(opts, reduce_range=u8 and arch.lower() in REDUCE_RANGE_ARCHS))
        return self

    def to_json(self) -> dict[str, object]:
        """JSON form, as saved in the bundle manifest."""
        return to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Recipe:
        """Parse the JSON form; unknown keys are errors."""
        return from_json(cls, data, where="recipe")


def _changed(opts: OnnxOptions) -> str:
    return ", ".join(f"{f.name}={getattr(opts, f.name)!r}" for f in fields(opts)
                     if getattr(opts, f.name) != getattr(_NO_ONNX, f.name))


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


def onnx_fp32() -> Recipe:
    """ONNX, no quantization: the float reference run in ONNX Runtime."""
    return Recipe(precision=Precision.FP32, format=ModelFormat.ONNX, name="onnx_fp32")


def onnx_fp16(*, keep_io_float32: bool = True) -> Recipe:
    """ONNX float16 weights and activations (half the size; fast on GPUs, not on x86 CPUs)."""
    io = IODType.FLOAT32 if keep_io_float32 else IODType.FLOAT16
    return Recipe(precision=Precision.FP16, format=ModelFormat.ONNX, io_dtype=io, name="onnx_fp16")


def onnx_dynamic_int8(*, per_channel: bool = False, exclude: tuple[str, ...] = (),
                      reduce_range: bool | None = None) -> Recipe:
    """ONNX dynamic int8 (weights int8, activations quantized at run time). Often much slower for CNNs."""
    return Recipe(precision=Precision.DYNAMIC_INT8, format=ModelFormat.ONNX, per_channel=per_channel,
                  exclude=tuple(exclude), onnx=OnnxOptions(reduce_range=reduce_range), name="onnx_dynamic_int8")


def onnx_qdq_int8(
    *,
    per_channel: bool = True,
    activation: IODType = IODType.UINT8,
    method: CalibrationMethod = CalibrationMethod.MINMAX,
    exclude: tuple[str, ...] = (),
    float_first_layers: int = 0,
    reduce_range: bool | None = None,
    samples: int = 200,
) -> Recipe:
    """ONNX static QDQ int8: int8 weights, ``activation`` (uint8/int8) activations calibrated on data.

    ``exclude`` (node names, matched after ``quant_pre_process``) and ``float_first_layers`` stay float;
    ``reduce_range`` (7-bit weights) defaults to the target's choice.
    """
    options = OnnxOptions(activation_dtype=IODType(activation), calibration_method=CalibrationMethod(method),
                          float_first_layers=float_first_layers, reduce_range=reduce_range)
    return Recipe(precision=Precision.FULL_INT8, format=ModelFormat.ONNX, per_channel=per_channel,
                  exclude=tuple(exclude), onnx=options, calibration_samples=samples, name="qdq_int8")


def onnx_qdq_int16x8(*, per_channel: bool = True, samples: int = 200) -> Recipe:
    """ONNX static QDQ with 16-bit activations and int8 weights: accurate, small, but no fast CPU kernels."""
    return Recipe(precision=Precision.INT16X8, format=ModelFormat.ONNX, per_channel=per_channel,
                  calibration_samples=samples, name="qdq_int16x8")


_RECIPES: dict[str, Callable[[], Recipe]] = {}
#: Per format, the recipe a generic (TFLite-named) recipe stands for: ``full-int8`` under ``onnx`` is ``qdq-int8``.
_EQUIVALENTS: dict[str, dict[str, str]] = {}


def register_recipe(name: str, factory: Callable[[], Recipe], *, stands_for: str | None = None) -> None:
    """Make a named recipe known (``--recipe NAME``); ``stands_for``: the generic name it means in its format."""
    made = factory()
    _RECIPES[name] = factory
    if stands_for is not None:
        _EQUIVALENTS.setdefault(made.format, {})[stands_for] = name


def registered_recipes() -> dict[str, Callable[[], Recipe]]:
    """Every named recipe factory."""
    return dict(_RECIPES)


for _name, _factory in (("fp32", fp32), ("fp16", fp16), ("dynamic-int8", dynamic_int8), ("full-int8", full_int8),
                        ("int16x8", int16x8)):
    register_recipe(_name, _factory)
for _name, _factory, _generic in (("onnx-fp32", onnx_fp32, "fp32"), ("onnx-fp16", onnx_fp16, "fp16"),
                                  ("onnx-dynamic-int8", onnx_dynamic_int8, "dynamic-int8"),
                                  ("qdq-int8", onnx_qdq_int8, "full-int8"),
                                  ("qdq-int16x8", onnx_qdq_int16x8, "int16x8")):
    register_recipe(_name, _factory, stands_for=_generic)
RECIPES = _RECIPES
ONNX_EQUIVALENTS = _EQUIVALENTS["onnx"]


def get_recipe(recipe: str | Recipe, *, format: str | None = None) -> Recipe:
    """A recipe by name (``full-int8``, ``qdq-int8``...) or passed through; unknown names list the known ones.

    With ``format="onnx"`` a generic name means its ONNX counterpart (``full-int8`` → ``qdq-int8``); a format
    without a counterpart of its own takes the generic recipe as it is, made for that format.
    """
    fmt = None if format is None else str(getattr(format, "value", format))
    if isinstance(recipe, Recipe):
        if fmt is not None and recipe.format != fmt:
            raise ConfigError(f"recipe {recipe.label!r} is for {recipe.format}, not {fmt}; pick a {fmt} recipe.")
        return recipe
    key = recipe.replace("_", "-")
    if fmt is not None:
        key = _EQUIVALENTS.get(fmt, {}).get(key, key)
    if key not in _RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; known recipes: {', '.join(_RECIPES)}")
    made = _RECIPES[key]()
    if fmt is not None and made.format != fmt:
        if made.format == ModelFormat.TFLITE.value and fmt not in _EQUIVALENTS:
            return replace(made, format=fmt)  # a generic recipe for a format with no recipes of its own
        raise ConfigError(f"recipe {recipe!r} makes {made.format} models, not {fmt}.")
    return made
