"""Structured channel removal for PyTorch with torch-pruning's dependency graph (DepGraph): a smaller dense model.

torch-pruning (``pip install 'edgepack[torch]'``) resolves which channels must go together (Conv → BatchNorm →
activation → next Conv, depthwise convs, residual adds, concatenations) and really shrinks the layers. This module
adds what deployment needs around it: output layers found and protected automatically (every Conv/Linear that
produces a model output, e.g. a classifier's last Linear or both heads of a detector), channel counts rounded to
the target's multiple, a check that the pruned model still runs and keeps its output shapes, and errors that name
the module at fault.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edgepack.converters.errors import PruningError
from edgepack.runtimes.recipe import Importance

log = logging.getLogger("edgepack.converters")
#: Exceptions torch / torch-pruning raise on a model they cannot trace or prune (re-raised as PruningError).
_TORCH_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, IndexError, AssertionError, NotImplementedError)
#: At most this many samples of ``data`` are run to measure activation importance.
ACTIVATION_SAMPLES = 512


def _inputs(torch: Any, example_input: Any) -> tuple[Any, ...]:
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item))
        if not isinstance(item, torch.Tensor):
            raise PruningError(f"example_input[{i}] is a {type(item).__name__}; pass a tensor (or a tuple of tensors) "
                               "shaped like the model's inputs, a batch of 1 is enough.")
        out.append(item.detach())
    if not out:
        raise PruningError("example_input is empty; pass a tensor shaped like the model's input.")
    return tuple(out)


def _flat_outputs(torch: Any, out: Any) -> list[Any]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flat_outputs(torch, item)]
    return []


@contextlib.contextmanager
def _running_module(module: Any) -> Iterator[list[str]]:
    """Track the innermost submodule whose forward is running, to name it when something fails inside it."""
    stack: list[str] = []

    def leave(mod: Any, args: Any, out: Any) -> None:  # a forward hook must return None (else it replaces out)
        if stack:
            stack.pop()

    hooks = []
    for name, sub in module.named_modules():
        hooks.append(sub.register_forward_pre_hook(lambda m, a, n=name: stack.append(n) and None))
        hooks.append(sub.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in hooks:
            h.remove()


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def _where(stack: list[str]) -> str:
    inner = [n for n in stack if n]
    return f" in submodule '{inner[-1]}'" if inner else ""


def output_layers(module: Any, example_input: Any) -> list[str]:
    """Names of the Conv/Linear submodules that produce the model's outputs (nothing but shape/elementwise ops
    between them and an output), found by walking the autograd graph back from every output."""
    import torch
    from torch import nn

    args = _inputs(torch, example_input)
    owner: dict[Any, str] = {}
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    hooks = [m.register_forward_hook(lambda mod, a, o, n=name: owner.__setitem__(o.grad_fn, n)
                                     if isinstance(o, torch.Tensor) and o.grad_fn is not None else None)
             for name, m in module.named_modules() if isinstance(m, kinds)]
    try:
        with torch.enable_grad():
            outs = _flat_outputs(torch, module(*args))
    finally:
        for h in hooks:
            h.remove()
    found: list[str] = []
    seen: set[Any] = set()
    todo = [o.grad_fn for o in outs if o.grad_fn is not None]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in owner:
            if owner[fn] not in found:
                found.append(owner[fn])
            continue
        todo.extend(nxt for nxt, _ in fn.next_functions)
    return found


def _check_custom_parameters(tp: Any, module: Any) -> None:
    """Refuse modules holding their own parameters that torch-pruning would prune along a guessed dimension."""
    from torch_pruning import ops

    graph = tp.DependencyGraph()
    for name, sub in module.named_modules():
        own = [(p_name, p) for p_name, p in sub.named_parameters(recurse=False) if sum(s > 1 for s in p.shape) > 0]
        if not own:
            continue
        kind = ops.module2type(sub)
        if kind in graph.REGISTERED_PRUNERS and kind != ops.OPTYPE.ELEMENTWISE:
            continue
        p_name, p = own[0]
        raise PruningError(
            f"cannot remove channels around submodule '{name or type(sub).__name__}' ({type(sub).__name__}): it "
            f"holds its own parameter '{p_name}' {tuple(p.shape)}, and torch-pruning cannot tell which dimension "
            "follows the channels. Build it from standard layers (nn.Conv2d, nn.Linear, nn.BatchNorm2d, ...), or "
            "use sparsity pruning for this model.")


def _importance(tp: Any, importance: Importance, data: Any) -> Any:
    importance = Importance(importance)
    if importance is Importance.ACTIVATION:
        if data is None:
            raise PruningError("importance=activation measures channels on data: pass data=... (a few hundred "
                               "input samples), or use importance=l1.")
        return tp.importance.ActivationImportance(p=1)
    return tp.importance.MagnitudeImportance(p=1 if importance is Importance.L1 else 2)


def _out_channels(module: Any) -> dict[str, int]:
    from torch import nn

    counts = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            counts[name] = int(m.out_channels)
        elif isinstance(m, nn.Linear):
            counts[name] = int(m.out_features)
    return counts


def _shapes(torch: Any, module: Any, args: tuple[Any, ...]) -> list[tuple[int, ...]]:
    with torch.no_grad(), _running_module(module) as stack:
        try:
            return [tuple(o.shape) for o in _flat_outputs(torch, module(*args))]
        except _TORCH_ERRORS as exc:
            raise PruningError(f"the pruned model fails to run{_where(stack)}: {_first_line(exc)}. Protect that "
                               "layer with protect=[...].") from exc


def remove_channels_torch(module: Any, example_input: Any, *, ratio: float, importance: Importance = Importance.L1,
                          round_to: int = 4, data: Any = None,
                          protect: Sequence[str] = ()) -> tuple[Any, dict[str, tuple[int, int]]]:
    """Remove ``ratio`` of the channels of every prunable Conv/Linear group (a deep copy; the input is untouched).

    Args:
        module: a ``torch.nn.Module``.
        example_input: a tensor (or tuple of tensors) shaped like the model's inputs, to trace the graph.
        ratio: fraction of each group's channels removed, strictly between 0 and 1.
        importance: ``L1``/``L2`` weight magnitude, or ``ACTIVATION`` (mean absolute activation on ``data``).
        round_to: channel counts kept are rounded down to a multiple of this (the target's kernel width).
        data: input samples (tensor/array, sample index first; a tuple for several inputs) for
            ``importance=ACTIVATION`` (the first 512 are run; ignored by L1/L2).
        protect: names of submodules (``model.named_modules()``) whose output channels are kept; the layers
            producing the model's outputs are always kept.

    Returns:
        The pruned module (real smaller layers, eval mode) and ``{submodule name: (out channels before, after)}``
        for every Conv/Linear.

    Raises:
        PruningError: bad ratio/round_to/protect names, nothing prunable, a module torch-pruning cannot handle
            (named), or a pruned model that no longer runs or changed its output shapes.
    """
    import torch

    if not 0.0 < float(ratio) < 1.0:
        raise PruningError(f"ratio={ratio!r} must lie strictly between 0 and 1 (0.5 removes half the channels).")
    if int(round_to) < 1:
        raise PruningError(f"round_to={round_to} must be 1 or more (channel counts are rounded to its multiples).")
    if not isinstance(module, torch.nn.Module):
        raise PruningError(f"expected a torch.nn.Module, got {type(module).__name__}.")
    import torch_pruning as tp

    args = _inputs(torch, example_input)
    model = copy.deepcopy(module).eval()
    named = dict(model.named_modules())
    unknown = [n for n in protect if n not in named]
    if unknown:
        raise PruningError(f"protect names {unknown} are not submodules of the model; names look like "
                           f"{[n for n in named if n][:6]} (see model.named_modules()).")
    _check_custom_parameters(tp, model)
    imp = _importance(tp, importance, data)
    with torch.no_grad(), _running_module(model) as stack:
        try:
            before_shapes = [tuple(o.shape) for o in _flat_outputs(torch, model(*args))]
        except _TORCH_ERRORS as exc:
            raise PruningError(f"the model does not run on example_input{_where(stack)}: {_first_line(exc)}; "
                               "pass a tensor shaped like the model's input.") from exc
    outputs = output_layers(model, args)
    before = _out_channels(model)
    keep_at_least = {n for n, c in before.items() if int(c * (1.0 - ratio)) < max(int(round_to), 2)}
    ignored = [named[n] for n in dict.fromkeys([*outputs, *protect, *sorted(keep_at_least)])]
    with warnings.catch_warnings(record=True) as caught, _running_module(model) as stack:
        warnings.simplefilter("always")
        try:
            pruner = tp.pruner.BasePruner(model, args, importance=imp, pruning_ratio=float(ratio),
                                          ignored_layers=ignored, round_to=int(round_to) if round_to > 1 else None,
                                          global_pruning=False)
            groups = list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                                   root_module_types=pruner.root_module_types))
            if not groups:
                raise PruningError(
                    f"nothing to prune: every Conv/Linear layer of {type(module).__name__} is an output layer "
                    f"({', '.join(outputs) or 'none found'}), protected, or too narrow to keep a multiple of "
                    f"round_to={round_to} at ratio {ratio}.")
            if Importance(importance) is Importance.ACTIVATION:
                samples = [d[:ACTIVATION_SAMPLES] for d in _inputs(torch, data)]
                with torch.no_grad(), imp.compute_importance(model):
                    model(*[d.float() if d.is_floating_point() else d for d in samples])
            pruner.step()
        except PruningError:
            raise
        except _TORCH_ERRORS as exc:
            raise PruningError(f"torch-pruning cannot prune this model{_where(stack)}: {_first_line(exc)}. "
                               "Protect that submodule with protect=[...] or simplify it.") from exc
    for w in caught:
        log.debug("torch-pruning: %s", w.message)
    for m in model.modules():
        if hasattr(m, "_importance"):
            del m._importance
    after_shapes = _shapes(torch, model, args)
    if after_shapes != before_shapes:
        raise PruningError(f"pruning changed the model's output shapes {before_shapes} → {after_shapes}; protect "
                           "the layers that produce them with protect=[...].")
    after = _out_channels(model)
    plan = {name: (before[name], after.get(name, before[name])) for name in before}
    if all(b == a for b, a in plan.values()):
        raise PruningError(f"ratio={ratio} with round_to={round_to} removes no channel from any layer; use a "
                           "larger ratio or a smaller round_to.")
    return model.eval(), plan


def torch_params_macs(module: Any, example_input: Any) -> tuple[int, int]:
    """Parameter count and multiply-accumulates of one forward pass on ``example_input``."""
    import torch
    import torch_pruning as tp

    args = _inputs(torch, example_input)
    was_training = module.training
    try:
        with torch.no_grad():
            macs, params = tp.utils.count_ops_and_params(module, args if len(args) > 1 else args[0])
    finally:
        module.train(was_training)
    return int(params), int(macs)
