"""Fine-tuning a pruned PyTorch model: with labels (ordinary training) or without (distillation from the teacher).

Labels: cross-entropy for integer class labels, MSE for float targets shaped like the output. No labels and a
teacher: the student learns the teacher's outputs on the given inputs (KL divergence on temperature-softened
logits for ``(N, classes)`` outputs, MSE for any other output), so the calibration images are enough. A validation
split stops training early when its loss stops improving and the best weights are restored.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgepack.converters.errors import PruningError
from edgepack.runtimes.progress import ProgressBar

#: Temperature of the softened logits in distillation (Hinton et al.); the KL term is scaled by T².
TEMPERATURE = 4.0


def _outputs(torch: Any, out: Any) -> list[Any]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for item in out for t in _outputs(torch, item)] if isinstance(out, (tuple, list)) else []


def _probe(torch: Any, module: Any, x: Any, what: str) -> list[tuple[int, ...]]:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return [tuple(o.shape[1:]) for o in _outputs(torch, module(x[:2]))]
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise PruningError(f"fine-tuning data of shape {tuple(x.shape)} does not fit the {what}: "
                           f"{str(exc).splitlines()[0][:200]}. Pass x shaped (N, ...) like the model's input.") from exc
    finally:
        module.train(was_training)


def _check_labels(y: np.ndarray, n: int, shapes: list[tuple[int, ...]]) -> bool:
    """True for class labels (cross-entropy), False for regression targets (MSE); PruningError when neither fits."""
    if len(y) != n:
        raise PruningError(f"got {len(y)} labels for {n} samples; pass one label per sample.")
    if len(shapes) != 1:
        raise PruningError(f"labelled fine-tuning needs a model with one output, this one has {len(shapes)}; "
                           "fine-tune without labels (distillation from the unpruned model, teacher=...).")
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim != 1 or len(shapes[0]) != 1:
            raise PruningError(f"class labels must be shaped (N,) for an output shaped (N, classes); got labels "
                               f"{y.shape} and output (N, {', '.join(map(str, shapes[0]))}).")
        classes = shapes[0][0]
        if y.min() < 0 or y.max() >= classes:
            raise PruningError(f"labels range {int(y.min())}..{int(y.max())}, but the model gives {classes} classes "
                               f"(labels 0..{classes - 1} expected).")
        return True
    if tuple(y.shape[1:]) != shapes[0]:
        raise PruningError(f"float targets shaped {y.shape[1:]} per sample, but the model's output is "
                           f"{shapes[0]}; pass integer class labels (N,) or targets shaped like the output.")
    return False


def _loss(torch: Any, outs: list[Any], target: Any, mode: str, classes: bool) -> Any:
    functional = torch.nn.functional
    if mode == "labels":
        return functional.cross_entropy(outs[0], target) if classes else functional.mse_loss(outs[0], target)
    total = 0.0
    for s, t in zip(outs, target):
        if s.ndim == 2 and s.shape[1] > 1:
            total = total + functional.kl_div(functional.log_softmax(s / TEMPERATURE, 1),
                                              functional.log_softmax(t / TEMPERATURE, 1),
                                              reduction="batchmean", log_target=True) * TEMPERATURE**2
        else:
            total = total + functional.mse_loss(s, t)
    return total


def finetune_torch(student: Any, x: np.ndarray, y: np.ndarray | None = None, *, teacher: Any = None,
                   epochs: int = 2, batch_size: int = 64, learning_rate: float = 1e-3, validation_split: float = 0.1,
                   patience: int = 1, progress: bool = True, seed: int = 0) -> dict:
    """Train ``student`` in place on ``x`` (Adam, cosine-decayed rate), with labels ``y`` or by distilling ``teacher``.

    Args:
        student: the pruned ``torch.nn.Module``.
        x: float inputs, sample index first, shaped as the model takes them.
        y: integer class labels ``(N,)`` or float targets shaped like the output; None to distil.
        teacher: the unpruned module; used when ``y`` is None.
        epochs: passes over the training part of ``x``.
        batch_size, learning_rate: of the Adam training.
        validation_split: fraction of ``x`` held out to judge each epoch (0: no early stop).
        patience: epochs without a better validation loss before stopping (the best weights are restored).
        progress: show a progress bar.

    Returns:
        ``{"mode": "labels"|"distill", "epochs_run", "stopped_early", "val_loss": [...], "best_epoch"}``.

    Raises:
        PruningError: neither labels nor a teacher, data that does not fit the model, labels of the wrong count
            or range, bad epochs/batch size/split.
    """
    import torch

    if epochs < 1 or batch_size < 1 or learning_rate <= 0 or patience < 1:
        raise PruningError(f"epochs={epochs}, batch_size={batch_size}, patience={patience} must be 1 or more and "
                           f"learning_rate={learning_rate} positive.")
    if not 0.0 <= validation_split < 1.0:
        raise PruningError(f"validation_split={validation_split} must lie in [0, 1).")
    if y is None and teacher is None:
        raise PruningError("fine-tuning needs labels (y=...) or the unpruned model to distil from (teacher=...).")
    x = np.asarray(x)
    if x.ndim < 2 or len(x) < 2 or not np.issubdtype(x.dtype, np.floating):
        raise PruningError(f"fine-tuning inputs must be a float array (N >= 2, ...) shaped like the model's input; "
                           f"got {x.dtype} {x.shape} (scale images the way the model was trained, e.g. / 255).")
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    shapes = _probe(torch, student, data, "pruned model")
    mode, classes, targets = "distill", False, None
    if y is not None:
        y = np.asarray(y)
        classes = _check_labels(y, len(x), shapes)
        mode = "labels"
        targets = torch.from_numpy(y.astype(np.int64) if classes else np.ascontiguousarray(y, dtype=np.float32))
    else:
        teacher_shapes = _probe(torch, teacher, data, "teacher")
        if teacher_shapes != shapes:
            raise PruningError(f"teacher outputs {teacher_shapes} and student outputs {shapes} differ per sample; "
                               "distillation needs the same outputs (was an output layer pruned?).")
        teacher.eval()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = round(len(x) * validation_split) if validation_split > 0 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]

    def batch_target(idx: Any) -> Any:
        if targets is not None:
            return targets[idx]
        with torch.no_grad():
            return _outputs(torch, teacher(data[idx]))

    def val_loss() -> float:
        student.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(0, n_val, 256):
                idx = torch.from_numpy(val_idx[i:i + 256])
                total += float(_loss(torch, _outputs(torch, student(data[idx])), batch_target(idx), mode, classes)) \
                    * len(idx)
        return total / max(n_val, 1)

    opt = torch.optim.Adam(student.parameters(), lr=learning_rate)
    steps = (len(train_idx) + batch_size - 1) // batch_size
    # Cosine decay to 0 over the planned steps: the last epochs settle into a minimum instead of bouncing around it.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    history: list[float] = []
    best, best_state, best_epoch, stopped = float("inf"), None, 0, False
    with ProgressBar(epochs * steps, f"fine-tuning ({mode})", enabled=progress) as bar:
        for epoch in range(epochs):
            student.train()
            perm = rng.permutation(train_idx)
            for i in range(0, len(perm), batch_size):
                idx = torch.from_numpy(perm[i:i + batch_size])
                if len(idx) < 2:  # BatchNorm cannot train on one sample
                    continue
                opt.zero_grad()
                loss = _loss(torch, _outputs(torch, student(data[idx])), batch_target(idx), mode, classes)
                loss.backward()
                opt.step()
                schedule.step()
                bar.advance()
            if not n_val:
                continue
            history.append(val_loss())
            bar.describe(f"fine-tuning ({mode}) epoch {epoch + 1}: val loss {history[-1]:.4f}")
            if history[-1] < best:
                best, best_epoch, best_state = history[-1], epoch + 1, copy.deepcopy(student.state_dict())
            elif epoch + 1 - best_epoch >= patience:
                stopped = True
                break
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return {"mode": mode, "epochs_run": epoch + 1, "stopped_early": stopped, "val_loss": history,
            "best_epoch": best_epoch if n_val else epoch + 1}
