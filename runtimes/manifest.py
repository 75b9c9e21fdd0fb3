"""Bundle manifest v1 (``manifest.json``) as frozen dataclasses. See docs/bundle-format.md."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import BundleSchemaError, ConfigError
from .recipe import Recipe
from .serde import from_json, to_json
from .target import Target

SCHEMA = "edgepack.bundle/2"
#: Older schemas this reader still understands (migrated on read, docs/bundle-format.md).
READABLE_SCHEMAS = ("edgepack.bundle/1", SCHEMA)
#: Recipe fields that moved into ``recipe.onnx`` in schema 2.
_V1_ONNX_KEYS = ("activation_dtype", "calibration_method", "float_first_layers", "reduce_range")


class ResizeMode(str, Enum):
    """How an image is fitted to the model's input size."""

    STRETCH = "stretch"
    LETTERBOX = "letterbox"
    CROP = "crop"


class ColorOrder(str, Enum):
    """Channel order the model expects."""

    RGB = "RGB"
    BGR = "BGR"
    GRAY = "GRAY"


class Layout(str, Enum):
    """Tensor layout of an image input."""

    NHWC = "NHWC"
    NCHW = "NCHW"


class PostprocessKind(str, Enum):
    """What the model's outputs mean."""

    CLASSIFICATION = "classification"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"
    RAW = "raw"


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``-1`` for a dynamic dimension), numpy dtype name and quantization of a tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None = None


@dataclass(frozen=True)
class Tolerance:
    """Allowed difference ``|a - b| <= atol + rtol * |b|`` between an output and its golden value."""

    atol: float
    rtol: float = 0.0


@dataclass(frozen=True)
class Golden:
    """Golden outputs of one model for the bundle's golden inputs, with a tolerance per output."""

    outputs: tuple[str, ...]
    tolerance: tuple[Tolerance, ...]


@dataclass(frozen=True)
class ModelEntry:
    """One model file of the bundle."""

    file: str
    format: str
    sha256: str
    bytes: int
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    golden: Golden
    requires: dict[str, Any] = field(default_factory=dict)
    #: The recipe that made this model (every variant of a multi-format bundle has its own).
    recipe: Recipe | None = None
    #: Delegates the model can run on at all, because its custom ops exist only there (proved at conversion by
    #: loading it on each); empty: any delegate. The ladder offers no other delegate.
    requires_delegates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preprocessing:
    """How a camera frame / image becomes the model's input tensor.

    ``x = ((pixels * scale) - mean) / std`` after colour conversion and resizing to ``size`` (h, w).
    """

    size: tuple[int, int]
    resize: ResizeMode = ResizeMode.STRETCH
    color: ColorOrder = ColorOrder.RGB
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Layout = Layout.NHWC
    dtype: str = "float32"

    def __post_init__(self) -> None:
        """Refuse a spec that would divide by zero or poison every input with NaN/inf.

        Raises:
            ConfigError: a ``std`` of 0 or a non-finite ``scale``/``mean``/``std`` value.
        """
        finite = float("inf")  # abs(x) < inf is False for inf and NaN alike
        if any(not abs(v) < finite or v == 0 for v in self.std):
            raise ConfigError(f"preprocessing std {list(self.std)} has a 0 or non-finite value: (x - mean) / std "
                              "would be inf/NaN; use 1 where no division is meant (--std).")
        if any(not abs(v) < finite for v in (self.scale, *self.mean)):
            raise ConfigError(f"preprocessing scale {self.scale} / mean {list(self.mean)} must be finite numbers.")


@dataclass(frozen=True)
class SsdAnchors:
    """MediaPipe-style SSD anchor generator parameters (``SsdAnchorsCalculatorOptions``), not the anchor array.

    ``input_size`` is (h, w); ``anchor_offset`` is (x, y) in cells. Consecutive layers with the same stride share
    one grid (BlazeFace short range: 4 layers, strides 8, 16, 16, 16 → 16x16x2 + 8x8x6 = 896 anchors).
    """

    num_layers: int
    strides: tuple[int, ...]
    input_size: tuple[int, int]
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: tuple[float, float] = (0.5, 0.5)
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False
    fixed_anchor_size: bool = True

    def __post_init__(self) -> None:
        """Raises: ConfigError: a stride per layer, positive sizes and at least one aspect ratio are required."""
        if self.num_layers < 1 or len(self.strides) != self.num_layers or min(self.strides, default=0) < 1:
            raise ConfigError(f"ssd anchors: need one positive stride per layer ({self.num_layers} layers), got "
                              f"{list(self.strides)}.")
        if min(self.input_size) < 1 or not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ConfigError("ssd anchors: input_size and aspect_ratios must be positive.")


@dataclass(frozen=True)
class SsdDecoder:
    """SSD box decoding against generated anchors (MediaPipe ``TensorsToDetectionsCalculator`` semantics).

    ``box_order`` is the order of the 4 box values per anchor (``xywh``: MediaPipe's ``reverse_output_order``);
    centres are ``raw / x_scale * anchor_w + anchor_x``; sizes ``raw / w_scale * anchor_w``. ``boxes_output`` and
    ``scores_output`` index the model's outputs ([1, anchors, 4 + 2 * keypoints] and [1, anchors, classes]).
    """

    anchors: SsdAnchors
    x_scale: float = 1.0
    y_scale: float = 1.0
    w_scale: float = 1.0
    h_scale: float = 1.0
    box_order: str = "xywh"
    sigmoid: bool = True
    score_clip: float = 100.0
    num_keypoints: int = 0
    boxes_output: int = 0
    scores_output: int = 1

    def __post_init__(self) -> None:
        """Raises: ConfigError: an unknown box order, a zero scale or a negative keypoint count."""
        if self.box_order not in ("xywh", "yxhw"):
            raise ConfigError(f"ssd box_order {self.box_order!r} is not one of: xywh, yxhw.")
        if any(not abs(v) > 0 for v in (self.x_scale, self.y_scale, self.w_scale, self.h_scale)):
            raise ConfigError("ssd x/y/w/h scales must be non-zero numbers.")
        if self.num_keypoints < 0:
            raise ConfigError("ssd num_keypoints must be 0 or more.")


@dataclass(frozen=True)
class YoloDecoder:
    """YOLO box decoding: ``v8`` output [1, 4 + classes, anchors] (or transposed), ``v5`` [1, anchors, 5 + classes]
    (score = objectness x class score). Boxes are (cx, cy, w, h) in input pixels, or 0..1 when ``normalized``."""

    layout: str = "v8"
    normalized: bool = False

    def __post_init__(self) -> None:
        """Raises: ConfigError: an unknown layout."""
        if self.layout not in ("v8", "v5"):
            raise ConfigError(f"yolo layout {self.layout!r} is not one of: v8, v5.")


@dataclass(frozen=True)
class MaskDecoder:
    """Segmentation output [1, H, W, C] (or [1, C, H, W]) → a mask: ``argmax`` gives class ids, ``threshold`` a 0/1
    mask of channel 0 (after a sigmoid when ``sigmoid``)."""

    mode: str = "argmax"
    threshold: float = 0.5
    sigmoid: bool = False

    def __post_init__(self) -> None:
        """Raises: ConfigError: an unknown mode."""
        if self.mode not in ("argmax", "threshold"):
            raise ConfigError(f"mask mode {self.mode!r} is not one of: argmax, threshold.")


@dataclass(frozen=True)
class Postprocessing:
    """How the model's outputs become a result.

    Detection uses ``ssd`` or ``yolo`` (one of them), ``score_threshold`` (0.5 when unset), class-aware NMS at
    ``nms_iou`` and at most ``max_detections`` boxes; segmentation uses ``mask``. Bundles written before these
    fields existed read with them unset.
    """

    kind: PostprocessKind = PostprocessKind.RAW
    top_k: int = 5
    softmax: bool = False
    score_threshold: float | None = None
    nms_iou: float = 0.5
    max_detections: int = 100
    ssd: SsdDecoder | None = None
    yolo: YoloDecoder | None = None
    mask: MaskDecoder | None = None

    def __post_init__(self) -> None:
        """Raises: ConfigError: ``top_k``/``max_detections`` below 1, ``nms_iou`` outside 0..1, two box decoders,
        or a decoder for another kind."""
        check_top_k(self.top_k, where="postprocessing top_k")
        check_top_k(self.max_detections, where="postprocessing max_detections")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"postprocessing nms_iou must be within (0, 1], got {self.nms_iou}.")
        if self.ssd is not None and self.yolo is not None:
            raise ConfigError("postprocessing: give one box decoder, ssd or yolo, not both.")
        if (self.ssd or self.yolo) and self.kind is not PostprocessKind.DETECTION:
            raise ConfigError(f"postprocessing: an ssd/yolo decoder needs kind detection, not {self.kind.value}.")
        if self.mask and self.kind is not PostprocessKind.SEGMENTATION:
            raise ConfigError(f"postprocessing: a mask decoder needs kind segmentation, not {self.kind.value}.")


def check_top_k(top_k: object, *, where: str = "top_k") -> int:
    """``top_k`` as a positive int.

    Raises:
        ConfigError: not an int, or below 1.
    """
    if isinstance(top_k, bool) or not hasattr(type(top_k), "__index__") or top_k < 1:  # type: ignore[operator]
        raise ConfigError(f"{where} must be a whole number of at least 1, got {top_k!r}.")
    return int(top_k)  # type: ignore[call-overload]


@dataclass(frozen=True)
class SourceInfo:
    """Where the bundle's models came from."""

    format: str
    file: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The whole ``manifest.json``."""

    name: str
    version: str
    created: str
    edgepack_version: str
    source: SourceInfo
    models: tuple[ModelEntry, ...]
    golden_inputs: tuple[str, ...]
    files: dict[str, str]
    target: Target | None = None
    preprocessing: Preprocessing | None = None
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    labels: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def to_bytes(self) -> bytes:
        """Serialise as pretty, stable JSON."""
        return json.dumps(to_json(self), indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and validate ``manifest.json``; unknown schema versions are refused."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleSchemaError(f"manifest.json is not valid JSON ({exc}); re-create the bundle.") from exc
        if not isinstance(raw, dict):
            raise BundleSchemaError("manifest.json must hold a JSON object; re-create the bundle.")
        schema = raw.get("schema")
        if schema not in READABLE_SCHEMAS:
            raise BundleSchemaError(
                f"bundle schema {schema!r} is not supported by this edgepack (reads {', '.join(READABLE_SCHEMAS)}); "
                "upgrade edgepack on this device or re-export the bundle with a matching version."
            )
        if schema != SCHEMA:
            raw = _migrate_v1(raw)
        try:
            manifest = from_json(cls, raw, where="manifest")
        except ConfigError as exc:
            raise BundleSchemaError(f"invalid manifest.json: {exc}") from exc
        check_golden_files(manifest)
        return manifest

    @property
    def recipe(self) -> Recipe | None:
        """The recipe of the first model (each entry of a multi-variant bundle has its own: ``models[i].recipe``)."""
        return self.models[0].recipe if self.models else None

    def model(self, fmt: str | None = None) -> ModelEntry:
        """The first model entry, or the first of format ``fmt``."""
        for entry in self.models:
            if fmt is None or entry.format == fmt:
                return entry
        have = sorted({m.format for m in self.models})
        raise BundleSchemaError(f"bundle has no {fmt!r} model; it holds: {have}")


def check_golden_files(manifest: Manifest) -> None:
    """Refuse a manifest whose models share a golden output file: each model (format, precision, kernels) has
    its own golden outputs, so one model would be checked against another's numbers.

    Raises:
        BundleSchemaError: two golden outputs (of one model or of two) name the same file.
    """
    owner: dict[str, str] = {}
    for entry in manifest.models:
        for k, name in enumerate(entry.golden.outputs):
            if name in owner:
                raise BundleSchemaError(
                    f"golden output file {name!r} is used by {owner[name]} and by {entry.file} output {k}; every "
                    "model needs its own golden outputs — re-export the bundle with this edgepack "
                    "(golden/<name>_<format>_<precision>_output_<k>.npy).")
            owner[name] = f"{entry.file} output {k}"


def _migrate_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 → 2: the top-level recipe (or ``{"variants": [...]}``) moves into each model entry, its ONNX-only
    keys into ``recipe.onnx``; an empty target becomes none."""
    raw = dict(raw, schema=SCHEMA)
    recipe = raw.pop("recipe", None) or {}
    variants = recipe.get("variants") if isinstance(recipe, dict) and "variants" in recipe else [recipe] * len(
        raw.get("models") or [])
    models = []
    for entry, rec in zip(raw.get("models") or [], list(variants) + [None] * len(raw.get("models") or [])):
        if isinstance(entry, dict) and isinstance(rec, dict) and rec:
            rec = dict(rec)
            onnx = {k: rec.pop(k) for k in _V1_ONNX_KEYS if k in rec}
            if rec.get("format") == "onnx":
                rec["onnx"] = onnx
            entry = dict(entry, recipe=rec)
        models.append(entry)
    raw["models"] = models
    if not raw.get("target"):
        raw["target"] = None
    return raw
