"""Deployment targets as data: a frozen dataclass per device class, saved in every bundle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import Precision
from edgepack.runtimes.serde import from_json, to_json


@dataclass(frozen=True)
class Budgets:
    """Limits a bundle should respect on the target (``None``: no limit)."""

    model_bytes: int | None = None
    ram_bytes: int | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class Target:
    """A device class: its CPU, the runtimes it can have, its delegate order and its budgets."""

    name: str
    arch: str
    cores: int
    runtimes: tuple[str, ...]
    delegates: tuple[str, ...]
    #: Precisions the target runs, best first (``convert`` refuses others; list them in a custom target JSON).
    precisions: tuple[Precision, ...]
    budgets: Budgets = Budgets()
    description: str = ""
    #: Structured pruning rounds channel counts to a multiple of this (what the target's kernels like).
    channel_multiple: int = 4

    def to_json(self) -> dict[str, object]:
        """JSON form, as saved in the bundle manifest."""
        return to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Target:
        """Parse the JSON form; unknown keys are errors."""
        return from_json(cls, data, where="target")

    def allows(self, precision: Precision) -> bool:
        """True when ``precision`` is one the target runs."""
        return Precision(precision) in self.precisions


#: Every precision runs on a CPU through LiteRT / ONNX Runtime (fastest first on a typical Arm core).
_PREFERRED = (Precision.FULL_INT8, Precision.FP32, Precision.FP16)
_CPU_PRECISIONS = (*_PREFERRED, *(p for p in Precision if p not in _PREFERRED))

RPI4 = Target(
    name="rpi4", arch="aarch64", cores=4, runtimes=("litert", "tflite-runtime", "onnxruntime"),
    delegates=("xnnpack", "cpu"), precisions=_CPU_PRECISIONS,
    budgets=Budgets(model_bytes=50_000_000, ram_bytes=1_000_000_000, latency_ms=100.0),
    description="Raspberry Pi 4 (Cortex-A72, 4 cores, 64-bit OS): LiteRT (ai-edge-litert) with XNNPACK on the CPU, "
                "no usable GPU delegate; tflite-runtime 2.14 if installed (old op versions); ONNX Runtime from PyPI "
                "has no XNNPACK provider (its own CPU kernels).",
    channel_multiple=8,  # XNNPACK arm64 on Cortex-A72 (no dotprod): int8 GEMM 2x8c8 and fp32 6x8 tile 8 output channels
)
RPI5 = Target(
    name="rpi5", arch="aarch64", cores=4, runtimes=("litert", "tflite-runtime", "onnxruntime"),
    delegates=("xnnpack", "cpu"), precisions=_CPU_PRECISIONS,
    budgets=Budgets(model_bytes=100_000_000, ram_bytes=2_000_000_000, latency_ms=50.0),
    description="Raspberry Pi 5 (Cortex-A76, 4 cores, 64-bit OS): LiteRT (ai-edge-litert) with XNNPACK on the CPU, "
                "no usable GPU delegate; tflite-runtime 2.14 if installed (old op versions); ONNX Runtime from PyPI "
                "has no XNNPACK provider (its own CPU kernels).",
    channel_multiple=16,  # XNNPACK arm64 on Cortex-A76 (dotprod): int8 GEMM 4x16c4 tiles 16 channels (fp32 6x8: 8)
)
ANDROID_PHONE = Target(
    name="android-phone", arch="aarch64", cores=8, runtimes=("litert", "onnxruntime"),
    delegates=("gpu", "nnapi", "xnnpack", "cpu"), precisions=(Precision.FP16, Precision.FULL_INT8, Precision.FP32,
                                                        Precision.DYNAMIC_INT8, Precision.INT16X8),
    budgets=Budgets(model_bytes=50_000_000, ram_bytes=500_000_000, latency_ms=33.0),
    description="Android phone: GPU delegate (fp16), NNAPI (int8), XNNPACK fallback.",
    channel_multiple=16,  # XNNPACK int8 GEMM on dotprod/i8mm cores is 4x16c4/4x16c8 (16); GPU slices of 4 divide it
)
ARM64_BOARD = Target(
    name="arm64-board", arch="aarch64", cores=4, runtimes=("litert", "onnxruntime", "tflite-runtime"),
    delegates=("gpu", "xnnpack", "cpu"), precisions=_CPU_PRECISIONS,
    budgets=Budgets(model_bytes=100_000_000, ram_bytes=1_000_000_000, latency_ms=100.0),
    description="Generic arm64 Linux board (Rockchip, i.MX, Amlogic...).",
    channel_multiple=16,  # unknown core: XNNPACK arm64 int8 tiles 16 (A53/A55, dotprod) or 8 (A72); 16 suits both
)
JETSON = Target(
    name="jetson", arch="aarch64", cores=6, runtimes=("onnxruntime", "litert"),
    delegates=("gpu", "cpu"), precisions=(Precision.FP16, Precision.FP32, Precision.FULL_INT8),
    budgets=Budgets(model_bytes=500_000_000, ram_bytes=4_000_000_000, latency_ms=20.0),
    description="NVIDIA Jetson: ONNX Runtime with TensorRT/CUDA providers.",
    channel_multiple=8,  # fp16 first: TensorRT/CUDA tensor cores want multiples of 8 (the CPU fallback tiles 8/16)
)
X86 = Target(
    name="x86", arch="x86_64", cores=2, runtimes=("litert", "onnxruntime"),
    delegates=("xnnpack", "cpu"), precisions=_CPU_PRECISIONS,
    budgets=Budgets(),
    description="x86-64 host or mini-PC, CPU only.",
    channel_multiple=8,  # measured (benchmarks/channel_multiple.py): int8 XNNPACK latency is flat in blocks of 8
)

_TARGETS: dict[str, Target] = {}


def register_target(target: Target, *, replace: bool = False) -> Target:
    """Make ``target`` known by its name (``get_target``, ``edgepack targets``, ``--target NAME``).

    Raises:
        ConfigError: a different target already has that name (pass ``replace=True`` to override it).
    """
    if not replace and target.name in _TARGETS and _TARGETS[target.name] != target:
        raise ConfigError(f"a target named {target.name!r} is already registered; pick another name.")
    _TARGETS[target.name] = target
    return target


def unregister_target(name: str) -> None:
    """Forget a registered target (tests register and remove their own)."""
    _TARGETS.pop(name, None)


def registered_targets() -> dict[str, Target]:
    """Every known target by name, built-in ones first."""
    return dict(_TARGETS)


for _builtin in (RPI4, RPI5, ANDROID_PHONE, ARM64_BOARD, JETSON, X86):
    register_target(_builtin)

#: The built-in targets by name (kept for callers that read it; :func:`registered_targets` is the live registry).
TARGETS = registered_targets()


def get_target(target: str | Path | Target) -> Target:
    """A target by name, from a JSON file (``board.json``), or passed through; an unknown name lists the known ones."""
    if isinstance(target, Target):
        return target
    text = str(target)
    if text.lower().endswith(".json") or isinstance(target, Path):
        return load_target(target)
    known = registered_targets()
    if text not in known:
        raise ConfigError(f"unknown target {text!r}; known targets: {', '.join(known)} (or a target JSON file)")
    return known[text]


def load_target(path: str | Path) -> Target:
    """Read a custom target from a JSON file (the form :meth:`Target.to_json` writes); unknown keys are errors."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"target file {p} does not exist; pass a target name or a JSON file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read target file {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"target file {p} must hold a JSON object (see `edgepack targets --json`).")
    return Target.from_json(data)
