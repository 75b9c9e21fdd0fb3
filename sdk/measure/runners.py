"""Uniform runners for :func:`edgepack.measure.evaluate`: bundles, Keras/SavedModel, ``.tflite`` and ``.onnx`` files.

Each runner takes batches of model-ready inputs and returns float outputs ``(N, ...)``; :func:`prepare`
turns one data sample (an image or a tensor) into a model-ready batch of one.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.measure.data import EvalDataError, is_image
from edgepack.runtimes.errors import InputSpecError
from edgepack.runtimes.manifest import ColorOrder, Preprocessing, TensorSpec
from edgepack.runtimes.preprocess import preprocess
from edgepack.runtimes.session import Session, load
from edgepack.runtimes.tensors import dequantize, shape_fits, to_model_dtype


@dataclass(frozen=True)
class RunOptions:
    """How models are loaded and fed (rare knobs)."""

    backend: str | None = None
    delegates: tuple[str, ...] | None = None
    num_threads: int | None = None
    batch_size: int = 64


class Runner:
    """A model that maps model-ready batches to float outputs."""

    name: str = ""
    kind: str = ""
    precision: str | None = None
    size_bytes: int | None = None
    preprocessing: Preprocessing | None = None
    labels: list[str]
    input: TensorSpec
    batchable: bool = False

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run a batch; float32 outputs in a fixed order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""

    def describe_input(self) -> str:
        """Input shape and pre-processing in words (for notes about differing specs)."""
        pre = self.preprocessing
        spec = (f"{pre.size[0]}x{pre.size[1]} {pre.color.value} {pre.layout.value} {pre.resize.value}"
                if pre else "no pre-processing spec")
        return f"{list(self.input.shape)} {self.input.dtype}, {spec}"


class BundleRunner(Runner):
    """An ``.epk`` bundle (or a loaded Session) run by the edgepack runtime."""

    def __init__(self, session: Session, *, owned: bool) -> None:
        self.session, self._owned = session, owned
        m = session.manifest
        self.name = Path(str(session.bundle.path)).stem if session.bundle.path else m.name
        self.kind, self.precision, self.size_bytes = "bundle", session.model.precision, session.model.bytes
        self.preprocessing, self.labels = m.preprocessing, session.labels
        if len(session.inputs) != 1:
            raise EvalDataError(f"{self.name} takes {len(session.inputs)} inputs; evaluate() handles one-input models.")
        self.input = session.inputs[0]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        outs = [self.session.run(x[i : i + 1]) for i in range(len(x))]
        return [np.concatenate([o[k] for o in outs]).astype(np.float32) for k in range(len(outs[0]))]

    def close(self) -> None:
        if self._owned:
            self.session.close()


class KerasRunner(Runner):
    """A Keras / SavedModel source, called through its serving signature (needs TensorFlow)."""

    def __init__(self, model: Any, *, preprocessing: Preprocessing | None) -> None:
        from edgepack.converters.formats.tflite.source import load_source

        self.src = load_source(model)
        if len(self.src.inputs) != 1:
            raise EvalDataError(f"{self.src.name} takes {len(self.src.inputs)} inputs; evaluate() handles one.")
        i = self.src.inputs[0]
        self.name, self.kind, self.precision = self.src.file_name, f"source ({self.src.kind})", "fp32"
        self.input, self.preprocessing, self.labels, self.batchable = (
            TensorSpec(name=i.name, shape=i.shape, dtype=i.dtype), preprocessing, [], i.shape[0] == -1)
        path = Path(model) if isinstance(model, (str, os.PathLike)) else None
        self.size_bytes = path.stat().st_size if path is not None and path.is_file() else None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        out = self.src.predict([x])
        return [np.asarray(out[k], np.float32) for k in sorted(out)]

    def close(self) -> None:
        self.src.close()


class TFLiteFileRunner(Runner):
    """A bare ``.tflite`` file, run in ai-edge-litert (XNNPACK)."""

    def __init__(self, path: Path, *, preprocessing: Preprocessing | None, num_threads: int | None) -> None:
        from edgepack.runtimes.backends import get_backend

        data = path.read_bytes()
        self.engine = get_backend("litert").open(data, delegate="xnnpack", num_threads=num_threads)
        if len(self.engine.inputs) != 1:
            raise EvalDataError(f"{path.name} takes {len(self.engine.inputs)} inputs; evaluate() handles one.")
        self.name, self.kind, self.size_bytes = path.name, "tflite file", len(data)
        self.input, self.preprocessing, self.labels = self.engine.inputs[0], preprocessing, []

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        outs = []
        for i in range(len(x)):
            raw = self.engine.run([to_model_dtype(x[i : i + 1], self.input)])
            outs.append([dequantize(o, s) for o, s in zip(raw, self.engine.outputs)])
        return [np.concatenate([o[k] for o in outs]).astype(np.float32) for k in range(len(outs[0]))]

    def close(self) -> None:
        self.engine.close()


_TRANSPOSES = (((2, 0, 1), "NHWC tensors transposed to NCHW"), ((1, 2, 0), "NCHW tensors transposed to NHWC"))


class OnnxFileRunner(Runner):
    """A bare ``.onnx`` file, run in the onnxruntime backend (CPU)."""

    def __init__(self, path: Path, *, preprocessing: Preprocessing | None, num_threads: int | None) -> None:
        from edgepack.runtimes.backends import get_backend

        self.engine = get_backend("onnxruntime").open(_onnx_bytes(path), delegate="cpu", num_threads=num_threads)
        if len(self.engine.inputs) != 1:
            raise EvalDataError(f"{path.name} takes {len(self.engine.inputs)} inputs; evaluate() handles one.")
        self.name, self.kind, self.size_bytes = path.name, "onnx file", path.stat().st_size
        self.input, self.preprocessing, self.labels = self.engine.inputs[0], preprocessing, []
        self.batchable = self.input.shape[:1] == (-1,)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        outs = self.engine.run([x.astype(self.input.dtype)])
        return [np.asarray(o, np.float32) for o in outs]

    def close(self) -> None:
        self.engine.close()


def _onnx_bytes(path: Path) -> bytes:
    """The model's bytes, external-data files inlined where ``onnx`` is installed (a model loaded from bytes has
    no folder to find them in)."""
    if importlib.util.find_spec("onnx") is None:
        return path.read_bytes()
    from edgepack.converters.formats.onnx.source import read_onnx

    return bytes(read_onnx(path)[0].SerializeToString())


def open_runner(model: Any, *, preprocessing: Preprocessing | None, options: RunOptions) -> Runner:
    """A runner for a bundle path/Session, a ``.tflite``/``.onnx`` file, or a Keras/SavedModel source."""
    if isinstance(model, Runner):
        return model
    if isinstance(model, Session):
        return BundleRunner(model, owned=False)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        suffix = path.suffix.lower()
        if suffix == ".epk":
            session = load(path, backend=options.backend, delegates=options.delegates, num_threads=options.num_threads)
            runner: Runner = BundleRunner(session, owned=True)
            if preprocessing is not None and runner.preprocessing != preprocessing:
                raise InputSpecError(f"{path.name} carries its own pre-processing spec; do not pass preprocessing=.")
            return runner
        if suffix == ".tflite" and path.is_file():
            return TFLiteFileRunner(path, preprocessing=preprocessing, num_threads=options.num_threads)
        if suffix == ".onnx" and path.is_file():
            return OnnxFileRunner(path, preprocessing=preprocessing, num_threads=options.num_threads)
    return KerasRunner(model, preprocessing=preprocessing)


def prepare(sample: np.ndarray, color: ColorOrder, runner: Runner) -> tuple[np.ndarray, str | None]:
    """One sample → a model-ready batch of one, plus a note when it had to be converted.

    Images go through the model's own pre-processing spec, so models with different input specs can be
    compared on the same images. Tensors must fit the input; NHWC↔NCHW is converted when that makes them fit.
    """
    spec, sample = runner.input, np.asarray(sample)
    if is_image(sample):
        if runner.preprocessing is not None:
            return preprocess(sample, runner.preprocessing, source=color), None
        for cand in (sample[None], sample[None, ..., None]):
            if shape_fits(cand.shape, spec.shape) and np.dtype(spec.dtype) == np.uint8:
                return cand, None
        raise EvalDataError(
            f"{runner.name} has no pre-processing spec, so it cannot take images: pass preprocessing=Preprocessing(...)"
            " (or compare it with a bundle, whose spec is then used), or pass model-ready float tensors."
        )
    x = sample.astype(np.float32) if sample.dtype.kind == "f" or np.dtype(spec.dtype).kind == "f" else sample
    for cand in (x[None], x):
        if shape_fits(cand.shape, spec.shape):
            return cand, None
    if x.ndim == 3:
        for perm, note in _TRANSPOSES:
            cand = np.ascontiguousarray(x.transpose(perm))[None]
            if shape_fits(cand.shape, spec.shape):
                return cand, f"{runner.name}: {note}"
    raise InputSpecError(
        f"{runner.name} expects input {list(spec.shape)} (-1 = any) but the data holds tensors of shape "
        f"{list(sample.shape)}; tensors cannot be resized for another model — pass raw images (uint8) so each "
        "model applies its own pre-processing, or tensors shaped for this model."
    )


def collect_outputs(
    runner: Runner, data: Iterable[tuple[np.ndarray, int | None]], color: ColorOrder, *, batch_size: int,
    advance: Callable[[], None] = lambda: None,
) -> tuple[list[np.ndarray], np.ndarray | None, list[str]]:
    """Stream ``data`` through the runner: outputs stacked ``(N, ...)``, labels (None if unlabeled), notes."""
    step = batch_size if runner.batchable else 1
    chunks: list[list[np.ndarray]] = []
    labels: list[int | None] = []
    notes: set[str] = set()
    buf: list[np.ndarray] = []
    for sample, label in data:
        x, note = prepare(sample, color, runner)
        if note:
            notes.add(note)
        buf.append(x)
        labels.append(label)
        if len(buf) >= step:
            chunks.append(runner.run(np.concatenate(buf)))
            buf = []
        advance()
    if buf:
        chunks.append(runner.run(np.concatenate(buf)))
    if not chunks:
        raise EvalDataError("the data yielded no samples.")
    outputs = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    have = [v for v in labels if v is not None]
    if have and len(have) != len(labels):
        raise EvalDataError("some samples have labels and some do not; label all of them or none.")
    return outputs, (np.asarray(have, np.int64) if have else None), sorted(notes)


def same_preprocessing(a: Runner, b: Runner) -> bool:
    """True when both models see identical inputs for the same sample."""
    return a.preprocessing == b.preprocessing and tuple(a.input.shape[1:]) == tuple(b.input.shape[1:])
