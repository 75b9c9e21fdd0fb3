"""``edgepack.prune``: prune a model, fine-tune it, and accept it only when it pays on the target.

The pruned model and the unpruned one are both converted for the target with the same recipe and run in the
target's runtime: parameters, MACs, model size, compressed bundle size, latency (interleaved, one thread) and
accuracy on evaluation data are reported side by side. A prune that is not faster (channel removal), does not
shrink the bundle (sparsity), or loses more accuracy than ``max_accuracy_drop`` is rejected with the reason.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.errors import PruningError
from edgepack.converters.pruning.apply import PrunedModel, load_model, model_kind, prune_model
from edgepack.runtimes.errors import EdgepackError
from edgepack.runtimes.fileio import atomic_write_text
from edgepack.runtimes.manifest import Preprocessing
from edgepack.runtimes.recipe import Importance, PruneOptions, Recipe
from edgepack.runtimes.target import Target, get_target

#: A channel prune must be at least this much faster to count as a speed-up (below it: timing noise).
MIN_SPEEDUP = 1.05
#: A sparsity prune must shrink the compressed bundle at least this much.
MAX_SIZE_RATIO = 0.9


class PruneRejectedError(EdgepackError):
    """The pruned model does not pay on the target (no speed-up, no smaller bundle, or too much accuracy lost)."""

    def __init__(self, message: str, result: PruneResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class PruneResult:
    """The pruned model, the measured comparison with the unpruned one, and the verdict."""

    pruned: PrunedModel
    report: dict[str, Any]
    accepted: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def model(self) -> Any:
        """The pruned framework model (``keras.Model``, ``torch.nn.Module`` or ``onnx.ModelProto``)."""
        return self.pruned.model

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model in its source's format and the report beside it (``<name>.prune.json``)."""
        import json

        out = self.pruned.save(path)
        atomic_write_text(out.with_name(f"{out.stem}.prune.json"), json.dumps(self.report, indent=2, default=str))
        return out

    def summary(self) -> str:
        """A small table: unpruned vs pruned, and the verdict."""
        m = self.report.get("measured") or {}
        rows = [("", "unpruned", "pruned")]
        for key, label, fmt in (("params", "params", "{:,}"), ("macs", "MACs", "{:,}"),
                                ("model_bytes", "model bytes", "{:,}"), ("bundle_bytes", "bundle bytes (zip)", "{:,}"),
                                ("latency_p50_ms", "latency p50 ms", "{:.3f}"), ("accuracy", "accuracy", "{:.4f}")):
            a, b = m.get(f"{key}_before"), m.get(f"{key}_after")
            if a is None and b is None:
                continue
            rows.append((label, "–" if a is None else fmt.format(a), "–" if b is None else fmt.format(b)))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(width[i]) if i == 0 else c.rjust(width[i]) for i, c in enumerate(r)) for r in rows]
        verdict = "accepted" if self.accepted else "REJECTED: " + "; ".join(self.reasons)
        ratios = self.report.get("ratios") or {}
        extra = ", ".join(f"{k} {v:.3f}" for k, v in ratios.items() if v is not None)
        return "\n".join([*lines, f"{verdict}" + (f" ({extra})" if extra else "")])


def prune(
    model: Any,
    data: Any = None,
    *,
    channels: float | None = None,
    sparsity: float | None = None,
    epochs: int = 2,
    importance: Importance | str = Importance.L1,
    round_to: int | None = None,
    target: str | Path | Target = "x86",
    recipe: str | Recipe | None = None,
    eval_data: Any = None,
    max_accuracy_drop: float | None = None,
    preprocessing: Preprocessing | None = None,
    example_input: Any = None,
    protect: Sequence[str] = (),
    limit: int | None = None,
    measure: bool = True,
    progress: bool = True,
) -> PruneResult:
    """Prune ``model`` (remove ``channels`` and/or zero ``sparsity`` of the weights), fine-tune, measure, judge.

    Args:
        model: ``.keras``/``.h5`` path or ``keras.Model``; ``torch.nn.Module`` (with ``example_input``); ``.onnx``
            (sparsity only, one-shot).
        data: fine-tuning data: ``"fashion-mnist:train"``, a class-folder tree, ``.npz``, ``(x, y)`` (labels:
            ordinary training) or unlabelled images / arrays (distilled from the unpruned model).
        channels: fraction of channels removed (a smaller dense model).
        sparsity: fraction of weights set to zero (a bundle that compresses).
        epochs: fine-tuning epochs (0: none).
        importance: ``l1``, ``l2`` or ``activation`` (measured on ``data``).
        round_to: channel counts become multiples of this (default: the target's ``channel_multiple``).
        target: where latency counts; measured on this host (the report says when the host is not the target).
        recipe: the recipe both models are converted with for measuring (default ``full-int8`` with data).
        eval_data: accuracy data (default: the last 10 % of ``data``, held out of fine-tuning).
        max_accuracy_drop: reject a prune losing more points than this (labels; else agreement with the unpruned).
        preprocessing: how images become inputs (default: from the model's image input, pixels scaled to 0..1).
        example_input: PyTorch only, for tracing.
        protect: layers never pruned (model outputs are protected automatically).
        limit: use at most this many samples of ``data``.
        measure: convert and measure both models (False: prune only, accepted without a verdict).

    Raises:
        PruningError, ConfigError, EvalDataError; the result is returned even when rejected (see ``accepted``).
    """
    options = PruneOptions(channels=channels, sparsity=sparsity, importance=Importance(importance),
                           round_to=round_to, epochs=epochs)
    tgt = get_target(target)
    kind = model_kind(model)
    original = load_model(model, kind)
    x, y, eval_part, pre = _fine_tune_data(original, kind, data, preprocessing=preprocessing, limit=limit,
                                           example_input=example_input)
    pruned = prune_model(original, x, y, options=options, round_to=tgt.channel_multiple,
                         example_input=example_input, protect=protect, progress=progress)
    report: dict[str, Any] = {"target": tgt.name, "pruning": pruned.report,
                              "data": {"fine_tune": None if x is None else len(x),
                                       "labels": y is not None}}
    if not measure:
        return PruneResult(pruned=pruned, report=report, accepted=True, reasons=["not measured"])
    from .pruning_measure import compare

    evaluation = eval_data if eval_data is not None else eval_part
    measured = compare(original, pruned.model, kind=kind, target=tgt, recipe=recipe, calibration=x,
                       eval_data=evaluation, preprocessing=pre, example_input=example_input, progress=progress)
    report["measured"] = measured
    report["measured_on"] = f"{platform.machine()} host" + ("" if _host_is(tgt) else
                                                            f" — not {tgt.name} ({tgt.arch}): latency is this host's")
    reasons = _verdict(options, measured, max_accuracy_drop)
    report["ratios"] = {"params": _ratio(measured, "params"), "macs": _ratio(measured, "macs"),
                        "bundle_bytes": _ratio(measured, "bundle_bytes"),
                        "speedup": _speedup(measured)}
    report["accepted"], report["reasons"] = not reasons, reasons
    return PruneResult(pruned=pruned, report=report, accepted=not reasons, reasons=reasons)


def _host_is(target: Target) -> bool:
    host = platform.machine().lower()
    arch = target.arch.lower()
    return host == arch or {host, arch} <= {"x86_64", "amd64"} or {host, arch} <= {"aarch64", "arm64"}


def _ratio(m: dict[str, Any], key: str) -> float | None:
    a, b = m.get(f"{key}_before"), m.get(f"{key}_after")
    return None if not a or b is None else b / a


def _speedup(m: dict[str, Any]) -> float | None:
    a, b = m.get("latency_p50_ms_before"), m.get("latency_p50_ms_after")
    return None if not a or not b else a / b


def _verdict(options: PruneOptions, m: dict[str, Any], max_drop: float | None) -> list[str]:
    reasons = []
    speedup = _speedup(m)
    if options.channels is not None and speedup is not None and speedup < MIN_SPEEDUP:
        reasons.append(f"no speed-up on the target's runtime ({speedup:.2f}× the unpruned latency, "
                       f"needs ≥ {MIN_SPEEDUP}×)")
    size = _ratio(m, "bundle_bytes")
    if options.channels is None and options.sparsity is not None and size is not None and size > MAX_SIZE_RATIO:
        reasons.append(f"the bundle does not shrink ({size:.2f}× the unpruned bundle)")
    drop = m.get("accuracy_drop_points")
    if max_drop is not None and drop is not None and drop > max_drop:
        reasons.append(f"accuracy drops {drop:.2f} points, over --max-accuracy-drop {max_drop}")
    return reasons


def _fine_tune_data(model: Any, kind: str, data: Any, *, preprocessing: Preprocessing | None, limit: int | None,
                    example_input: Any) -> tuple[np.ndarray | None, np.ndarray | None, Any, Preprocessing | None]:
    """Model-ready ``x`` (and labels ``y``) for fine-tuning, the held-out evaluation part, the pre-processing."""
    if data is None:
        return None, None, None, preprocessing
    from edgepack.measure.data import ArrayData, is_image, open_data

    from .pruning_measure import input_shape

    dataset = open_data(data, limit=limit)
    shape = input_shape(model, kind, example_input)
    pre = preprocessing
    xs: list[np.ndarray] = []
    ys: list[int | None] = []
    from edgepack.runtimes.preprocess import preprocess

    for sample, label in dataset:
        sample = np.asarray(sample)
        if is_image(sample):
            if pre is None:
                pre = _assumed_preprocessing(shape)
            xs.append(preprocess(sample, pre, source=dataset.color)[0])
        else:
            xs.append(sample.astype(np.float32))
        ys.append(label)
    if not xs:
        raise PruningError("the fine-tuning data is empty; pass images or arrays.")
    x = np.stack(xs)
    labelled = all(v is not None for v in ys)
    y = np.asarray(ys, dtype=np.int64) if labelled else None
    hold = max(1, len(x) // 10) if len(x) >= 20 else 0
    held = None
    if hold:
        held = ArrayData(x=x[-hold:], y=None if y is None else y[-hold:], name=f"{dataset.name} (last {hold} held out)")
        x, y = x[:-hold], (None if y is None else y[:-hold])
    return x, y, held, pre


def _assumed_preprocessing(shape: Sequence[int]) -> Preprocessing:
    from edgepack.converters.preprocessing_guess import image_input

    found = image_input(shape)
    if found is None or found[0] is None:
        raise PruningError(f"images need a pre-processing spec and the model's input {list(shape)} is not one fixed "
                           "image input (N,H,W,C or N,C,H,W with 1 or 3 channels); pass preprocessing=... or arrays.")
    size, color, layout = found
    return Preprocessing(size=size, color=color, layout=layout, scale=1.0 / 255.0)
