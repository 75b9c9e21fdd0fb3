"""ONNX half of :mod:`edgepack.measure.qdebug`: ``onnxruntime.quantization.qdq_loss_debug`` on a QDQ model."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtimes.bundle import read_bundle

from edgepack.measure.runners import OnnxFileRunner, Runner
from edgepack.measure.qdebug import (
    BackendResult,
    LayerError,
    QuantDebugError,
    float_outputs,
    output_snr,
    rank,
    snr_db,
    suggest,
)

METHOD = "ONNX Runtime qdq_loss_debug (QDQ)"
#: Optimized-vs-plain output SNR gap that points at the int8 kernels rather than at the quantization itself.
KERNEL_GAP_DB = 6.0


class _Reader:
    """A ``CalibrationDataReader`` over prepared samples (one pass)."""

    def __init__(self, name: str, samples: Sequence[np.ndarray]) -> None:
        self._it = iter([{name: x} for x in samples])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_qdq(float_path: Path, out: Path, name: str, samples: Sequence[np.ndarray],
                 *, exclude: Sequence[str] = ()) -> Path:
    """Static QDQ quantization: per-channel int8 weights, uint8 activations, MinMax (edgepack's ONNX default)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(float_path), str(out), _Reader(name, samples), quant_format=QuantFormat.QDQ,  # type: ignore[arg-type]
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude) or None)
    return out


def _prepare_float(src: Path, dst: Path) -> Path:
    """Name every node and run ``quant_pre_process`` as the ONNX recipes do, so that the layer names reported
    here are the names ``recipe.exclude`` takes (``<Op>_<index>``, ``<original>/<Op>`` for rewritten nodes)."""
    import onnx

    from edgepack.converters.formats.onnx.inspect import name_nodes
    from edgepack.converters.formats.onnx.prepare import name_rewritten_nodes, preprocess

    model = onnx.load(str(src))
    name_nodes(model)
    named = dst.with_name("float_named.onnx")
    onnx.save(model, str(named))
    preprocess(named, dst)
    pre = onnx.load(str(dst))
    name_rewritten_nodes(model, pre)
    onnx.save(pre, str(dst))
    return dst


def _combine(*snrs: float | None) -> float:
    """SNR of independent noise sources added together (noise-to-signal ratios add)."""
    nsr = sum(10 ** (-s / 10) for s in snrs if s is not None and math.isfinite(s))
    return math.inf if nsr == 0 else -10 * math.log10(nsr)


def _layers(float_path: Path, qdq_path: Path, name: str, samples: Sequence[np.ndarray], tmp: Path) -> list[LayerError]:
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as qd

    qd.modify_model_output_intermediate_tensors(str(float_path), str(tmp / "float_aug.onnx"))
    qd.modify_model_output_intermediate_tensors(str(qdq_path), str(tmp / "qdq_aug.onnx"))
    float_acts = qd.collect_activations(str(tmp / "float_aug.onnx"), _Reader(name, samples))  # type: ignore[arg-type]
    qdq_acts = qd.collect_activations(str(tmp / "qdq_aug.onnx"), _Reader(name, samples))  # type: ignore[arg-type]
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


def _run(path: Path, name: str, samples: Sequence[np.ndarray], *, optimized: bool = True) -> list[np.ndarray]:
    """Outputs in ONNX Runtime: with its graph optimizations (fused int8 kernels, as deployed) or without."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {name: x}) for x in samples]
    return [np.concatenate([np.asarray(o[k], np.float32) for o in outs]) for k in range(len(outs[0]))]


def debug_onnx(float_path: Path, runner: Runner, samples: Sequence[np.ndarray], *, quantized: Any,
               min_snr_db: float, max_suggested: int, verify: bool) -> BackendResult:
    """Per-layer errors of a QDQ model (given, from an ONNX bundle, or quantized here) against its float model."""
    if not isinstance(runner, OnnxFileRunner):
        raise QuantDebugError("ONNX per-layer debugging needs the float .onnx model.")
    name = runner.input.name
    notes: list[str] = []
    logging.getLogger("root").setLevel(logging.ERROR)  # qdq_loss_debug logs every unmatched tensor
    with tempfile.TemporaryDirectory(prefix="edgepack-qdebug-") as tmpdir:
        tmp = Path(tmpdir)
        # Named nodes + ORT's pre-processing (shape inference, BN folding), as edgepack's ONNX recipes do, so that
        # the float and the QDQ model name the same tensors and float-vs-quantized compares like with like.
        float_path = _prepare_float(float_path, tmp / "float_pre.onnx")
        if quantized is None:
            qdq = quantize_qdq(float_path, tmp / "qdq.onnx", name, samples)
            notes.append("quantized here with quantize_static (QDQ, per-channel, U8S8, MinMax) on the given data")
        elif os.fspath(quantized).lower().endswith(".epk"):
            bundle = read_bundle(os.fspath(quantized))
            qdq = tmp / "qdq.onnx"
            qdq.write_bytes(bundle.model_bytes(bundle.manifest.model("onnx")))
        else:
            qdq = Path(os.fspath(quantized))
        layers = rank(_layers(float_path, qdq, name, samples, tmp))
        if not layers:
            raise QuantDebugError(f"{qdq.name} has no QuantizeLinear/DequantizeLinear pairs matching {float_path.name}"
                                  "; pass the QDQ model made from this float model.")
        suggested = suggest(layers, min_snr_db=min_snr_db, max_layers=max_suggested)
        out_snr = kept = None
        if verify:
            reference = float_outputs(runner, samples)
            out_snr = output_snr(reference, _run(qdq, name, samples))
            plain = output_snr(reference, _run(qdq, name, samples, optimized=False))
            if plain - out_snr > KERNEL_GAP_DB:
                notes.append(
                    f"ONNX Runtime's optimized int8 kernels lose {plain - out_snr:.1f} dB against the plain QDQ math "
                    f"({out_snr:.1f} vs {plain:.1f} dB output SNR): on x86 CPUs without VNNI, uint8 x int8 products "
                    "saturate — quantize with reduce_range=True or int8 (S8S8) activations for such targets"
                )
            if suggested:
                partial = quantize_qdq(float_path, tmp / "kept.onnx", name, samples, exclude=suggested)
                kept = output_snr(reference, _run(partial, name, samples))
                if quantized is not None:
                    mine = output_snr(reference, _run(quantize_qdq(float_path, tmp / "all.onnx", name, samples),
                                                      name, samples))
                    notes.append(f"to judge the suggestion, both were re-quantized here on the given data (QDQ, "
                                 f"per-channel, U8S8): all layers {mine:.1f} dB, suggested in float {kept:.1f} dB")
                    kept = None  # not comparable with the given model's SNR
    return BackendResult(method=METHOD, samples=len(samples), layers=layers, suggested_float=suggested,
                         output_snr_db=out_snr, output_snr_db_kept_float=kept, notes=tuple(notes))
