"""Unstructured magnitude sparsity for PyTorch with ``torch.nn.utils.prune``, made permanent.

The weights of every Conv/Linear layer are ranked by magnitude (one threshold over all of them, or the same fraction
in each layer), the smallest set to zero, and ``prune.remove`` folds the masks into the weights: the result is a
plain module (no ``weight_orig``/``weight_mask``) that saves, exports and compresses like any other.
"""

from __future__ import annotations

import copy
from typing import Any

from edgepack.converters.errors import PruningError


def _targets(module: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and getattr(m, "weight", None) is not None]


def weight_sparsity(module: Any) -> dict[str, Any]:
    """Fraction of exactly-zero Conv/Linear weights: ``{"sparsity": overall, "layers": {name: fraction}}``."""
    layers: dict[str, float] = {}
    zeros = total = 0
    for name, m in _targets(module):
        w = m.weight.detach()
        z, n = int((w == 0).sum()), int(w.numel())
        layers[name] = z / n if n else 0.0
        zeros, total = zeros + z, total + n
    return {"sparsity": zeros / total if total else 0.0, "layers": layers, "weights": total}


def sparsify_torch(module: Any, *, sparsity: float, global_sparsity: bool = True) -> tuple[Any, dict]:
    """Zero the smallest-magnitude ``sparsity`` fraction of Conv/Linear weights (a deep copy; biases kept).

    Args:
        module: a ``torch.nn.Module``.
        sparsity: fraction of weights set to zero, strictly between 0 and 1.
        global_sparsity: one L1 threshold over every layer (``prune.global_unstructured``; layers that matter
            less lose more) or the same fraction in each layer (``prune.l1_unstructured``).

    Returns:
        The sparse module (masks removed: the zeros are in ``weight`` itself) and a report
        ``{"sparsity": achieved overall, "layers": {name: achieved}, "weights": count, "global": bool}``.

    Raises:
        PruningError: sparsity outside (0, 1), not a module, or no Conv/Linear weights.
    """
    import torch
    from torch.nn.utils import prune

    if not 0.0 < float(sparsity) < 1.0:
        raise PruningError(f"sparsity={sparsity!r} must lie strictly between 0 and 1 (0.5 zeroes half the weights).")
    if not isinstance(module, torch.nn.Module):
        raise PruningError(f"expected a torch.nn.Module, got {type(module).__name__}.")
    model = copy.deepcopy(module)
    targets = _targets(model)
    if not targets:
        raise PruningError(f"nothing to sparsify: {type(module).__name__} has no Conv or Linear weights.")
    params = [(m, "weight") for _, m in targets]
    if global_sparsity:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    else:
        for m, name in params:
            prune.l1_unstructured(m, name=name, amount=float(sparsity))
    for m, name in params:
        prune.remove(m, name)
    report = weight_sparsity(model)
    report["global"] = bool(global_sparsity)
    return model, report
