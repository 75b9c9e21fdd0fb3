"""One-shot magnitude pruning of a bare ONNX model: the weight initializers of Conv, ConvTranspose, Gemm and MatMul
(never biases) get their smallest-magnitude values set to zero. No fine-tuning (there is no training graph); the
zeros make the bundle's deflated model entry smaller."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.converters.errors import PruningError
from edgepack.converters.pruning.keras_sparsity import MIN_WEIGHTS, check_ratio, keep_masks

#: op type → input positions holding weights (biases are left alone).
_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}
_FLOAT = (np.float32, np.float16, np.float64)


def _weight_names(model: Any) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        for pos in _WEIGHT_INPUTS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] in inits and node.input[pos] not in names:
                names.append(node.input[pos])
    return names


def sparsify_onnx(model: Any, *, sparsity: float, global_sparsity: bool = True,
                  min_weights: int = MIN_WEIGHTS) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with ``sparsity`` of its Conv/Gemm/MatMul weights set to zero, and a report.

    Global: one magnitude threshold over all those weights (weights of initializers smaller than ``min_weights``
    count but stay dense); per layer: each initializer loses ``sparsity`` of its values.

    Raises:
        PruningError: ``sparsity`` outside (0, 1), or no float weight initializer to prune.
    """
    import onnx
    from onnx import numpy_helper

    ratio = check_ratio(sparsity)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    by_name = {i.name: i for i in out.graph.initializer}
    weights = {}
    for name in _weight_names(out):
        arr = numpy_helper.to_array(by_name[name])
        if arr.dtype.type in _FLOAT and arr.size > 1:
            weights[name] = arr
    if not weights:
        raise PruningError("the ONNX model has no float Conv, Gemm or MatMul weight initializer to prune "
                           "(a quantized or weightless graph).")
    dense = [n for n, w in weights.items() if w.size < min_weights]
    eligible = {n: w for n, w in weights.items() if n not in dense}
    if not eligible:
        raise PruningError(f"every weight initializer has fewer than {min_weights} values; nothing worth pruning.")
    masks = keep_masks(weights, eligible, ratio, global_sparsity=global_sparsity)
    final = dict(weights)
    for n, keep_mask in masks.items():
        final[n] = np.where(keep_mask, weights[n], 0).astype(weights[n].dtype)
        by_name[n].CopyFrom(numpy_helper.from_array(final[n], n))
    per = {n: float(1.0 - np.count_nonzero(w) / w.size) for n, w in final.items()}
    zeros = sum(int(w.size - np.count_nonzero(w)) for w in final.values())
    total = sum(w.size for w in final.values())
    report = {"kind": "sparsity", "framework": "onnx", "target": ratio, "global": global_sparsity,
              "sparsity": zeros / total, "layers": per, "dense_layers": dense,
              "weights": {"prunable": total, "zeros": zeros},
              "schedule": {"kind": "one-shot"}, "finetune": None}
    return out, report
