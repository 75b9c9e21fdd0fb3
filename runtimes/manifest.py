"""Bundle manifest v1 (``manifest.json``) as frozen dataclasses. See docs/bundle-format.md."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import BundleSchemaError, ConfigError
from .serde import from_json, to_json

SCHEMA = "edgepack.bundle/1"


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


@dataclass(frozen=True)
class Postprocessing:
    """How the model's outputs become a result."""

    kind: PostprocessKind = PostprocessKind.RAW
    top_k: int = 5
    softmax: bool = False
    score_threshold: float | None = None
    nms_iou: float = 0.5


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
    target: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
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
        if schema != SCHEMA:
            raise BundleSchemaError(
                f"bundle schema {schema!r} is not supported by this edgepack (reads {SCHEMA!r}); "
                "upgrade edgepack on this device or re-export the bundle with a matching version."
            )
        try:
            return from_json(cls, raw, where="manifest")
        except ConfigError as exc:
            raise BundleSchemaError(f"invalid manifest.json: {exc}") from exc

    def model(self, fmt: str | None = None) -> ModelEntry:
        """The first model entry, or the first of format ``fmt``."""
        for entry in self.models:
            if fmt is None or entry.format == fmt:
                return entry
        have = sorted({m.format for m in self.models})
        raise BundleSchemaError(f"bundle has no {fmt!r} model; it holds: {have}")
