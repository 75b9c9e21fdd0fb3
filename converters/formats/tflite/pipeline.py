"""The TFLite format: SavedModel/Keras (or an existing ``.tflite``) → ``.tflite``, run in real ai-edge-litert."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.artifact import ModelArtifact, build_artifact
from edgepack.converters.errors import ConversionError
from edgepack.converters.formats.base import Description, ModelFormatPlugin, Source, get_format, register_format
from edgepack.converters.formats.tflite.export import export_tflite
from edgepack.converters.formats.tflite.inspect import summarize
from edgepack.converters.formats.tflite.source import SourceModel, load_source
from edgepack.runtimes.backends import get_backend
from edgepack.runtimes.backends.base import DELEGATE_ERRORS, Engine
from edgepack.runtimes.backends.tflite_common import TFLiteEngine
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.recipe import Recipe


def open_litert(data: bytes, *, delegate: str = "xnnpack", num_threads: int | None = None) -> TFLiteEngine:
    """Load model bytes in real ai-edge-litert; a model that fails to prepare is a ConversionError."""
    try:
        engine = get_backend("litert").open(data, delegate=delegate, num_threads=num_threads)
    except DELEGATE_ERRORS as exc:
        if any(not op.startswith("Flex") for op in summarize(data).custom_ops):  # Select-TF ops: the message below
            custom_op_delegates(data)  # a custom op no delegate implements: one line naming it
        raise ConversionError(
            f"the model does not load in ai-edge-litert on {delegate} ({type(exc).__name__}: {_one_line(exc)}); "
            "a model with Select-TF (Flex) ops needs a runtime that registers them — otherwise try another recipe."
        ) from exc
    if not isinstance(engine, TFLiteEngine):
        raise ConversionError(f"the litert backend returned a {type(engine).__name__}, not a TFLite engine.")
    return engine


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def custom_op_delegates(data: bytes) -> tuple[tuple[str, ...], dict[str, str]]:
    """For a model with custom ops: the ai-edge-litert delegates it prepares on (found by loading it on each), and
    what happened on every delegate. The first is ``()`` (any delegate) when the plain CPU kernels implement them
    (``TFLite_Detection_PostProcess`` is such a custom op: a delegate hands what it lacks back to the CPU).

    Raises:
        ConversionError: no delegate implements its custom ops (one line naming them).
    """
    ops = summarize(data).custom_ops
    if not ops:
        return (), {}
    backend = get_backend("litert")
    outcomes: dict[str, str] = {}
    for name in backend.delegates:
        try:
            backend.open(data, delegate=name, num_threads=1).close()
        except (OSError, AttributeError) as exc:  # the delegate's library is absent here: nothing proved
            outcomes[name] = f"not available here ({_one_line(exc)[:120]})"
        except (ValueError, RuntimeError) as exc:
            outcomes[name] = f"failed to prepare ({_one_line(exc)[:160]})"
        else:
            outcomes[name] = "prepared"
    prepared = tuple(n for n, o in outcomes.items() if o == "prepared")
    if not prepared:
        tried = "; ".join(f"{n}: {o.split(' (')[0]}" for n, o in outcomes.items())
        raise ConversionError(f"custom op(s) {', '.join(dict.fromkeys(ops))} are implemented by no delegate of "
                              f"ai-edge-litert ({tried}); edgepack cannot package this model — re-export it without "
                              "them (e.g. with builtin ops only).")
    return (() if "cpu" in prepared else prepared), outcomes


def signature_order(engine: TFLiteEngine, source: SourceModel) -> tuple[list[int], list[str]]:
    """For each engine input, its index in ``source.inputs``; for each engine output, the source name."""
    interp = engine.raw_interpreter()
    n_in, n_out = len(engine.inputs), len(engine.outputs)
    if not source.inputs or "serving_default" not in interp.get_signature_list():
        return list(range(n_in)), [f"output_{k}" for k in range(n_out)]
    runner = interp.get_signature_runner("serving_default")
    by_index_in = {d["index"]: name for name, d in runner.get_input_details().items()}
    by_index_out = {d["index"]: name for name, d in runner.get_output_details().items()}
    names = [i.name for i in source.inputs]
    in_idx = [d["index"] for d in interp.get_input_details()]
    out_idx = [d["index"] for d in interp.get_output_details()]
    return [names.index(by_index_in[i]) for i in in_idx], [by_index_out[i] for i in out_idx]


@register_format
class TFLiteFormat(ModelFormatPlugin):
    """``.tflite`` flatbuffers for LiteRT (ai-edge-litert, tflite-runtime)."""

    name = "tflite"
    extension = "tflite"
    description = "TFLite flatbuffer for LiteRT / tflite-runtime (XNNPACK, GPU, NNAPI delegates)"
    validation_calibration_samples = 100

    @classmethod
    def claims(cls, model: Any) -> bool:
        return isinstance(model, (str, Path)) and str(model).lower().endswith(".tflite")

    def load_source(self, model: Any, *, example_input: Any = None) -> SourceModel:
        if example_input is not None:
            raise ConfigError("example_input is only used for PyTorch models (format onnx).")
        return load_source(model)

    def input_specs(self, source: Source) -> tuple[list[tuple[int, ...]], list[str]]:
        if not isinstance(source, SourceModel) or source.kind != "tflite":
            return super().input_specs(source)
        engine = open_litert(source.tflite_bytes or b"")
        try:
            return ([s.shape for s in engine.inputs],
                    ["float32" if s.quantization else s.dtype for s in engine.inputs])
        finally:
            engine.close()

    def input_names(self, source: Source) -> list[str]:
        if not isinstance(source, SourceModel) or source.kind != "tflite":
            return super().input_names(source)
        engine = open_litert(source.tflite_bytes or b"")
        try:
            return [s.name for s in engine.inputs]
        finally:
            engine.close()

    def export(self, source: Source, recipe: Recipe, *, calibration: Sequence[Sequence[np.ndarray]]
               ) -> tuple[bytes, dict[str, Any]]:
        if not isinstance(source, SourceModel):
            raise ConversionError(f"the tflite format exports from TensorFlow sources, not {type(source).__name__}.")
        if source.kind == "tflite":
            return source.tflite_bytes or b"", {}
        return export_tflite(source, recipe, calibration=calibration), {}

    def open(self, data: bytes, *, reference: bool = False, num_threads: int | None = None) -> Engine:
        delegate = "xnnpack"
        if reference:  # plain kernels, unless custom ops exist only in a delegate (then the gap is 0)
            needs, _ = self._custom_op_delegates(data)
            delegate = needs[0] if needs else "cpu"
        return open_litert(data, delegate=delegate, num_threads=num_threads)

    def describe(self, data: bytes, engine: Engine) -> Description:
        summary = summarize(data)
        needs, outcomes = self._custom_op_delegates(data)
        warning = None
        if summary.custom_ops:
            where = f"run only on {', '.join(needs)}" if needs else "run on the plain CPU kernels"
            warning = (f"custom op(s) {list(dict.fromkeys(summary.custom_ops))} {where}: "
                       + "; ".join(f"{n} {o}" for n, o in outcomes.items()))
        return Description(
            precision=summary.precision,
            requires={"runtime": "tflite", "ops": summary.ops, "custom_ops": list(summary.custom_ops)},
            report={"xnnpack_partitions": engine.delegated_partitions, "tensor_types": summary.tensor_types,
                    **({"custom_op_delegates": outcomes} if outcomes else {})},
            warning=warning,
            delegates=needs,
        )

    def _custom_op_delegates(self, data: bytes) -> tuple[tuple[str, ...], dict[str, str]]:
        """:func:`custom_op_delegates` once per exported model: ``describe`` and the reference engine both ask, and
        for a model with custom ops each answer loads it on every delegate."""
        probed: tuple[bytes, tuple[tuple[str, ...], dict[str, str]]] | None = getattr(self, "_probed", None)
        if probed is None or probed[0] is not data:
            probed = self._probed = (data, custom_op_delegates(data))
        return probed[1]

    def io_order(self, engine: Engine, source: Source) -> tuple[list[int], list[str]]:
        if not isinstance(engine, TFLiteEngine) or not isinstance(source, SourceModel):
            return super().io_order(engine, source)
        return signature_order(engine, source)

    def can_validate(self, source: Source) -> bool:
        return getattr(source, "kind", None) != "tflite"  # packaged as it is: nothing to compare with


def build_tflite(source: SourceModel, recipe: Recipe, **options: Any) -> ModelArtifact:
    """:func:`~edgepack.converters.artifact.build_artifact` in the tflite format (``calibration=``, ``held_back=``,
    ``golden_sample=``, ``thresholds=``): export, load in the real runtime, validate, make golden data."""
    return build_artifact(get_format("tflite"), source, recipe, **options)
