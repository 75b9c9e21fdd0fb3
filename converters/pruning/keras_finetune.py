"""Fine-tuning a pruned Keras 3 model: ordinary training with labels, or distillation from the unpruned model
(the teacher) on unlabelled data — early stop on a validation split, a progress bar, pruned weights kept at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.converters.errors import PruningError
from edgepack.runtimes.progress import ProgressBar

if TYPE_CHECKING:
    import keras

    from edgepack.converters.pruning.keras_sparsity import SparsityMasks

#: Softmax temperature of distillation for classifiers (Hinton et al.); the loss is scaled by T² as usual.
TEMPERATURE = 2.0


@dataclass(frozen=True)
class FinetuneResult:
    """What fine-tuning did.

    Attributes:
        mode: ``"labels"`` (ordinary training) or ``"distill"`` (mimic the teacher's outputs).
        epochs_run: epochs trained (fewer than asked when stopped early).
        stopped_early: the validation loss stopped improving and the best weights were restored.
        val_loss: validation loss after each epoch (empty without a validation split).
    """

    mode: str
    epochs_run: int
    stopped_early: bool
    val_loss: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"mode": self.mode, "epochs_run": self.epochs_run, "stopped_early": self.stopped_early,
                "val_loss": [float(v) for v in self.val_loss]}


def _outputs(model: Any) -> list[tuple[int | None, ...]]:
    shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
    return [tuple(s) for s in shapes]


def check_inputs(model: Any, x: Any) -> list[np.ndarray]:
    """``x`` as a list of float arrays, one per model input; :class:`PruningError` naming the expected shape."""
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    if len(arrays) != len(shapes):
        raise PruningError(f"the model has {len(shapes)} inputs but {len(arrays)} data arrays were given.")
    out = []
    for arr, shape in zip(arrays, shapes):
        arr = np.asarray(arr)
        want = tuple(shape)[1:]
        fits = arr.ndim == len(want) + 1 and all(w is None or w == a for w, a in zip(want, arr.shape[1:]))
        if not fits or len(arr) == 0:
            expected = "(N, " + ", ".join("any" if w is None else str(w) for w in want) + ")"
            raise PruningError(f"fine-tuning data has shape {arr.shape}; the model expects {expected} "
                               "(pre-process the images the way the model was trained: size, channels, scale).")
        if not np.issubdtype(arr.dtype, np.number):
            raise PruningError(f"fine-tuning data has dtype {arr.dtype}; give numbers.")
        out.append(arr.astype(np.float32, copy=False))
    if len({len(a) for a in out}) > 1:
        raise PruningError(f"the input arrays hold different numbers of samples: {[len(a) for a in out]}.")
    return out


def _is_probabilities(values: np.ndarray) -> bool:
    return bool(values.ndim == 2 and values.shape[1] > 1 and values.min() >= 0 and values.max() <= 1
                and np.allclose(values.sum(axis=1), 1.0, atol=1e-3))


def _label_loss(model: Any, x: list[np.ndarray], y: np.ndarray) -> tuple[Any, np.ndarray]:
    """The loss for labels ``y`` and ``y`` as the loss wants it; :class:`PruningError` when they do not fit."""
    import keras

    shapes = _outputs(model)
    if len(shapes) != 1:
        raise PruningError(f"the model has {len(shapes)} outputs; training with labels takes one. Fine-tune "
                           "without labels (distillation from the unpruned model) instead.")
    out = shapes[0]
    y = np.asarray(y)
    if len(y) != len(x[0]):
        raise PruningError(f"{len(y)} labels for {len(x[0])} samples; give one label per sample.")
    if np.issubdtype(y.dtype, np.integer) and (y.ndim == 1 or y.shape[1:] == (1,)):
        classes = out[-1]
        if len(out) != 2 or classes is None or classes < 2:
            raise PruningError(f"integer labels need a classifier output (N, classes); the model outputs {out}.")
        y = y.reshape(-1)
        if y.min() < 0 or y.max() >= classes:
            raise PruningError(f"labels range over {int(y.min())}..{int(y.max())} but the model has {classes} "
                               f"outputs; labels must be class indices 0..{classes - 1}.")
        probe = np.asarray(model.predict([a[:16] for a in x] if len(x) > 1 else x[0][:16], verbose=0))
        from_logits = not _is_probabilities(probe)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), y
    if y.ndim != len(out) or not all(d is None or d == s for d, s in zip(out[1:], y.shape[1:])):
        raise PruningError(f"targets have shape {y.shape}; the model outputs (N, {', '.join(map(str, out[1:]))}). "
                           "Give class indices (int) for a classifier or targets of the output's shape.")
    return keras.losses.MeanSquaredError(), y.astype(np.float32)


def _distill_loss(teacher_out: np.ndarray) -> Any:
    """KL on softened softmax for classifier outputs (logits or probabilities), MSE otherwise."""
    import keras

    ops = keras.ops
    if teacher_out.ndim != 2 or teacher_out.shape[1] < 2:
        return keras.losses.MeanSquaredError()
    probs = _is_probabilities(teacher_out)

    def kl(t: Any, s: Any) -> Any:
        if probs:  # back to logits: softmax(log p / T) is the softened distribution
            t, s = ops.log(ops.maximum(t, 1e-7)), ops.log(ops.maximum(s, 1e-7))
        pt = ops.softmax(t / TEMPERATURE, axis=-1)
        log_ps = ops.log_softmax(s / TEMPERATURE, axis=-1)
        log_pt = ops.log(ops.maximum(pt, 1e-12))
        return ops.sum(pt * (log_pt - log_ps), axis=-1) * TEMPERATURE**2

    return kl


def _tracker(bar: ProgressBar, epochs: int, masks: SparsityMasks | None, student: Any) -> Any:
    """A Keras callback that drives the project's progress bar, re-applies ``masks`` after every batch and records
    the validation loss of each epoch (``.val_loss``)."""
    import keras

    class Tracker(keras.callbacks.Callback):
        val_loss: list[float]
        epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if masks is not None:
                masks.apply(student)
            loss = (logs or {}).get("loss")
            bar.advance()
            if loss is not None and batch % 10 == 0:
                bar.describe(f"fine-tuning epoch {self.epoch + 1}/{epochs} loss {float(loss):.4f}")

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs and "val_loss" in logs:
                self.val_loss.append(float(logs["val_loss"]))

    tracker = Tracker()
    tracker.val_loss = []
    return tracker


def finetune(student: keras.Model, x: np.ndarray, y: np.ndarray | None = None, *, teacher: keras.Model | None = None,
             epochs: int = 2, batch_size: int = 64, learning_rate: float = 1e-3, validation_split: float = 0.1,
             patience: int = 1, masks: SparsityMasks | None = None, progress: bool = True,
             callbacks: Sequence[Any] = (), monitor_from_epoch: int = 0, seed: int = 0) -> FinetuneResult:
    """Train ``student`` in place: on labels ``y``, or (without ``y``) to mimic ``teacher`` on ``x``.

    Labels: sparse categorical cross-entropy (``from_logits`` found from the outputs) for integer class labels,
    MSE for float targets of the output's shape. Distillation: KL divergence of the temperature-softened softmax
    for classifier outputs, MSE otherwise, on every output. The last ``validation_split`` of the (shuffled) data
    validates each epoch; training stops after ``patience`` epochs without improvement (not before
    ``monitor_from_epoch``) and the best weights are restored. ``masks`` are re-applied after every batch.

    Raises:
        PruningError: neither ``y`` nor ``teacher``, data of the wrong shape, labels that do not fit the output.
    """
    import keras

    if epochs < 1:
        raise PruningError(f"epochs={epochs} must be 1 or more to fine-tune.")
    if not 0.0 <= validation_split < 1.0:
        raise PruningError(f"validation_split={validation_split} must lie in [0, 1).")
    xs = check_inputs(student, x)
    order = np.random.default_rng(seed).permutation(len(xs[0]))
    xs = [a[order] for a in xs]
    feed = xs if len(xs) > 1 else xs[0]
    if y is not None:
        mode = "labels"
        loss, target = _label_loss(student, xs, y)
        target = target[order]
        losses: Any = loss
    elif teacher is not None:
        mode = "distill"
        check_inputs(teacher, xs)
        outs = teacher.predict(feed, batch_size=max(batch_size, 256), verbose=0)
        outs = [np.asarray(o) for o in (outs if isinstance(outs, (list, tuple)) else [outs])]
        shapes = _outputs(student)
        if len(outs) != len(shapes) or not all(o.ndim == len(s) and all(d is None or d == w for d, w in
                                                                         zip(s[1:], o.shape[1:]))
                                               for o, s in zip(outs, shapes)):
            raise PruningError("the teacher's outputs do not match the student's; distil from the unpruned model.")
        losses = [_distill_loss(o) for o in outs] if len(outs) > 1 else _distill_loss(outs[0])
        target = outs if len(outs) > 1 else outs[0]
    else:
        raise PruningError("fine-tuning needs labels (y) or a teacher model to distil from (the unpruned model).")
    n_val = int(len(xs[0]) * validation_split)
    split = validation_split if n_val >= 1 and len(xs[0]) - n_val >= 1 else 0.0
    steps = math.ceil((len(xs[0]) - int(len(xs[0]) * split)) / batch_size) * epochs
    # Cosine decay to 0 over the run (as finetune_torch does): a constant rate left a pruned MobileNet-style net
    # 6 points short after 2 epochs; decayed it lost 0.4 (benchmarks/pruning_mobilenet.py).
    rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    student.compile(optimizer=keras.optimizers.Adam(rate), loss=losses)
    with ProgressBar(steps, f"fine-tuning ({mode})", enabled=progress) as bar:
        tracker = _tracker(bar, epochs, masks, student)
        cbs = [*callbacks, tracker]  # the schedule (if any) updates masks before the tracker applies them
        stopper = None
        if split:
            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True,
                                                    start_from_epoch=monitor_from_epoch)
            cbs.append(stopper)
        history = student.fit(feed, target, epochs=epochs, batch_size=batch_size, validation_split=split,
                              shuffle=True, verbose=0, callbacks=cbs)
    if masks is not None:
        masks.apply(student)
    epochs_run = len(history.history.get("loss", []))
    stopped = stopper is not None and stopper.stopped_epoch > 0
    return FinetuneResult(mode=mode, epochs_run=epochs_run, stopped_early=stopped, val_loss=tracker.val_loss)

