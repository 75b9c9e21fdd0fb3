"""Channel dependency groups of a Keras 3 graph: which layers must lose the same output channels together.

Every tensor gets a *signature*: ``(repeat, ((group, count), ...))`` — its last axis is ``repeat`` copies of the
concatenated channel segments (``repeat > 1`` after ``Flatten``: NHWC position ``p`` holds channels at
``p * C + c``). A group is a set of channels produced by Conv/Dense layers that residual merges tie together.
Groups reaching a model output, the model input, a protected layer or a layer we cannot read stay whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.converters.errors import PruningError

Sig = tuple[int, tuple[tuple[int, int], ...]]

#: Layers whose output channels are their own (``filters`` / ``units``) and whose kernel reads input channels.
PRODUCERS = {"Conv1D": "filters", "Conv2D": "filters", "Conv3D": "filters", "Dense": "units",
             "SeparableConv1D": "filters", "SeparableConv2D": "filters"}
#: Output channel c comes from input channel c (depth_multiplier 1).
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
#: Per-channel weights on the last axis.
CHANNELWISE = {"BatchNormalization", "LayerNormalization"}
#: No weights, output channels are the input channels.
PASS_THROUGH = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
}
#: Element-wise merges: every input carries the same channel set.
MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
#: keras.ops functions called on symbolic tensors (not layers) that keep the channels: element-wise only.
OP_PASS = {"Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Tanh", "Gelu", "Elu", "Selu", "LeakyRelu",
           "Softplus", "Abs", "Negative", "Square", "Sqrt", "Exp", "Clip"}

#: Shape-only layers we do not follow through: the channels they read stay whole (always safe: they see the same input).
OPAQUE = {"Reshape", "Permute", "RepeatVector"}


@dataclass
class LayerRole:
    """How one layer follows the plan: ``kind`` is producer, depthwise, channelwise, reshape or other."""

    kind: str
    inputs: Sig | None = None
    group: int | None = None  # producers: the group of their output channels


@dataclass
class GroupGraph:
    """Channel groups of a model (union-find over group ids) and each layer's role."""

    parent: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    producers: dict[int, list[str]] = field(default_factory=dict)
    fixed: set[int] = field(default_factory=set)
    roles: dict[str, LayerRole] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    unknown: list[tuple[str, str, str, Sig]] = field(default_factory=list)  # name, class, why, input sig

    def new(self, count: int, *, producer: str | None = None, fixed: bool = False) -> int:
        """A new group of ``count`` channels."""
        gid = len(self.parent)
        self.parent.append(gid)
        self.size.append(count)
        self.producers[gid] = [producer] if producer else []
        if fixed:
            self.fixed.add(gid)
        return gid

    def find(self, gid: int) -> int:
        """The representative of ``gid``'s group."""
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        """Tie two groups of the same size together."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.producers[ra] += self.producers.pop(rb)

    def fix(self, sig: Sig | None) -> None:
        """Keep every group of ``sig`` whole."""
        for gid, _ in (sig[1] if sig else ()):
            self.fixed.add(gid)

    def is_fixed(self, gid: int) -> bool:
        """True when ``gid``'s group must keep all its channels."""
        root = self.find(gid)
        return any(self.find(f) == root for f in self.fixed)

    def groups(self) -> list[int]:
        """Representatives of every group that has producers."""
        return sorted({self.find(g) for g in range(len(self.parent)) if self.producers.get(self.find(g))})


def kept_indices(graph: GroupGraph, sig: Sig, kept: dict[int, np.ndarray]) -> np.ndarray:
    """Indices along the last axis of a tensor with signature ``sig`` that survive (``kept``: root → indices)."""
    repeat, segments = sig
    total = sum(n for _, n in segments)
    parts, offset = [], 0
    for gid, n in segments:
        parts.append(offset + kept.get(graph.find(gid), np.arange(n)))
        offset += n
    one = np.concatenate(parts) if parts else np.arange(0)
    return (np.arange(repeat)[:, None] * total + one[None, :]).reshape(-1)


def _channels_last(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _last_axis(axis: Any, rank: int) -> bool:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] in (-1, rank - 1)


def _why_unknown(layer: Any, cls: str, shapes: list[tuple]) -> str | None:
    """Why a layer of a known class still cannot be followed (None: it can)."""
    if getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None):
        return "quantized layer"
    if not _channels_last(layer):
        return "channels_first layout"
    if cls in PRODUCERS and (getattr(layer, "groups", 1) != 1 or getattr(layer, "lora_enabled", False)):
        return "grouped convolution or LoRA"
    if cls in DEPTHWISE | {"SeparableConv1D", "SeparableConv2D"} and getattr(layer, "depth_multiplier", 1) != 1:
        return "depth_multiplier != 1"
    if cls in CHANNELWISE and not _last_axis(layer.axis, len(shapes[0])):
        return "normalizes an axis other than the channels"
    if cls == "Flatten" and any(d is None for d in shapes[0][1:]):
        return "unknown spatial size"
    return None


def _fixed_sig(graph: GroupGraph, tensor: Any) -> Sig:
    """A tensor whose channels never change (model inputs, outputs of layers we do not follow)."""
    count = int(tensor.shape[-1] or 0) if tensor.shape else 0
    return (1, ((graph.new(count, fixed=True), count),))


def _unit_reshape(before: tuple, after: tuple) -> bool:
    """True when a reshape only adds or drops size-1 axes before the channels."""
    def ones(shape: tuple) -> bool:
        return all(d == 1 for d in shape[1:-1])
    return len(before) > 1 and len(after) > 1 and before[-1] == after[-1] and ones(before) and ones(after)


def _merge(graph: GroupGraph, sigs: list[Sig]) -> Sig:
    """Inputs of an element-wise merge share channels: tie their segments, or keep them all whole."""
    first = sigs[0]
    if all(s[0] == first[0] and [n for _, n in s[1]] == [n for _, n in first[1]] for s in sigs):
        for other in sigs[1:]:
            for (a, _), (b, _) in zip(first[1], other[1]):
                graph.union(a, b)
    else:  # broadcasting or different concatenation layouts: safe only if nothing changes
        for s in sigs:
            graph.fix(s)
    return first


def _concat(layer: Any, sigs: list[Sig], rank: int, graph: GroupGraph) -> Sig | None:
    if _last_axis(layer.axis, rank):
        if any(s[0] != 1 for s in sigs):
            return None
        return (1, tuple(seg for s in sigs for seg in s[1]))
    return _merge(graph, sigs)


def build_graph(model: Any, protect: set[str]) -> GroupGraph:
    """Walk ``model``'s nodes in order and resolve its channel groups.

    Raises:
        PruningError: a subclassed model, or a layer shared by several calls.
    """
    from keras.layers import Layer

    graph_model = getattr(model, "_functional", None) or model
    by_depth = getattr(graph_model, "_nodes_by_depth", None)
    if by_depth is None:
        raise PruningError(f"model {model.name!r} is a subclassed keras.Model: channel removal needs a Sequential "
                           "or Functional model (build it with keras.Input) whose config can be rebuilt")
    graph = GroupGraph()
    sigs: dict[int, Sig] = {}
    seen: set[str] = set()
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            layer, cls = node.operation, type(node.operation).__name__
            outs = list(node.outputs)
            if node.is_input:
                for t in outs:
                    sigs[id(t)] = _fixed_sig(graph, t)
                continue
            if layer.name in seen:
                raise PruningError(f"layer {layer.name!r} ({cls}) is called more than once (shared weights): channel "
                                   "removal cannot rebuild it; use a model without shared layers")
            seen.add(layer.name)
            graph.order.append(layer.name)
            ins = [sigs[id(t)] for t in node.input_tensors]
            shapes = [tuple(t.shape) for t in node.input_tensors]
            why = None if len(outs) == 1 and ins else "several outputs or no inputs"
            why = why or _why_unknown(layer, cls, shapes)
            if why is None and not isinstance(layer, Layer):  # a keras.ops call
                if cls in OP_PASS:
                    cls = "Activation"
                elif cls not in MERGES and cls != "Concatenate":
                    why = "keras.ops call whose channels cannot be followed"
            out: Sig | None = None
            if why is None and cls in PRODUCERS and len(ins) == 1:
                count = int(outs[0].shape[-1])
                gid = graph.new(count, producer=layer.name)
                graph.roles[layer.name] = LayerRole("producer", ins[0], gid)
                out = (1, ((gid, count),))
            elif why is None and (cls in DEPTHWISE or cls in CHANNELWISE) and len(ins) == 1:
                graph.roles[layer.name] = LayerRole("depthwise" if cls in DEPTHWISE else "channelwise", ins[0])
                out = ins[0]
            elif why is None and cls in PASS_THROUGH and len(ins) == 1:
                out = ins[0]
            elif why is None and cls == "Flatten":
                spatial = math.prod(int(d) for d in shapes[0][1:-1]) if len(shapes[0]) > 2 else 1
                out = (ins[0][0] * spatial, ins[0][1])
            elif why is None and cls == "Reshape" and _unit_reshape(shapes[0], tuple(outs[0].shape)):
                graph.roles[layer.name] = LayerRole("reshape", ins[0])
                out = ins[0]  # (N, C) → (N, 1, 1, C), as in squeeze-and-excite blocks
            elif why is None and cls in MERGES:
                out = _merge(graph, ins)
            elif why is None and cls == "Concatenate":
                out = _concat(layer, ins, len(shapes[0]), graph)
                why = None if out is not None else "concatenates flattened tensors"
            if out is None and why is None and cls in OPAQUE:
                for s in ins:
                    graph.fix(s)
            elif out is None:
                for s in ins:
                    graph.unknown.append((layer.name, cls, why or "layer type not supported", s))
            graph.roles.setdefault(layer.name, LayerRole("other"))
            for t in outs:
                sigs[id(t)] = out if out is not None else _fixed_sig(graph, t)
            if layer.name in protect:  # a protected Conv/Dense keeps its filters; other layers keep what they read
                graph.fix(out)
                for s in ins if graph.roles[layer.name].kind != "producer" else ():
                    graph.fix(s)
    for t in graph_model.outputs:
        graph.fix(sigs[id(t)])
    _check_unknown(graph, protect)
    return graph


def _check_unknown(graph: GroupGraph, protect: set[str]) -> None:
    """A layer we cannot follow is fine only when every channel group it reads stays whole."""
    for name, cls, why, sig in graph.unknown:
        if name in protect:
            continue
        loose = [g for g, _ in sig[1] if not graph.is_fixed(g)]
        if loose:
            producers = sorted({p for g in loose for p in graph.producers.get(graph.find(g), [])})
            raise PruningError(
                f"cannot resolve the channel groups at layer {name!r} ({cls}: {why}); it reads channels of "
                f"{', '.join(map(repr, producers))}. Pass protect=[{name!r}] to keep the channels it reads whole")
