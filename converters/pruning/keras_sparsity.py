"""Unstructured magnitude sparsity for Keras 3 models: our own masks (tfmot prunes only tf_keras) and a gradual
polynomial schedule during fine-tuning, like tfmot's ``PolynomialDecay``.

The result is an ordinary model whose kernels hold zeros (dense tensors, a normal ``.keras``): the bundle shrinks
because its model entry is deflated, and the TFLite exporter can store the weights sparse (see
``converters/formats/tflite/export.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.converters.errors import PruningError

#: Kernels with fewer weights than this stay dense (e.g. a first 3x3 conv on one channel), as tfmot advises:
#: they hold little of the model's size and much of its accuracy.
MIN_WEIGHTS = 1000
_KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")


def check_ratio(sparsity: float) -> float:
    """``sparsity`` as a float strictly between 0 and 1, or :class:`PruningError`."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise PruningError(f"sparsity={sparsity!r} is not a number; give a fraction such as 0.5.") from None
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise PruningError(f"sparsity={sparsity!r} must lie strictly between 0 and 1 (0.5 zeroes half the weights).")
    return value


def _walk(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            yield from _walk(layer)
        else:
            yield layer


def prunable_kernels(model: Any) -> dict[str, Any]:
    """``{name: variable}`` of every Conv/Depthwise/Separable/Dense kernel (never biases or batch-norm)."""
    import keras

    kinds = tuple(getattr(keras.layers, n) for n in (
        "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D",
        "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "Dense") if hasattr(keras.layers, n))
    found: dict[str, Any] = {}
    for layer in _walk(model):
        if not isinstance(layer, kinds):
            continue
        attrs = [a for a in _KERNEL_ATTRS if getattr(layer, a, None) is not None]
        for attr in attrs:
            found[layer.name if len(attrs) == 1 else f"{layer.name}/{attr}"] = getattr(layer, attr)
    return found


@dataclass
class SparsityMasks:
    """A boolean keep-mask per prunable kernel (True keeps the weight); :meth:`apply` zeroes the others.

    Attributes:
        masks: kernel name (the layer's name, ``layer/attr`` for a layer with two kernels) → keep-mask.
        dense: kernels left dense on purpose (fewer than ``min_weights`` weights).
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    dense: list[str] = field(default_factory=list)
    _bound: dict[int, list[tuple[Any, Any]]] = field(default_factory=dict, repr=False, compare=False)

    def update(self, other: SparsityMasks) -> None:
        """Take ``other``'s masks (a schedule step), keeping this object (callbacks hold it)."""
        self.masks = dict(other.masks)
        self.dense = list(other.dense)
        self._bound.clear()

    def apply(self, model: Any) -> None:
        """Zero the pruned weights of ``model`` in place (cheap: masks are converted to tensors once)."""
        pairs = self._bound.get(id(model))
        if pairs is None:
            import keras

            kernels = prunable_kernels(model)
            missing = sorted(set(self.masks) - set(kernels))
            if missing:
                raise PruningError(f"the model has no prunable kernel named {', '.join(missing[:5])}; these masks "
                                   "were made for another model.")
            pairs = [(kernels[n], keras.ops.convert_to_tensor(m.astype(kernels[n].dtype)))
                     for n, m in self.masks.items()]
            self._bound = {id(model): pairs}
        for var, mask in pairs:
            var.assign(var.value * mask)

    @property
    def sparsity(self) -> float:
        """Fraction of masked weights over the masked kernels."""
        total = sum(m.size for m in self.masks.values())
        return float(sum(int(m.size - np.count_nonzero(m)) for m in self.masks.values()) / total) if total else 0.0


def _keep_smallest_out(values: np.ndarray, k: int) -> np.ndarray:
    """A keep-mask of ``values`` (flat |w|) that drops exactly the ``k`` smallest."""
    keep = np.ones(values.size, dtype=bool)
    if k > 0:
        keep[np.argpartition(values, k - 1)[:k]] = False
    return keep


def keep_masks(weights: dict[str, np.ndarray], eligible: dict[str, np.ndarray], ratio: float, *,
               global_sparsity: bool) -> dict[str, np.ndarray]:
    """Keep-masks for ``eligible`` that zero the smallest magnitudes: globally ``ratio`` of all ``weights`` (the
    ineligible ones count but stay dense), or ``ratio`` of each eligible array."""
    masks: dict[str, np.ndarray] = {}
    if global_sparsity:
        total = sum(w.size for w in weights.values())
        flat = np.concatenate([np.abs(w.astype(np.float32)).ravel() for w in eligible.values()])
        keep = _keep_smallest_out(flat, min(round(ratio * total), flat.size))
        start = 0
        for n, w in eligible.items():
            masks[n] = keep[start:start + w.size].reshape(w.shape)
            start += w.size
    else:
        for n, w in eligible.items():
            masks[n] = _keep_smallest_out(np.abs(w.astype(np.float32)).ravel(), round(ratio * w.size)).reshape(w.shape)
    return masks


def magnitude_masks(model: Any, *, sparsity: float, global_sparsity: bool = True,
                    min_weights: int = MIN_WEIGHTS) -> SparsityMasks:
    """Keep-masks that zero the smallest-magnitude weights of every prunable kernel.

    Global: one threshold over all prunable kernels, so that ``sparsity`` of all their weights (dense ones
    included) are zero; per layer: each kernel loses ``sparsity`` of its own weights. Kernels with fewer than
    ``min_weights`` weights stay dense and are listed in ``masks.dense``.

    Raises:
        PruningError: ``sparsity`` outside (0, 1), or the model has nothing prunable.
    """
    ratio = check_ratio(sparsity)
    kernels = {n: np.asarray(v.numpy()) for n, v in prunable_kernels(model).items()}
    if not kernels:
        raise PruningError(f"model {getattr(model, 'name', '')!r} has no Conv, DepthwiseConv or Dense kernel to "
                           "prune.")
    dense = [n for n, w in kernels.items() if w.size < min_weights]
    eligible = {n: w for n, w in kernels.items() if n not in dense}
    if not eligible:
        raise PruningError(f"every prunable kernel has fewer than {min_weights} weights; nothing worth pruning "
                           f"({', '.join(kernels)}).")
    masks = keep_masks(kernels, eligible, ratio, global_sparsity=global_sparsity)
    return SparsityMasks(masks=masks, dense=dense)


def measured_sparsity(model: Any) -> tuple[float, dict[str, float]]:
    """Fraction of exact zeros over all prunable kernels, and per kernel (layer name)."""
    per: dict[str, float] = {}
    zeros = total = 0
    for name, var in prunable_kernels(model).items():
        w = np.asarray(var.numpy())
        z = int(w.size - np.count_nonzero(w))
        per[name] = z / w.size if w.size else 0.0
        zeros, total = zeros + z, total + w.size
    return (zeros / total if total else 0.0), per


@dataclass(frozen=True)
class PolynomialSchedule:
    """tfmot's ``PolynomialDecay``: sparsity rises from 0 to ``target`` as ``1 - (1 - t/end)^power``, updated
    every ``frequency`` steps, held at ``target`` from ``end_step`` on."""

    target: float
    end_step: int
    frequency: int
    power: int = 3

    @classmethod
    def for_steps(cls, target: float, total_steps: int, *, ramp: float = 2 / 3) -> PolynomialSchedule:
        """Ramp over the first ``ramp`` of ``total_steps``, about 10 mask updates."""
        end = max(1, round(total_steps * ramp))
        return cls(target=target, end_step=end, frequency=max(1, end // 10))

    def due(self, step: int) -> bool:
        """Whether masks are recomputed before ``step`` (0-based)."""
        return step <= self.end_step and (step % self.frequency == 0 or step == self.end_step)

    def sparsity_at(self, step: int) -> float:
        """Target sparsity at ``step``."""
        progress = min(1.0, max(0.0, step / self.end_step))
        return self.target * (1.0 - (1.0 - progress) ** self.power)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "polynomial", "power": self.power, "begin_step": 0, "end_step": self.end_step,
                "frequency": self.frequency, "target": self.target}


def _schedule_callback(model: Any, masks: SparsityMasks, schedule: PolynomialSchedule, *, global_sparsity: bool,
                       min_weights: int) -> Any:
    """A Keras callback that recomputes ``masks`` (in place) at each step of ``schedule``."""
    import keras

    class Schedule(keras.callbacks.Callback):
        step = 0

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if schedule.due(self.step):
                level = schedule.sparsity_at(self.step)
                if level > 0:
                    masks.update(magnitude_masks(model, sparsity=level, global_sparsity=global_sparsity,
                                                 min_weights=min_weights))
                    masks.apply(model)

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.step += 1

    return Schedule()


def _copy(model: Any) -> Any:
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def sparsify(model: Any, x: np.ndarray | None = None, y: np.ndarray | None = None, *, sparsity: float,
             teacher: Any = None, epochs: int = 2, global_sparsity: bool = True, progress: bool = True,
             batch_size: int = 64, learning_rate: float = 1e-3, validation_split: float = 0.1,
             min_weights: int = MIN_WEIGHTS) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with ``sparsity`` of its prunable weights at zero, and a report.

    With ``epochs`` > 0 the sparsity rises gradually (polynomial, over the first 2/3 of the fine-tuning steps,
    masks recomputed at each step of the schedule, then held) while the model fine-tunes on labels ``y`` or,
    without labels, by distillation from ``teacher`` (default: the unpruned model). ``epochs=0`` prunes once.
    The weights stay dense tensors with zeros in place: a normal model that saves, reloads and converts.

    Raises:
        PruningError: ``sparsity`` outside (0, 1), nothing prunable, no data to fine-tune on, data that does not fit.
    """
    from edgepack.converters.pruning.keras_finetune import check_inputs, finetune

    ratio = check_ratio(sparsity)
    if epochs < 0:
        raise PruningError(f"epochs={epochs} must be 0 (one-shot) or more.")
    pruned = _copy(model)
    final_masks = magnitude_masks(pruned, sparsity=ratio, global_sparsity=global_sparsity, min_weights=min_weights)
    schedule_json: dict[str, Any] = {"kind": "one-shot"}
    result = None
    if epochs:
        if x is None:
            raise PruningError("fine-tuning needs data: pass x (images/samples; labels y optional), or epochs=0 "
                               "for one-shot pruning.")
        n = len(check_inputs(model, x)[0])
        train = n - int(n * validation_split) if int(n * validation_split) >= 1 else n
        schedule = PolynomialSchedule.for_steps(ratio, math.ceil(train / batch_size) * epochs)
        masks = SparsityMasks()
        callback = _schedule_callback(pruned, masks, schedule, global_sparsity=global_sparsity,
                                      min_weights=min_weights)
        steps_per_epoch = math.ceil(train / batch_size)
        held_from = min(epochs - 1, schedule.end_step // steps_per_epoch)  # first epoch that ends at the target
        result = finetune(pruned, x, y, teacher=teacher if (teacher is not None or y is not None) else model,
                          epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          validation_split=validation_split, masks=masks, progress=progress,
                          callbacks=[callback], monitor_from_epoch=held_from)
        schedule_json = {**schedule.to_json(), "steps_per_epoch": steps_per_epoch, "monitored_from_epoch": held_from}
        # the restored best weights are at the target already; recomputing on them fixes any rounding of ties
        final_masks = magnitude_masks(pruned, sparsity=ratio, global_sparsity=global_sparsity,
                                      min_weights=min_weights)
    final_masks.apply(pruned)
    overall, per = measured_sparsity(pruned)
    kernels = prunable_kernels(pruned)
    total = sum(int(np.prod(v.shape)) for v in kernels.values())
    report = {"kind": "sparsity", "framework": "keras", "target": ratio, "global": global_sparsity,
              "sparsity": overall, "layers": per, "dense_layers": list(final_masks.dense),
              "weights": {"prunable": total, "zeros": round(overall * total)}, "schedule": schedule_json,
              "finetune": None if result is None else result.to_json(),
              "teacher": None if result is None or result.mode != "distill" else
              ("given" if teacher is not None else "the unpruned model")}
    return pruned, report
