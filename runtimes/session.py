"""``load()`` a bundle and run it: the on-device entry point."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends.base import Backend, Engine, get_backend, registered_backends
from .bundle import Bundle, BundleLimits, read_bundle
from .detection import Detection, detect, fit_geometry
from .errors import BackendUnavailableError, BundleSchemaError, ConfigError, InputSpecError
from .ladder import DEFAULT_DELEGATES, DelegateAttempt, climb
from .manifest import ColorOrder, Manifest, ModelEntry, PostprocessKind, TensorSpec, check_top_k
from .postprocess import Classification, classify, segment
from .preprocess import preprocess
from .tensors import Inputs, as_input_list, check_finite, check_shape, check_values, dequantize, to_model_dtype

if TYPE_CHECKING:
    from .signing import TrustStore

#: Backends tried when neither the caller nor the bundle's target names one; ``tf-lite`` is last resort.
DEFAULT_BACKEND_ORDER = ("litert", "onnxruntime", "tflite-runtime", "tf-lite")


@dataclass(frozen=True)
class Prediction:
    """Result of :meth:`Session.predict`: ``top_k`` for classifiers, ``detections`` (boxes in original frame
    pixels) for detectors, ``mask`` (the original frame's height x width) for segmentation; raw ``outputs``."""

    top_k: list[Classification]
    outputs: list[np.ndarray]
    detections: list[Detection] = field(default_factory=list)
    mask: np.ndarray | None = None


class Session:
    """A bundle's model loaded on the best verified delegate. Thread-safe; one interpreter per session."""

    def __init__(self, bundle: Bundle, entry: ModelEntry, backend: Backend, engine: Engine,
                 fallback_log: list[DelegateAttempt]) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.model = entry
        self.backend = backend.name
        self.backend_version = backend.version()
        self.fallback_log = fallback_log
        self.labels = bundle.labels()
        self._engine = engine
        self._in_specs = engine.inputs
        self._out_specs = engine.outputs
        self._lock = threading.Lock()
        # The exact (shape, dtype) of each input at batch 1: such arrays skip every check in run().
        self._fast = [
            ((1, *sp.shape[1:]) if sp.shape and sp.shape[0] == -1 else tuple(sp.shape), np.dtype(sp.dtype))
            for sp in self._in_specs
        ]
        self._fast1 = self._fast[0] if len(self._fast) == 1 else None
        self._fast_float = self._fast1 is not None and self._fast1[1].kind == "f"
        self._dequantize = any(sp.quantization is not None for sp in self._out_specs)

    @property
    def delegate(self) -> str:
        """The delegate / execution provider the model runs on."""
        return self._engine.delegate

    @property
    def delegated_partitions(self) -> int:
        """Graph partitions the chosen accelerator took (0 on plain CPU kernels)."""
        return self._engine.delegated_partitions

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs as the interpreter reports them."""
        return self._in_specs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs as the interpreter reports them."""
        return self._out_specs

    def explain(self) -> str:
        """One line a person can read: where it runs and why the others were dropped."""
        dropped = "; ".join(str(a) for a in self.fallback_log if a.outcome not in ("selected", "absent"))
        return (f"{self.backend} {self.backend_version} on {self.delegate} "
                f"({self.delegated_partitions} delegated partition(s))" + (f"; dropped: {dropped}" if dropped else ""))

    def run(self, inputs: Inputs, *, dequantize_outputs: bool = True) -> list[np.ndarray]:
        """Run once. Float inputs are quantized for int8/uint8 models; outputs come back as float32.

        Args:
            inputs: one array, a list in input order, or a dict by input name.
            dequantize_outputs: return raw integer outputs of quantized models when False.

        Raises:
            InputSpecError: wrong count, names, shape or dtype; an empty batch; NaN or inf in a float input. Checked
                before the interpreter is touched, so the session stays usable.
        """
        fast = self._fast1
        one = inputs[0] if type(inputs) in (list, tuple) and len(inputs) == 1 else inputs  # type: ignore[index]
        if fast is not None and type(one) is np.ndarray and one.shape == fast[0] and one.dtype == fast[1]:
            if self._fast_float:
                check_finite(one, self._in_specs[0])  # one sum: the hot path's only check
            ready = [one]  # hot path: exactly the tensor the model takes (alone or in a list), nothing to convert
        else:
            ready = []
            for arr, spec in zip(as_input_list(inputs, self._in_specs), self._in_specs):
                check_shape(arr, spec)
                check_values(arr, spec)
                ready.append(to_model_dtype(arr, spec))
        with self._lock:
            raw = self._engine.run(ready)
        if not (dequantize_outputs and self._dequantize):
            return raw
        return [dequantize(o, s) for o, s in zip(raw, self._out_specs)]

    def preprocess(self, image: np.ndarray, *, color: ColorOrder = ColorOrder.BGR) -> np.ndarray:
        """Apply the bundle's pre-processing to one image (OpenCV BGR by default)."""
        spec = self.manifest.preprocessing
        if spec is None:
            raise InputSpecError("this bundle has no pre-processing spec; call run() with a ready tensor instead.")
        return preprocess(image, spec, source=color)

    def predict(self, image: np.ndarray, *, color: ColorOrder = ColorOrder.BGR, top_k: int | None = None) -> Prediction:
        """Pre-process one image, run, and post-process: top-k labels for classifiers, boxes (SSD or YOLO decoding,
        NMS) for detectors, a mask for segmentation — boxes and masks in the original image's pixels.

        Pixel values are read by dtype: uint8 0..255, uint16 0..65535, float 0..1 (docs/architecture.md "Session").

        Raises:
            InputSpecError: an empty image, an unsupported dtype, or float pixels outside 0..1 (or NaN/inf).
            ConfigError: ``top_k`` below 1.
        """
        if top_k is not None:
            check_top_k(top_k)
        outputs = self.run(self.preprocess(image, color=color))
        post = self.manifest.postprocessing
        if post.kind is PostprocessKind.CLASSIFICATION:
            return Prediction(top_k=classify(outputs[0], post, self.labels, top_k=top_k), outputs=outputs)
        if post.kind is PostprocessKind.RAW or not (post.ssd or post.yolo or post.mask):
            return Prediction(top_k=[], outputs=outputs)
        pre = self.manifest.preprocessing
        assert pre is not None  # self.preprocess() refused a bundle without one
        frame_hw = (int(np.shape(image)[0]), int(np.shape(image)[1]))
        geometry = fit_geometry(frame_hw, pre.size, pre.resize)
        if post.mask is not None:
            mask = segment(outputs[0], post.mask, input_size=pre.size, geometry=geometry, frame_hw=frame_hw)
            return Prediction(top_k=[], outputs=outputs, mask=mask)
        found = detect(outputs, post, self.labels, input_size=pre.size, geometry=geometry, frame_hw=frame_hw)
        return Prediction(top_k=[], outputs=outputs, detections=found)

    def raw_engine(self) -> Engine:
        """The backend engine (benchmarks compare against it)."""
        return self._engine

    def close(self) -> None:
        """Release the interpreter."""
        self._engine.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _backend_order(manifest: Manifest, backend: str | None) -> list[str]:
    if backend is not None:
        return [backend]
    preferred = list(manifest.target.runtimes) if manifest.target else []
    order = [b for b in preferred if b != "tf-lite"] + [b for b in DEFAULT_BACKEND_ORDER if b not in preferred]
    return list(dict.fromkeys([*order, *sorted(registered_backends())]))  # then any other registered backend


def _choose(manifest: Manifest, backend: str | None) -> tuple[Backend, ModelEntry]:
    formats = [m.format for m in manifest.models]
    if not formats:
        raise BundleSchemaError("the bundle holds no model (its manifest lists none); it cannot be run — "
                                "re-export it with `edgepack convert`.")
    known = registered_backends()
    tried = []
    for name in _backend_order(manifest, backend):
        cls = known.get(name)
        if cls is None or not any(f in cls.formats for f in formats):
            if backend is not None:
                get_backend(name)  # raises BackendNotFoundError with the list
                raise ConfigError(f"backend {name!r} runs {list(cls.formats) if cls else []}; bundle holds {formats}")
            continue
        if not cls.available():
            tried.append(f"{name} (not installed)")
            if backend is not None:
                get_backend(name)  # raises BackendUnavailableError with the install hint
            continue
        entry = next(m for m in manifest.models if m.format in cls.formats)
        return get_backend(name), entry
    raise BackendUnavailableError(
        f"no installed runtime can run this bundle's {formats} model(s); tried: {', '.join(tried)}. "
        "Install one: pip install 'edgepack[litert]' (tflite) or 'edgepack[onnxruntime]' (onnx)."
    )


def load(
    path: str | os.PathLike[str] | Bundle,
    *,
    backend: str | None = None,
    delegates: Sequence[str] | None = None,
    num_threads: int | None = None,
    verify_golden: bool = True,
    options: object | None = None,
    trust: TrustStore | str | os.PathLike[str] | None = None,
    limits: BundleLimits | None = None,
) -> Session:
    """Verify a bundle and load its model on the best delegate that proves itself on the golden data.

    Args:
        path: the ``.epk`` file (or an already-read :class:`Bundle`).
        backend: force a backend (``litert``, ``tflite-runtime``, ``onnxruntime``, ``tf-lite``).
        delegates: ladder order; default: the bundle target's order, else gpu → nnapi → xnnpack → cpu.
        num_threads: interpreter threads (None: the library's default).
        verify_golden: check every delegate against the bundle's golden outputs (recommended).
        options: backend-specific session options, e.g. ``OrtOptions`` for onnxruntime.
        trust: a :class:`~edgepack.runtimes.signing.TrustStore` or a folder of trusted ``.pub`` keys; when given,
            a bundle not signed by a trusted, unrevoked key (or altered since) raises a ``BundleSignatureError``
            before any model byte reaches an interpreter (docs/signing.md).
        limits: caps on what reading the bundle may cost (``BundleLimits``; default: sized for a 1 GB device).
    """
    bundle = path if isinstance(path, Bundle) else read_bundle(path, limits=limits)
    if trust is not None:
        from .signing import verify_bundle

        verify_bundle(bundle, trust)
    manifest = bundle.manifest
    chosen, entry = _choose(manifest, backend)
    chosen.configure(options, bundle_path=bundle.path)
    target_ladder = manifest.target.delegates if manifest.target else ()
    ladder = tuple(delegates) if delegates is not None else tuple(target_ladder or DEFAULT_DELEGATES)
    from .opcheck import check_runtime_supports

    check_runtime_supports(entry, chosen)
    engine, attempts = climb(
        chosen, bundle.model_bytes(entry), entry, delegates=ladder, num_threads=num_threads,
        golden_inputs=bundle.golden_inputs(), golden_outputs=bundle.golden_outputs(entry), verify=verify_golden,
    )
    return Session(bundle, entry, chosen, engine, attempts)
