"""Size and compute of a Keras 3 model: parameters and multiply-accumulates for one sample."""

from __future__ import annotations

import math
from typing import Any


def _dims(shape: Any) -> list[int]:
    return [int(d) if d is not None else 1 for d in tuple(shape)[1:]]


def _node_macs(layer: Any, in_shape: Any, out_shape: Any) -> int:
    """MACs of one call of ``layer`` (0 for layers without multiplies worth counting)."""
    cls = type(layer).__name__
    ins, outs = _dims(in_shape), _dims(out_shape)
    if not ins or not outs:
        return 0
    c_in, c_out = ins[-1], outs[-1]
    if cls == "Dense":
        return math.prod(ins) * c_out
    kernel = math.prod(getattr(layer, "kernel_size", ()) or (1,))
    spatial_out = math.prod(outs[:-1])
    if cls in ("Conv1D", "Conv2D", "Conv3D"):
        return spatial_out * kernel * (c_in // max(1, getattr(layer, "groups", 1))) * c_out
    if cls in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        return math.prod(ins[:-1]) * kernel * c_in * c_out
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return spatial_out * kernel * c_out
    if cls in ("SeparableConv1D", "SeparableConv2D"):
        multiplier = getattr(layer, "depth_multiplier", 1)
        return spatial_out * (kernel * c_in * multiplier + c_in * multiplier * c_out)
    return 0


def keras_params_macs(model: Any) -> tuple[int, int]:
    """Parameters (trainable + non-trainable) and multiply-accumulates for one sample of ``model``.

    MACs count Conv (incl. depthwise, separable, transposed) and Dense layers on their actual input/output shapes
    (an unknown batch or spatial dimension counts as 1); nested models are counted through.
    """
    import keras

    graph = getattr(model, "_functional", None) or model
    macs = 0
    for nodes in getattr(graph, "_nodes_by_depth", {}).values():
        for node in nodes:
            op = node.operation
            if node.is_input or op is None:
                continue
            if isinstance(op, keras.Model):
                macs += keras_params_macs(op)[1]
            elif node.input_tensors and node.outputs:
                macs += _node_macs(op, node.input_tensors[0].shape, node.outputs[0].shape)
    return int(model.count_params()), int(macs)
