"""ONNX sources: an ``.onnx`` file, a PyTorch ``nn.Module`` (exported), or a Keras model / SavedModel (tf2onnx).

Every source becomes one fp32 ``onnx.ModelProto`` (external data inlined) that ONNX Runtime has already
loaded once, plus a *reference* to validate converted models against: the framework model itself for
PyTorch and Keras, the fp32 model in ONNX Runtime for ``.onnx`` files.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.errors import OnnxModelError, OnnxOperatorError, OnnxOpsetError, SourceModelError
from edgepack.converters.formats.base import InputInfo
from edgepack.converters.formats.onnx.inspect import input_infos, iter_nodes, output_names
from edgepack.runtimes.backends import get_backend
from edgepack.runtimes.backends.base import DELEGATE_ERRORS, Engine
from edgepack.runtimes.bundle import MAX_FILE_BYTES
from edgepack.runtimes.errors import ModelLoadError, UnsupportedOperatorError, UnsupportedOpsetError

SUPPORTED = ("an .onnx file, a torch.nn.Module with example_input=..., a .keras/.h5 file, a SavedModel "
             "directory, a keras.Model or an onnx.ModelProto")
Reference = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class OnnxSource:
    """A source model as fp32 ONNX, with the reference outputs converted models are compared to."""

    kind: str  # onnx | torch | keras | savedmodel
    name: str
    file_name: str
    sha256: str
    model: Any  # onnx.ModelProto, fp32, external data inlined
    inputs: list[InputInfo]
    output_names: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)
    reference: Reference | None = None
    _engine: Engine | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def model_bytes(self) -> bytes:
        """The fp32 model, serialised."""
        return bytes(self.model.SerializeToString())

    def predict(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Reference outputs by ONNX output name: the framework model, or the fp32 ONNX model in ORT."""
        if self.reference is not None:
            outs = self.reference(inputs)
        else:
            if self._engine is None:
                self._engine = open_reference(self.model_bytes(), what=self.file_name)
            outs = self._engine.run([np.asarray(x, dtype=i.dtype) for x, i in zip(inputs, self.inputs)])
        if len(outs) != len(self.output_names):
            raise SourceModelError(f"reference gave {len(outs)} outputs, the ONNX model has {len(self.output_names)}")
        return {n: np.asarray(o) for n, o in zip(self.output_names, outs)}

    def close(self) -> None:
        """Release the reference session and any temporary export."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        while self._closers:
            self._closers.pop()()


def open_reference(data: bytes, *, what: str) -> Engine:
    """Load model bytes in real ONNX Runtime on the CPU; raise a typed error saying what is wrong.

    Raises:
        OnnxOpsetError: an opset newer than the installed ORT supports.
        OnnxOperatorError: an operator (e.g. of a custom domain) ORT does not have.
        OnnxModelError: anything else that stops ORT from loading it.
    """
    backend = get_backend("onnxruntime")
    try:
        return backend.open(data, delegate="cpu", num_threads=None)
    except UnsupportedOpsetError as exc:
        raise OnnxOpsetError(f"{what}: {exc}") from exc
    except UnsupportedOperatorError as exc:
        raise OnnxOperatorError(f"{what}: {exc}") from exc
    except ModelLoadError as exc:
        raise OnnxModelError(f"{what}: {exc}") from exc
    except DELEGATE_ERRORS as exc:
        raise OnnxModelError(f"onnxruntime cannot load {what}: {exc}") from exc


def read_onnx(path: Path) -> tuple[Any, str]:
    """Parse an ``.onnx`` file with its external-data files; return the model and a sha256 over all of them."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        head = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise OnnxModelError(f"{path} is not an ONNX protobuf ({exc}); pass a model saved by onnx.save or "
                             "an exporter (torch.onnx.export, tf2onnx).") from exc
    except OSError as exc:
        raise OnnxModelError(f"cannot read {path}: {exc}") from exc
    if head.ir_version <= 0 or not head.graph.node:
        raise OnnxModelError(f"{path} parses but holds no ONNX graph (ir_version {head.ir_version}); "
                             "it is not an ONNX model.")
    digest = hashlib.sha256(path.read_bytes())
    locations = sorted({e.value for t in _tensors(head) for e in t.external_data if e.key == "location"})
    try:
        for loc in locations:
            digest.update((path.parent / loc).read_bytes())
        model = onnx.load(str(path), load_external_data=True)
    except (OSError, onnx.checker.ValidationError) as exc:
        raise OnnxModelError(
            f"{path} keeps weights in external data files {locations} that cannot be read ({exc}); keep them "
            "beside the .onnx file, named as when it was saved (and inside its folder)."
        ) from exc
    return model, digest.hexdigest()


def _tensors(model: Any) -> list[Any]:
    """Initializers and constant tensors of the graph and its subgraphs (where external data can live)."""
    tensors = list(model.graph.initializer)
    for node in iter_nodes(model.graph):
        for attr in node.attribute:
            tensors.extend([attr.t] if attr.HasField("t") else [])
            tensors.extend(attr.tensors)
    return tensors


def from_model_proto(model: Any, *, kind: str, name: str, file_name: str, sha256: str,
                     reference: Reference | None = None, provenance: dict[str, Any] | None = None) -> OnnxSource:
    """Check size and loadability in ORT, then wrap a ``ModelProto`` as an :class:`OnnxSource`."""
    size = model.ByteSize()
    if size > MAX_FILE_BYTES:
        raise OnnxModelError(f"{file_name} is {size} bytes with its weights; bundles hold models up to 2 GB.")
    if not model.graph.node:
        raise OnnxModelError(f"{file_name} has an empty graph; it is not a usable ONNX model.")
    src = OnnxSource(kind=kind, name=name, file_name=file_name, sha256=sha256, model=model,
                     inputs=input_infos(model), output_names=output_names(model),
                     provenance=dict(provenance or {}), reference=reference)
    if not src.inputs:
        raise OnnxModelError(f"{file_name} has no graph inputs; edgepack packages models that take inputs.")
    src._engine = open_reference(src.model_bytes(), what=file_name)
    return src


def load_onnx_source(
    model: Any,
    *,
    example_input: Any = None,
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> OnnxSource:
    """Load any ONNX-convertible source.

    Args:
        model: ``.onnx`` path, ``torch.nn.Module``, ``.keras``/``.h5`` path, SavedModel directory,
            ``keras.Model`` or ``onnx.ModelProto``.
        example_input: for PyTorch: one tensor/array or a tuple of them (batch of 1 is fine).
        opset: ONNX opset for exports (None: the exporter's default: 20 for torch, tf2onnx's for Keras).
        dynamic_batch: export the first dimension of every input as dynamic (PyTorch).

    Raises:
        OnnxModelError, OnnxOpsetError, OnnxOperatorError, ExportError, SourceModelError.
    """
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise SourceModelError(f"model {path} does not exist; pass {SUPPORTED}.")
        if path.is_dir() or path.suffix.lower() in (".keras", ".h5", ".hdf5"):
            from edgepack.converters.formats.onnx.from_keras import keras_to_onnx

            return keras_to_onnx(path, opset=opset)
        if path.suffix.lower() in (".pt", ".pth", ".pt2", ".ckpt"):
            raise SourceModelError(f"{path.name} is a PyTorch checkpoint: build the nn.Module, load its weights "
                                   "and pass the module with example_input=... (edgepack never unpickles files).")
        if path.suffix.lower() != ".onnx":
            raise SourceModelError(f"unsupported model file {path.name!r}; pass {SUPPORTED}.")
        proto, sha = read_onnx(path)
        return from_model_proto(proto, kind="onnx", name=path.stem, file_name=path.name, sha256=sha,
                                provenance={"exporter": proto.producer_name or "unknown",
                                            "exporter_version": proto.producer_version or ""})
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from edgepack.converters.formats.onnx.from_torch import torch_to_onnx

        return torch_to_onnx(model, example_input, opset=opset, dynamic_batch=dynamic_batch)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        from edgepack.converters.formats.onnx.from_keras import keras_to_onnx

        return keras_to_onnx(model, opset=opset)
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        data = model.SerializeToString()
        name = model.graph.name or "model"
        return from_model_proto(model, kind="onnx", name=name, file_name=f"{name}.onnx",
                                sha256=hashlib.sha256(data).hexdigest())
    raise SourceModelError(f"cannot convert a {type(model).__name__} to ONNX; pass {SUPPORTED}.")
