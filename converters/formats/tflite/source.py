"""Load a source model (Keras ``.keras``/``.h5``, SavedModel dir, in-memory ``keras.Model``, ``.tflite``)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.errors import SourceModelError
from edgepack.converters.formats.base import InputInfo
from edgepack.converters.tfenv import import_tensorflow, quiet_native_output

SUPPORTED = ".keras, .h5/.hdf5, a SavedModel directory, .tflite, or an in-memory keras.Model"


@dataclass
class SourceModel:
    """A loaded source model, uniformly callable through a SavedModel serving signature."""

    kind: str  # keras | savedmodel | tflite
    name: str
    file_name: str
    sha256: str
    saved_model_dir: Path | None = None
    tflite_bytes: bytes | None = None
    keras_model: Any = None
    inputs: list[InputInfo] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    #: Loaded with TensorFlow's TF1 SavedModel loader (a model TF2 can no longer restore): converted with the v1
    #: converter, run in a graph session.
    tf1: bool = False
    _fn: Any = None
    _tmp: Any = None
    _session: Any = None

    def predict(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Run the serving signature on a batch; outputs by signature output name."""
        if self._fn is None:
            raise SourceModelError(f"{self.kind} sources are not callable; they are packaged as they are.")
        tf = import_tensorflow()
        kwargs = {i.name: tf.constant(x) for i, x in zip(self.inputs, inputs)}
        out = self._fn(**kwargs)
        return {k: np.asarray(v) for k, v in out.items()}

    def close(self) -> None:
        """Delete the temporary SavedModel export and close a TF1 session, if any."""
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path)).encode() if path.is_dir() else b"")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_source(model: Any) -> SourceModel:
    """Load any supported source; raise :class:`SourceModelError` with what to do otherwise."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise SourceModelError(f"model {path} does not exist; pass {SUPPORTED}.")
        if path.is_dir():
            return _from_saved_model(path, kind="savedmodel", name=path.name, sha=_sha256_path(path))
        suffix = path.suffix.lower()
        if suffix == ".tflite":
            data = path.read_bytes()
            if data[4:8] != b"TFL3":
                raise SourceModelError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier).")
            return SourceModel(kind="tflite", name=path.stem, file_name=path.name,
                               sha256=hashlib.sha256(data).hexdigest(), tflite_bytes=data)
        if suffix in (".keras", ".h5", ".hdf5"):
            return _from_keras(_load_keras_file(path), name=path.stem, file_name=path.name, sha=_sha256_path(path))
        raise SourceModelError(f"unsupported model file {path.name!r}; pass {SUPPORTED} (ONNX: see --format onnx).")
    keras = _keras()
    if isinstance(model, keras.Model):
        return _from_keras(model, name=model.name or "model", file_name=f"{model.name}.keras", sha="in-memory")
    raise SourceModelError(f"cannot convert a {type(model).__name__}; pass {SUPPORTED}.")


def _keras() -> Any:
    import_tensorflow()
    import keras

    return keras


def _load_keras_file(path: Path) -> Any:
    keras = _keras()
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                has_config = "model_config" in fh.attrs
        except OSError as exc:
            raise SourceModelError(f"{path} is not a readable HDF5 file ({exc}).") from exc
        if not has_config:
            raise SourceModelError(
                f"{path} holds weights only (no model_config): build the model in code, "
                "load_weights() into it, and pass the keras.Model (or save it as .keras)."
            )
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, AttributeError) as exc:
        legacy = " It looks like a legacy Keras 2 (tf.keras) file." if path.suffix.lower() != ".keras" else ""
        raise SourceModelError(
            f"Keras {keras.__version__} cannot load {path.name}: {type(exc).__name__}: {exc}.{legacy} "
            "If it uses custom layers, load it where they are defined and pass the keras.Model; "
            "for Keras 2 files, load it with tf_keras and `model.export('saved_model_dir')`, "
            "then convert that directory."
        ) from exc


def _from_keras(model: Any, *, name: str, file_name: str, sha: str) -> SourceModel:
    tmp = tempfile.TemporaryDirectory(prefix="edgepack-export-")
    export_dir = Path(tmp.name) / "saved_model"
    try:
        model.export(str(export_dir), format="tf_saved_model", verbose=False)
    except (ValueError, TypeError, NotImplementedError) as exc:
        tmp.cleanup()
        raise SourceModelError(f"could not export Keras model {name!r} to a SavedModel: {exc}") from exc
    src = _from_saved_model(export_dir, kind="keras", name=name, sha=sha)
    src.file_name, src.keras_model, src._tmp = file_name, model, tmp
    return src


def _from_saved_model(path: Path, *, kind: str, name: str, sha: str) -> SourceModel:
    tf = import_tensorflow()
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise SourceModelError(f"{path} is a directory but not a SavedModel (no saved_model.pb).")
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise SourceModelError(f"TensorFlow cannot load the SavedModel {path}: {exc}") from exc
    except (AttributeError, TypeError, KeyError) as exc:  # objects of an older TensorFlow this one cannot restore
        return _from_tf1_saved_model(path, kind=kind, name=name, sha=sha, reason=f"{type(exc).__name__}: {exc}")
    signatures = dict(loaded.signatures)
    if "serving_default" not in signatures:
        raise SourceModelError(
            f"SavedModel {path} has no 'serving_default' signature (it has {sorted(signatures) or 'none'}); "
            "export it with a serving signature, e.g. tf.saved_model.save(m, dir, signatures=m.__call__"
            ".get_concrete_function(tf.TensorSpec([None, ...], tf.float32)))."
        )
    fn = signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    inputs = [
        InputInfo(name=k, shape=tuple(-1 if d is None else int(d) for d in s.shape), dtype=s.dtype.name)
        for k, s in sorted(specs.items())
    ]
    outputs = sorted(fn.structured_outputs)
    src = SourceModel(kind=kind, name=name, file_name=path.name, sha256=sha, saved_model_dir=path,
                      inputs=inputs, output_names=outputs)
    src._fn = fn
    src._loaded = loaded  # type: ignore[attr-defined]  # keep the trackable alive
    return src


def _from_tf1_saved_model(path: Path, *, kind: str, name: str, sha: str, reason: str) -> SourceModel:
    """A SavedModel TF2 cannot restore (saved by an older TensorFlow), loaded as a TF1 graph: its serving
    signature runs in a session, and the v1 converter converts it (``SourceModel.tf1``)."""
    tf = import_tensorflow()
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    try:
        with graph.as_default(), quiet_native_output():
            meta = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], str(path))
    except (OSError, ValueError, RuntimeError, KeyError, tf.errors.OpError) as exc:
        session.close()
        raise SourceModelError(
            f"TensorFlow {tf.__version__} cannot restore the SavedModel {path.name} ({reason}), nor load it as a TF1 "
            f"graph ({type(exc).__name__}: {exc}). Re-export it with a current TensorFlow (tf.saved_model.save with "
            "a serving signature), or convert the .tflite / .onnx its authors ship."
        ) from exc
    sig = meta.signature_def.get("serving_default")
    if sig is None:
        session.close()
        raise SourceModelError(f"SavedModel {path} has no 'serving_default' signature (it has "
                               f"{sorted(meta.signature_def) or 'none'}); export it with a serving signature.")
    inputs = [InputInfo(name=k, shape=tuple(-1 if d.size < 0 else int(d.size) for d in v.tensor_shape.dim),
                        dtype=tf.dtypes.as_dtype(v.dtype).name) for k, v in sorted(sig.inputs.items())]
    feeds = {k: v.name for k, v in sig.inputs.items()}
    fetches = {k: sig.outputs[k].name for k in sorted(sig.outputs)}

    def run(**kwargs: Any) -> dict[str, Any]:
        return dict(session.run(fetches, {feeds[k]: np.asarray(x) for k, x in kwargs.items()}))

    src = SourceModel(kind=kind, name=name, file_name=path.name, sha256=sha, saved_model_dir=path, inputs=inputs,
                      output_names=list(fetches), tf1=True)
    src._fn, src._session = run, session
    return src
