"""ONNX half of :mod:`edgepack.measure.qdebug`: ``onnxruntime.quantization.qdq_loss_debug`` on a QDQ model.

The QDQ model is quantized by the converters' own :func:`~edgepack.converters.formats.onnx.quantize.quantize`
with a real recipe (the bundle's, the caller's, or ``qdq-int8`` resolved for this host), so the layers analysed,
the names suggested for ``recipe.exclude`` and the re-quantization with those layers in float are exactly what
``convert`` makes. Models run only through :func:`edgepack.runtimes.backends.get_backend`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.formats.base import InputInfo
from edgepack.converters.formats.onnx.inspect import input_infos
from edgepack.converters.formats.onnx.prepare import prepare_float
from edgepack.converters.formats.onnx.quantize import SampleReader, quantize
from edgepack.converters.formats.onnx.source import read_onnx
from edgepack.measure.qdebug import (
    BackendResult,
    GivenModel,
    LayerError,
    QuantDebugError,
    float_outputs,
    output_snr,
    rank,
    snr_db,
    suggest,
)
from edgepack.measure.runners import OnnxFileRunner, Runner
from edgepack.runtimes.backends import DELEGATE_ERRORS, get_backend
from edgepack.runtimes.backends.onnxruntime import GraphOptimization, OrtOptions
from edgepack.runtimes.recipe import Recipe
from edgepack.runtimes.tensors import to_model_dtype

METHOD = "ONNX Runtime qdq_loss_debug (QDQ)"
#: Optimized-vs-plain output SNR gap that points at the int8 kernels rather than at the quantization itself.
KERNEL_GAP_DB = 6.0


@contextlib.contextmanager
def quiet_root_logger(level: int = logging.ERROR) -> Iterator[None]:
    """Silence the root logger below ``level`` for the block, then put it back as it was.

    ONNX Runtime's quantization tools (``quantize_static``, ``qdq_loss_debug``) log through the root logger with
    ``logging.warning(...)``, which also installs a stderr handler when the root has none: both the level and
    the handlers are restored, so a debug run changes nothing in the process's logging.
    """
    root = logging.getLogger()
    level_before, handlers_before = root.level, list(root.handlers)
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(level_before)
        for handler in [h for h in root.handlers if h not in handlers_before]:
            root.removeHandler(handler)


@dataclass
class Quantizer:
    """The converters' ONNX quantization of one float model, calibrated on the debug samples."""

    model: Any
    inputs: list[InputInfo]
    samples: Sequence[np.ndarray]

    @classmethod
    def from_file(cls, path: Path, samples: Sequence[np.ndarray]) -> Quantizer:
        """Read the float ``.onnx`` (with its external data)."""
        model, _ = read_onnx(path)
        return cls(model=model, inputs=input_infos(model), samples=samples)

    def quantize(self, recipe: Recipe, *, keep_float: Sequence[str] = ()) -> tuple[bytes, dict[str, Any]]:
        """Model bytes and what was done; ``keep_float`` extends ``recipe.exclude``."""
        if keep_float:
            recipe = replace(recipe, exclude=tuple(dict.fromkeys((*recipe.exclude, *keep_float))))
        with quiet_root_logger():
            model, info = quantize(self.model, recipe, calibration=[[x] for x in self.samples], inputs=self.inputs)
        return bytes(model.SerializeToString()), info

    def reader(self) -> SampleReader:
        """The samples as ONNX Runtime's calibration readers take them (one pass)."""
        return SampleReader([i.name for i in self.inputs], [[x] for x in self.samples])


def describe(recipe: Recipe, info: dict[str, Any]) -> str:
    """What :func:`quantize` did, in words (from its report, so nothing here reads ONNX-only recipe knobs)."""
    weights = "per-channel" if info.get("per_channel") else "per-tensor"
    parts = [str(info.get("mode", "?")), f"{weights} int8 weights", f"{info.get('activations', '?')} activations",
             str(info.get("calibration_method", "?")), f"reduce_range={bool(info.get('reduce_range'))}"]
    if info.get("excluded"):
        parts.append(f"{len(info['excluded'])} node(s) in float")
    return f"{recipe.name or recipe.precision.value} ({', '.join(parts)})"


def _combine(*snrs: float | None) -> float:
    """SNR of independent noise sources added together (noise-to-signal ratios add)."""
    nsr = sum(10 ** (-s / 10) for s in snrs if s is not None and math.isfinite(s))
    return math.inf if nsr == 0 else -10 * math.log10(nsr)


def _layers(float_path: Path, qdq_path: Path, quantizer: Quantizer, tmp: Path) -> list[LayerError]:
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as qd

    qd.modify_model_output_intermediate_tensors(str(float_path), str(tmp / "float_aug.onnx"))
    qd.modify_model_output_intermediate_tensors(str(qdq_path), str(tmp / "qdq_aug.onnx"))
    float_acts = qd.collect_activations(str(tmp / "float_aug.onnx"), quantizer.reader())  # type: ignore[arg-type]
    qdq_acts = qd.collect_activations(str(tmp / "qdq_aug.onnx"), quantizer.reader())  # type: ignore[arg-type]
    matched = qd.create_activation_matching(qdq_acts, float_acts)
    act_err = qd.compute_activation_error({k: v for k, v in matched.items() if "float" in v})
    graph = onnx.load(str(float_path)).graph
    weight_err = _weight_snr(graph, onnx.load(str(qdq_path)).graph)
    layers = []
    for node in graph.node:
        acts = [act_err[o] for o in node.output if o in act_err]
        weights = [weight_err[i] for i in node.input if i in weight_err]
        if not acts and not weights:
            continue
        act = min((a["qdq_err"] for a in acts), default=None)
        cum = min((a["xmodel_err"] for a in acts if "xmodel_err" in a), default=None)
        w = min(weights, default=None)
        layers.append(LayerError(name=node.name or node.output[0], op=node.op_type, snr_db=_combine(act, w),
                                 cumulative_snr_db=cum, weight_snr_db=w))
    return layers


def _weight_snr(float_graph: Any, qdq_graph: Any) -> dict[str, float]:
    """SNR of every quantized initializer vs its float original (computed in int32: no uint8 wrap-around)."""
    from onnx import numpy_helper

    floats = {i.name: i for i in float_graph.initializer}
    quants = {i.name: numpy_helper.to_array(i) for i in qdq_graph.initializer}
    out = {}
    for node in qdq_graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in quants:
            continue
        name = node.input[0].removesuffix("_quantized")
        if name not in floats:
            continue
        q = quants[node.input[0]].astype(np.float64)
        scale = quants[node.input[1]].astype(np.float64)
        zp = quants[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(scale)
        if scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        out[name] = snr_db(numpy_helper.to_array(floats[name]), (q - zp) * scale)
    return out


def run_onnx(model: bytes, samples: Sequence[np.ndarray], *, optimized: bool = True) -> list[np.ndarray]:
    """Outputs in the onnxruntime backend (CPU): with its graph optimizations (fused int8 kernels, as deployed)
    or with none (the plain QDQ arithmetic)."""
    backend = get_backend("onnxruntime")
    level = GraphOptimization.ALL if optimized else GraphOptimization.DISABLE
    backend.configure(OrtOptions(graph_optimization=level))
    try:
        engine = backend.open(model, delegate="cpu", num_threads=None)
    except DELEGATE_ERRORS as exc:
        raise QuantDebugError(f"onnxruntime cannot load the quantized model: {exc}") from exc
    try:
        outs = [engine.run([to_model_dtype(x, engine.inputs[0])]) for x in samples]
    except RuntimeError as exc:
        raise QuantDebugError(f"the quantized model does not run on the debug samples: {exc}") from exc
    finally:
        engine.close()
    return [np.concatenate([np.asarray(o[k], np.float32) for o in outs]) for k in range(len(outs[0]))]


def debug_onnx(float_path: Path, runner: Runner, samples: Sequence[np.ndarray], *, quantized: GivenModel | None,
               recipe: Recipe, min_snr_db: float, max_suggested: int, verify: bool) -> BackendResult:
    """Per-layer errors of a QDQ model (given, or quantized here with ``recipe``) against its float model."""
    if not isinstance(runner, OnnxFileRunner):
        raise QuantDebugError("ONNX per-layer debugging needs the float .onnx model.")
    quantizer = Quantizer.from_file(float_path, samples)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-qdebug-") as tmpdir, quiet_root_logger():
        tmp = Path(tmpdir)
        # The float graph exactly as quantize() sees it (named nodes, quant_pre_process), so that the float and the
        # QDQ model name the same tensors and the layer names are the names recipe.exclude takes.
        float_pre = tmp / "float_pre.onnx"
        float_pre.write_bytes(prepare_float(quantizer.model).model.SerializeToString())
        if quantized is None:
            qdq, info = quantizer.quantize(recipe)
            notes.append(f"quantized here by edgepack's ONNX quantizer (quant_pre_process + quantize_static) with "
                         f"recipe {describe(recipe, info)} on the given data")
        else:
            qdq = quantized.data
        qdq_path = tmp / "qdq.onnx"
        qdq_path.write_bytes(qdq)
        layers = rank(_layers(float_pre, qdq_path, quantizer, tmp))
        if not layers:
            raise QuantDebugError(f"the quantized model has no QuantizeLinear/DequantizeLinear pairs matching "
                                  f"{float_path.name}; pass the QDQ model made from this float model.")
        suggested = suggest(layers, min_snr_db=min_snr_db, max_layers=max_suggested)
        out_snr = kept = None
        if verify:
            reference = float_outputs(runner, samples)
            out_snr = output_snr(reference, run_onnx(qdq, samples))
            plain = output_snr(reference, run_onnx(qdq, samples, optimized=False))
            if plain - out_snr > KERNEL_GAP_DB:
                notes.append(
                    f"ONNX Runtime's optimized int8 kernels lose {plain - out_snr:.1f} dB against the plain QDQ math "
                    f"({out_snr:.1f} vs {plain:.1f} dB output SNR): on x86 CPUs without VNNI, uint8 x int8 products "
                    "saturate — quantize with reduce_range=True or int8 (S8S8) activations for such targets"
                )
            if suggested:
                kept = output_snr(reference, run_onnx(quantizer.quantize(recipe, keep_float=suggested)[0], samples))
            if quantized is not None:
                kept = _compare_given(quantizer, recipe, quantized, reference, kept, notes)
    return BackendResult(method=METHOD, samples=len(samples), layers=layers, suggested_float=suggested,
                         output_snr_db=out_snr, output_snr_db_kept_float=kept, notes=tuple(notes))


def _compare_given(quantizer: Quantizer, recipe: Recipe, given: GivenModel, reference: list[np.ndarray],
                   kept: float | None, notes: list[str]) -> float | None:
    """Re-quantize all layers here: is the given model what ``recipe`` makes from the given data? The SNR with the
    suggested layers in float stands next to the given model's only when it is (else both figures go in a note)."""
    mine, info = quantizer.quantize(recipe)
    what = f"the {given.origin}'s recipe {describe(recipe, info)}" if given.origin == "bundle" else (
        f"recipe {describe(recipe, info)}")
    if mine == given.data:
        notes.append(f"re-quantized here with {what} on the given data: byte-identical to the given model, so the "
                     "SNR with the suggested layers in float compares with it directly")
        return kept
    if kept is not None:
        all_layers = output_snr(reference, run_onnx(mine, quantizer.samples))
        notes.append(f"to judge the suggestion, both were re-quantized here with {what} on the given data (the "
                     f"given model differs: other calibration data or recipe): all layers {all_layers:.1f} dB, "
                     f"suggested in float {kept:.1f} dB")
    else:
        notes.append(f"re-quantized here with {what} on the given data: not the given model (other calibration "
                     "data or recipe)")
    return None
