"""Structured channel removal for Keras 3 models: a smaller dense model rebuilt from its config, weights sliced.

Dependency groups (Conv → BatchNorm → activation → next Conv/Depthwise/Dense, Flatten feeding Dense, residual
merges and Concatenate) come from :mod:`edgepack.converters.pruning.keras_groups`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.converters.errors import PruningError
from edgepack.converters.pruning.keras_groups import PRODUCERS, GroupGraph, build_graph, kept_indices
from edgepack.runtimes.recipe import Importance


@dataclass(frozen=True)
class ChannelPlan:
    """What channel removal did.

    Attributes:
        layers: every layer whose channels shrank (Conv/Dense and the depthwise/normalization layers that follow
            them) → (channels before, channels after).
        protected: Conv/Dense layers left whole (outputs/heads, groups that end in an output, ``protect``).
        kept: pruned Conv/Dense layer → the original indices of the output channels it kept (not in the JSON).
    """

    layers: dict[str, tuple[int, int]]
    protected: tuple[str, ...]
    kept: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict:
        """JSON form (for reports)."""
        return {"layers": {k: list(v) for k, v in self.layers.items()}, "protected": list(self.protected)}


def _validate(model: Any, ratio: float, importance: Any, round_to: int) -> Importance:
    import keras

    if not isinstance(model, keras.Model):
        raise PruningError(f"channel removal needs a keras.Model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is None:
        raise PruningError(f"Sequential model {model.name!r} is not built: start it with keras.Input(shape) "
                           "(or call it on data once) before removing channels")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
        raise PruningError(f"ratio must be a fraction of channels to remove, strictly between 0 and 1 (got {ratio!r})")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PruningError(f"round_to must be a positive integer channel multiple (got {round_to!r})")
    try:
        return Importance(importance)
    except ValueError as exc:
        raise PruningError(f"unknown importance {importance!r}; use one of "
                           f"{', '.join(i.value for i in Importance)}") from exc


def _keep_count(count: int, ratio: float, round_to: int) -> int:
    """Channels kept: ``count * (1 - ratio)`` rounded to a multiple of ``round_to``, at least ``round_to``."""
    if count <= round_to:
        return count
    keep = max(round_to, round(count * (1.0 - ratio) / round_to) * round_to)
    return keep if keep <= count else (count // round_to) * round_to


def _weight_scores(layer: Any, norm: Importance) -> np.ndarray:
    """L1/L2 norm of each output filter of a Conv/Dense/SeparableConv layer."""
    name = "pointwise_kernel" if type(layer).__name__.startswith("Separable") else "kernel"
    kernel = next(np.asarray(w.numpy()) for w in layer.weights if w.name == name)
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]).astype(np.float64))
    return flat.sum(axis=0) if norm is Importance.L1 else np.sqrt((flat**2).sum(axis=0))


def _activation_scores(model: Any, names: list[str], data: np.ndarray | None) -> dict[str, np.ndarray]:
    """Mean |activation| per output channel of each named layer, measured on ``data``."""
    import keras

    if data is None:
        raise PruningError("importance=activation needs data: pass data=<array of model inputs, sample first>")
    if len(model.inputs) != 1:
        raise PruningError("importance=activation takes one data array; this model has several inputs: use l1 or l2")
    data = np.asarray(data)
    want = tuple(model.inputs[0].shape[1:])
    fits = data.ndim == len(want) + 1 and all(w is None or w == d for w, d in zip(want, data.shape[1:]))
    if not fits or not len(data):
        raise PruningError(f"data of shape {data.shape} does not fit the model input (N, {', '.join(map(str, want))})")
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(data.astype(np.float32), batch_size=64, verbose=0)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return {n: np.abs(o.reshape(-1, o.shape[-1])).astype(np.float64).mean(axis=0) for n, o in zip(names, outs)}


def _choose(model: Any, graph: GroupGraph, *, ratio: float, importance: Importance, round_to: int,
            data: np.ndarray | None) -> dict[int, np.ndarray]:
    """Per prunable group root: the kept channel indices (sorted)."""
    fixed = {graph.find(g) for g in graph.fixed}
    todo = {r: _keep_count(graph.size[r], ratio, round_to) for r in graph.groups() if r not in fixed}
    todo = {r: k for r, k in todo.items() if k < graph.size[r]}
    if not todo:
        raise PruningError(f"nothing to prune in {model.name!r}: every Conv/Dense group is an output, protected or "
                           f"has at most round_to={round_to} channels")
    names = [p for r in todo for p in graph.producers[r]]
    if importance is Importance.ACTIVATION:
        scores = _activation_scores(model, names, data)
    else:
        scores = {n: _weight_scores(model.get_layer(n), importance) for n in names}
    kept = {}
    for root, keep in todo.items():
        total = sum(scores[p] for p in graph.producers[root])
        kept[root] = np.sort(np.argsort(-total, kind="stable")[:keep])
    return kept


def _slice_weights(layer: Any, role: Any, graph: GroupGraph, kept: dict[int, np.ndarray]) -> list[np.ndarray]:
    """The layer's weights with removed channels cut out."""
    out = []
    for w in layer.weights:
        value = np.asarray(w.numpy())
        if role.kind in ("depthwise", "channelwise"):
            idx = kept_indices(graph, role.inputs, kept)
            value = value[..., idx, :] if value.ndim > 1 else value[idx]  # depthwise kernel (..., C, 1), vectors
        elif role.kind == "producer":
            root = graph.find(role.group)
            o_idx = kept.get(root, np.arange(graph.size[root]))
            if w.name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                value = value[..., kept_indices(graph, role.inputs, kept), :]
            if w.name in ("kernel", "pointwise_kernel", "bias"):
                value = value[..., o_idx]
        out.append(value)
    return out


def remove_channels(model: Any, *, ratio: float, importance: Importance = Importance.L1, round_to: int = 4,
                    data: np.ndarray | None = None, protect: Sequence[str] = ()) -> tuple[Any, ChannelPlan]:
    """Remove the least important output channels of every prunable Conv/Dense group and rebuild the model.

    Args:
        model: a Sequential or Functional Keras 3 model (built, with ``keras.Input``).
        ratio: fraction of channels removed per prunable group, in (0, 1).
        importance: L1/L2 norm of each filter (summed over a group), or ACTIVATION (mean |output| on ``data``).
        round_to: channel counts after removal are multiples of this (at least ``round_to``); groups this small
            are left whole. Use the target's ``channel_multiple``.
        data: input samples (sample axis first) for ``Importance.ACTIVATION``.
        protect: more layer names to keep whole (model outputs are protected automatically); a layer channel
            removal cannot follow (custom, Lambda, Reshape...) can be named here to keep the channels it reads.

    Returns:
        A new model (same layer names and configs except ``filters``/``units``) with sliced weights, and the plan.

    Raises:
        PruningError: bad ratio/round_to/importance/data, nothing prunable, or a layer whose channel groups
            cannot be resolved (the message names it).
    """
    import keras

    importance = _validate(model, ratio, importance, round_to)
    graph_model = getattr(model, "_functional", None) or model
    names = {op.name for op in getattr(graph_model, "operations", model.layers)}
    missing = [p for p in protect if p not in names]
    if missing:
        raise PruningError(f"protect names layers that are not in the model: {', '.join(map(repr, missing))}")
    graph = build_graph(model, set(protect))
    kept = _choose(model, graph, ratio=float(ratio), importance=importance, round_to=round_to, data=data)

    def counts(role: Any) -> tuple[int, int]:
        if role.kind == "producer":
            root = graph.find(role.group)
            return graph.size[root], len(kept.get(root, range(graph.size[root])))
        full = kept_indices(graph, role.inputs, {})
        return len(full), len(kept_indices(graph, role.inputs, kept))

    changed = {n: counts(r) for n, r in graph.roles.items() if r.kind != "other"}
    changed = {n: c for n, c in changed.items() if c[0] != c[1]}

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        role = graph.roles.get(layer.name)
        if role is not None and role.kind == "producer" and layer.name in changed:
            config[PRODUCERS[type(layer).__name__]] = changed[layer.name][1]
        elif role is not None and role.kind == "reshape" and layer.name in changed:
            config["target_shape"] = (*tuple(config["target_shape"])[:-1], changed[layer.name][1])
        return type(layer).from_config(config)

    inputs = None
    if not isinstance(model, keras.Sequential):  # keep the input layers' names
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)
                  for t in model.inputs]
        inputs = inputs if isinstance(model.input, (list, tuple)) else inputs[0]
    try:
        pruned = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    except (ValueError, TypeError) as exc:
        raise PruningError(f"the pruned model of {model.name!r} could not be rebuilt from its config: {exc}") from exc
    for layer in (layer for layer in model.layers if layer.weights):
        role = graph.roles.get(layer.name)
        new = pruned.get_layer(layer.name)
        if role is not None and role.kind != "other":
            new.set_weights(_slice_weights(layer, role, graph, kept))
        else:
            new.set_weights(layer.get_weights())
    fixed = {graph.find(g) for g in graph.fixed}
    protected = [n for n in graph.order
                 if graph.roles[n].kind == "producer" and graph.find(graph.roles[n].group) in fixed]
    protected += [p for p in protect if p not in protected]
    kept_by_layer = {n: tuple(int(i) for i in kept[graph.find(r.group)]) for n, r in graph.roles.items()
                     if r.kind == "producer" and graph.find(r.group) in kept}
    return pruned, ChannelPlan(layers=changed, protected=tuple(protected), kept=kept_by_layer)
