"""Shared engine for the three TFLite interpreters (ai-edge-litert, tflite-runtime, tf.lite).

They expose the same ``Interpreter`` / ``load_delegate`` API; only the module differs.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import InputSpecError
from ..manifest import Quantization, TensorSpec
from .base import Engine

#: Delegate libraries by delegate name and platform; ``EDGEPACK_<NAME>_DELEGATE`` overrides the path.
DELEGATE_LIBRARIES: dict[str, dict[str, tuple[str, ...]]] = {
    "gpu": {
        "linux": ("libtensorflowlite_gpu_delegate.so",),
        "darwin": ("libtensorflowlite_gpu_delegate.dylib",),
        "win32": ("tensorflowlite_gpu_delegate.dll",),
    },
    "nnapi": {"linux": ("libtensorflowlite_nnapi_delegate.so", "libnnapi_delegate.so")},
}
TFLITE_DELEGATES = ("gpu", "nnapi", "xnnpack", "cpu")


def delegate_library_candidates(name: str) -> tuple[str, ...]:
    """Library names to try for an external delegate on this platform."""
    override = os.environ.get(f"EDGEPACK_{name.upper()}_DELEGATE")
    if override:
        return (override,)
    table = DELEGATE_LIBRARIES.get(name, {})
    return table.get(sys.platform, table.get("linux", ()))


def load_external_delegate(module: ModuleType, name: str) -> Any:
    """Load an external delegate (``gpu``/``nnapi``); raise ``OSError`` naming every library tried.

    The library is opened with ctypes first, so a missing one fails cleanly (the interpreter's own
    ``load_delegate`` leaves a half-built object behind that complains at garbage collection).
    """
    candidates = delegate_library_candidates(name)
    if not candidates:
        raise OSError(f"no {name} delegate library is known for platform {sys.platform!r}")
    errors = []
    for lib in candidates:
        try:
            ctypes.CDLL(lib)
        except OSError as exc:
            errors.append(str(exc))
            continue
        return module.load_delegate(lib)
    raise OSError("; ".join(errors))


def _spec(detail: dict[str, Any]) -> TensorSpec:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quant = Quantization(scale=float(scale), zero_point=int(zero_point)) if scale else None
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in shape),
        dtype=np.dtype(detail["dtype"]).name,
        quantization=quant,
    )


class TFLiteEngine(Engine):
    """A TFLite interpreter bound to one delegate choice."""

    def __init__(self, module: ModuleType, model: bytes, *, delegate: str, num_threads: int | None) -> None:
        resolver = module.OpResolverType
        kwargs: dict[str, Any] = {"model_content": model, "num_threads": num_threads}
        if delegate == "cpu":
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif delegate == "xnnpack":
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN
        elif delegate in DELEGATE_LIBRARIES:
            kwargs["experimental_delegates"] = [load_external_delegate(module, delegate)]
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        else:
            raise ValueError(f"unknown TFLite delegate {delegate!r}; choose from {TFLITE_DELEGATES}")
        self.delegate = delegate
        self._interp = module.Interpreter(**kwargs)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self._in_idx = [d["index"] for d in self._in]
        self._out_idx = [d["index"] for d in self._out]
        self._shapes = [tuple(int(v) for v in d["shape"]) for d in self._in]
        self._one_to_one = len(self._in_idx) == 1 and len(self._out_idx) == 1
        self._inputs = tuple(_spec(d) for d in self._in)
        self._outputs = tuple(_spec(d) for d in self._out)
        self.delegated_partitions = self._count_partitions()

    def _count_partitions(self) -> int:
        try:
            ops = self._interp._get_ops_details()
        except AttributeError:  # very old interpreters do not expose the node list
            return -1
        return sum(1 for op in ops if op.get("op_name") == "DELEGATE")

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def ops(self) -> list[str]:
        """Op names of every node in the (delegated) graph."""
        return [str(op["op_name"]) for op in self._interp._get_ops_details()]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        interp = self._interp
        if self._one_to_one:  # the common single-input, single-output model: no loops
            arr = inputs[0]
            if arr.shape != self._shapes[0]:
                self._resize(0, arr.shape)
            interp.set_tensor(self._in_idx[0], arr)
            interp.invoke()
            return [interp.get_tensor(self._out_idx[0])]
        for k, (idx, arr) in enumerate(zip(self._in_idx, inputs)):
            if arr.shape != self._shapes[k]:
                self._resize(k, arr.shape)
            interp.set_tensor(idx, arr)
        interp.invoke()
        return [interp.get_tensor(i) for i in self._out_idx]

    def _resize(self, k: int, shape: tuple[int, ...]) -> None:
        """Resize input ``k``; when the interpreter refuses (e.g. XNNPACK cannot prepare the new shape), put the
        previous shapes back so the engine keeps working, and raise ``InputSpecError``."""
        interp = self._interp
        try:
            interp.resize_tensor_input(self._in_idx[k], shape, strict=True)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            interp.resize_tensor_input(self._in_idx[k], self._shapes[k], strict=True)
            interp.allocate_tensors()
            raise InputSpecError(
                f"the model cannot run input {self._inputs[k].name!r} at shape {list(shape)} on {self.delegate} "
                f"({exc}); it still runs at {list(self._shapes[k])}.") from exc
        self._shapes[k] = shape

    def raw_interpreter(self) -> Any:
        """The underlying interpreter (for benchmarks against raw ``invoke()``)."""
        return self._interp

    def close(self) -> None:
        self._interp = None
