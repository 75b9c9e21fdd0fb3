"""Deployment targets as data: a frozen dataclass per device class, saved in every bundle."""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgepack.runtimes.errors import ConfigError
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
    precisions: tuple[str, ...]
    budgets: Budgets = Budgets()
    description: str = ""

    def to_json(self) -> dict[str, object]:
        """JSON form, as saved in the bundle manifest."""
        return to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Target:
        """Parse the JSON form; unknown keys are errors."""
        return from_json(cls, data, where="target")


RPI4 = Target(
    name="rpi4", arch="aarch64", cores=4, runtimes=("litert", "tflite-runtime", "onnxruntime"),
    delegates=("xnnpack", "cpu"), precisions=("full_int8", "fp32", "fp16"),
    budgets=Budgets(model_bytes=50_000_000, ram_bytes=1_000_000_000, latency_ms=100.0),
    description="Raspberry Pi 4 (Cortex-A72, 64-bit OS); no usable GPU delegate — XNNPACK on the CPU.",
)
RPI5 = Target(
    name="rpi5", arch="aarch64", cores=4, runtimes=("litert", "tflite-runtime", "onnxruntime"),
    delegates=("xnnpack", "cpu"), precisions=("full_int8", "fp32", "fp16"),
    budgets=Budgets(model_bytes=100_000_000, ram_bytes=2_000_000_000, latency_ms=50.0),
    description="Raspberry Pi 5 (Cortex-A76, 64-bit OS); XNNPACK on the CPU.",
)
ANDROID_PHONE = Target(
    name="android-phone", arch="aarch64", cores=8, runtimes=("litert", "onnxruntime"),
    delegates=("gpu", "nnapi", "xnnpack", "cpu"), precisions=("fp16", "full_int8", "fp32"),
    budgets=Budgets(model_bytes=50_000_000, ram_bytes=500_000_000, latency_ms=33.0),
    description="Android phone: GPU delegate (fp16), NNAPI (int8), XNNPACK fallback.",
)
ARM64_BOARD = Target(
    name="arm64-board", arch="aarch64", cores=4, runtimes=("litert", "onnxruntime", "tflite-runtime"),
    delegates=("gpu", "xnnpack", "cpu"), precisions=("full_int8", "fp32"),
    budgets=Budgets(model_bytes=100_000_000, ram_bytes=1_000_000_000, latency_ms=100.0),
    description="Generic arm64 Linux board (Rockchip, i.MX, Amlogic...).",
)
JETSON = Target(
    name="jetson", arch="aarch64", cores=6, runtimes=("onnxruntime", "litert"),
    delegates=("gpu", "cpu"), precisions=("fp16", "fp32"),
    budgets=Budgets(model_bytes=500_000_000, ram_bytes=4_000_000_000, latency_ms=20.0),
    description="NVIDIA Jetson: ONNX Runtime with TensorRT/CUDA providers.",
)
X86 = Target(
    name="x86", arch="x86_64", cores=2, runtimes=("litert", "onnxruntime"),
    delegates=("xnnpack", "cpu"), precisions=("full_int8", "fp32", "fp16"),
    budgets=Budgets(),
    description="x86-64 host or mini-PC, CPU only.",
)

TARGETS: dict[str, Target] = {t.name: t for t in (RPI4, RPI5, ANDROID_PHONE, ARM64_BOARD, JETSON, X86)}


def get_target(target: str | Target) -> Target:
    """Look a target up by name (or pass one through); an unknown name lists the known ones."""
    if isinstance(target, Target):
        return target
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; known targets: {', '.join(TARGETS)}")
    return TARGETS[target]


def load_target(path: str) -> Target:
    """Read a custom target from a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return Target.from_json(json.load(fh))
