"""Accuracy on labeled data and agreement with a reference model — for bundles and source models alike.

>>> import edgepack as ep
>>> result = ep.evaluate("fashion_int8.epk", "fashion-mnist:test", reference="fashion_cnn.keras")
>>> print(result)            # top-1 / top-5, per-class accuracy, agreement (cosine, max |err|, SNR, top-1)
>>> result.to_json()         # confusion matrix included

Data: a folder with one sub-folder per class, an ``.npz`` (``x``/``y``), ``"fashion-mnist[:split]"``,
``(x, y)`` arrays or unlabeled ``x`` (agreement only). Images are pre-processed by each model's own spec,
so bundles with different input specs can be compared on the same images.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepack.converters.validate import Agreement, agreement
from edgepack.measure.data import DataSource, EvalDataError, LabeledData, LabelMismatchError, class_map, open_data
from edgepack.measure.runners import BundleRunner, Runner, RunOptions, collect_outputs, open_runner, same_preprocessing
from edgepack.runtimes.manifest import Preprocessing
from edgepack.runtimes.progress import ProgressBar
from edgepack.runtimes.serde import to_json
from edgepack.runtimes.session import Session

__all__ = ["Accuracy", "ClassAccuracy", "EvalResult", "RunOptions", "evaluate", "evaluate_many"]


@dataclass(frozen=True)
class ClassAccuracy:
    """Accuracy on the samples of one true class (None when the data has none of it)."""

    index: int
    label: str
    total: int
    correct: int
    accuracy: float | None


@dataclass(frozen=True)
class Accuracy:
    """Classification accuracy; ``confusion[true][predicted]`` counts samples."""

    top1: float
    top5: float | None
    per_class: tuple[ClassAccuracy, ...]
    confusion: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured for one model."""

    model: str
    kind: str
    precision: str | None
    size_bytes: int | None
    data: str
    samples: int
    input: str
    accuracy: Accuracy | None
    reference: str | None
    agreement: tuple[Agreement, ...]
    seconds: float
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values."""
        return to_json(self)  # type: ignore[no-any-return]

    def __str__(self) -> str:
        size = f", {self.size_bytes} bytes" if self.size_bytes else ""
        lines = [f"{self.model} ({self.kind}, {self.precision or '?'}{size}) on {self.data}: "
                 f"{self.samples} samples in {self.seconds:.1f} s"]
        if self.accuracy is not None:
            a = self.accuracy
            lines.append(f"  top-1 {a.top1:.4f}" + (f"  top-5 {a.top5:.4f}" if a.top5 is not None else ""))
            per = ", ".join(f"{c.label} {c.accuracy:.2f}" for c in a.per_class if c.accuracy is not None)
            lines.append(f"  per class: {per}")
        for g in self.agreement:
            top1 = f"  top-1 agreement {g.top1_agreement:.4f}" if g.top1_agreement is not None else ""
            lines.append(f"  vs {self.reference} [{g.name}]: cosine {g.cosine:.6f}  max |err| {g.max_abs_error:.4g}"
                         f"  SNR {g.snr_db:.1f} dB{top1}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def confusion_table(self) -> str:
        """The confusion matrix as aligned text (rows: true class, columns: predicted)."""
        if self.accuracy is None:
            return "(no labels: no confusion matrix)"
        rows = self.accuracy.confusion
        width = max(5, *(len(str(v)) for r in rows for v in r))
        head = " " * 14 + "".join(f"{k:>{width + 1}}" for k in range(len(rows)))
        body = [f"{c.label[:13]:<14}" + "".join(f"{v:>{width + 1}}" for v in r)
                for c, r in zip(self.accuracy.per_class, rows)]
        return "\n".join([head, *body])


def classification_metrics(scores: np.ndarray, labels: np.ndarray, *, names: Sequence[str],
                           mapping: Sequence[int] | None = None, where: str = "model") -> Accuracy:
    """Top-1/top-5, per-class accuracy and confusion matrix of ``scores (N, C)`` against ``labels (N,)``.

    Raises:
        LabelMismatchError: a label is outside the model's ``C`` outputs.
    """
    scores = scores.reshape(len(scores), -1)
    n_classes = scores.shape[1]
    y = np.asarray(labels, np.int64)
    if mapping is not None:
        if y.min() < 0 or y.max() >= len(mapping):
            raise LabelMismatchError(f"{where}: label {int(y.max())} has no class name in the data.")
        y = np.asarray(mapping, np.int64)[y]
    if n_classes < 2:
        raise LabelMismatchError(f"{where} outputs {n_classes} value(s) per sample, not class scores; "
                                 "evaluate it without labels (agreement with a reference only).")
    if y.min() < 0 or y.max() >= n_classes:
        raise LabelMismatchError(f"{where}: the data has label {int(y.max())} but the model outputs {n_classes} "
                                 f"scores (labels 0..{n_classes - 1}); check that the data belongs to this model.")
    pred = np.argmax(scores, axis=1)
    top5 = None
    if n_classes > 5:
        best5 = np.argpartition(-scores, 5, axis=1)[:, :5]
        top5 = float(np.mean(np.any(best5 == y[:, None], axis=1)))
    confusion = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    per_class = []
    for c in range(n_classes):
        total, correct = int(confusion[c].sum()), int(confusion[c, c])
        label = names[c] if c < len(names) else str(c)
        per_class.append(ClassAccuracy(c, label, total, correct, correct / total if total else None))
    return Accuracy(top1=float(np.mean(pred == y)), top5=top5, per_class=tuple(per_class),
                    confusion=tuple(tuple(int(v) for v in row) for row in confusion))


def agreement_per_output(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                         *, where: str = "model") -> tuple[Agreement, ...]:
    """Cosine, max/mean abs error, SNR and top-1 agreement of each output with its reference output.

    Outputs are matched by position when shapes agree, else by per-sample shape; otherwise this raises.
    """
    pairs = _align(reference, outputs, where=where)
    return tuple(agreement(f"output_{k}", reference[r].reshape(len(reference[r]), -1), outputs[k].reshape(
        len(outputs[k]), -1)) for k, r in pairs)


def _align(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], *, where: str) -> list[tuple[int, int]]:
    size = [int(np.prod(o.shape[1:])) for o in outputs]
    ref_size = [int(np.prod(o.shape[1:])) for o in reference]
    if len(reference) != len(outputs) and not set(size) <= set(ref_size):
        raise EvalDataError(f"{where} has {len(outputs)} outputs, the reference {len(reference)}; "
                            "they cannot be compared.")
    if size == ref_size:
        return list(enumerate(range(len(outputs))))
    pairs = []
    for k, s in enumerate(size):
        match = [r for r, rs in enumerate(ref_size) if rs == s]
        if len(match) != 1:
            raise EvalDataError(f"{where}: output {k} ({s} values per sample) matches {len(match)} reference outputs "
                                f"(sizes {ref_size}); compare models with the same outputs.")
        pairs.append((k, match[0]))
    return pairs


def _class_names(labels: Sequence[str], classes: Sequence[str] | None, mapping: Sequence[int] | None,
                 n_out: int) -> list[str]:
    """Name of each model output: the bundle's labels, else the data's class names placed by the mapping."""
    if labels:
        return list(labels)
    names = [str(k) for k in range(n_out)]
    for k, name in enumerate(classes or ()):
        target = mapping[k] if mapping is not None else k
        if target < n_out:
            names[target] = name
    return names


def _is_bundle(model: object) -> bool:
    return isinstance(model, Session) or (isinstance(model, str | os.PathLike) and str(model).lower().endswith(".epk"))


@contextlib.contextmanager
def _runners(models: Sequence[Any], reference: Any, preprocessing: Preprocessing | None,
             options: RunOptions) -> Iterator[tuple[list[Runner], Runner | None, list[str]]]:
    """Open bundles first, then sources, which borrow the first bundle's pre-processing spec."""
    everything = [*models, *([reference] if reference is not None else [])]
    opened: dict[int, Runner] = {}
    notes: list[str] = []
    try:
        for i, m in enumerate(everything):
            if _is_bundle(m):
                opened[i] = open_runner(m, preprocessing=None, options=options)
        inherited = preprocessing or next((r.preprocessing for r in opened.values() if r.preprocessing), None)
        for i, m in enumerate(everything):
            if i not in opened:
                opened[i] = open_runner(m, preprocessing=inherited, options=options)
                if preprocessing is None and inherited is not None and opened[i].preprocessing is inherited:
                    notes.append(f"{opened[i].name} has no pre-processing spec; used the bundle's")
        runners = [opened[i] for i in range(len(models))]
        yield runners, (opened[len(models)] if reference is not None else None), notes
    finally:
        for r in opened.values():
            r.close()


def evaluate_many(
    models: Sequence[Any],
    data: DataSource,
    *,
    reference: Any = None,
    preprocessing: Preprocessing | None = None,
    limit: int | None = None,
    options: RunOptions | None = None,
    progress: bool = True,
) -> list[EvalResult]:
    """:func:`evaluate` several models on the same data; the reference runs once per distinct input spec."""
    options = options or RunOptions()
    dataset = open_data(data, limit=limit)
    n = len(dataset)
    with _runners(models, reference, preprocessing, options) as (runners, ref, notes), \
            ProgressBar(n * (len(runners) + (1 if ref else 0)), "evaluating", enabled=progress) as bar:
        ref_cache: list[tuple[Runner, _Outputs]] = []
        results = []
        for runner in runners:
            got = _collect(runner, dataset, options, bar, what="")
            acc = None
            if got.labels is not None:
                n_out = int(np.prod(got.outputs[0].shape[1:]))
                mapping = class_map(dataset.classes, runner.labels, n_out, where=runner.name)
                names = _class_names(runner.labels, dataset.classes, mapping, n_out)
                acc = classification_metrics(got.outputs[0], got.labels, names=names, mapping=mapping,
                                             where=runner.name)
            agree: tuple[Agreement, ...] = ()
            extra = list(got.notes)
            if ref is not None:
                ref_out = _reference_outputs(ref, runner, dataset, options, ref_cache, bar)
                agree = agreement_per_output(ref_out.outputs, got.outputs, where=runner.name)
                extra += ref_out.notes
                if not same_preprocessing(ref, runner):
                    extra.append(f"input specs differ: {runner.name} {runner.describe_input()}; reference "
                                 f"{ref.name} {ref.describe_input()} — each pre-processed the raw images itself")
            results.append(EvalResult(
                model=runner.name, kind=runner.kind, precision=runner.precision, size_bytes=runner.size_bytes,
                data=dataset.name, samples=len(got.outputs[0]), input=runner.describe_input(), accuracy=acc,
                reference=ref.name if ref is not None else None, agreement=agree, seconds=got.seconds,
                notes=tuple(dict.fromkeys([*notes, *extra])),
            ))
    return results


@dataclass(frozen=True)
class _Outputs:
    """One model's outputs on the data, the labels, notes on input conversion, and the time it took."""

    outputs: list[np.ndarray]
    labels: np.ndarray | None
    notes: list[str]
    seconds: float


def _collect(runner: Runner, dataset: LabeledData, options: RunOptions, bar: ProgressBar, *, what: str) -> _Outputs:
    """Stream the data through one model (the one place models and references are run)."""
    bar.describe(f"evaluating {what}{runner.name}")
    start = time.perf_counter()
    outputs, labels, notes = collect_outputs(runner, dataset, dataset.color, batch_size=options.batch_size,
                                             advance=bar.advance)
    return _Outputs(outputs, labels, notes, time.perf_counter() - start)


def _reference_outputs(ref: Runner, runner: Runner, dataset: LabeledData, options: RunOptions,
                       cache: list[tuple[Runner, _Outputs]], bar: ProgressBar) -> _Outputs:
    """Reference outputs for the inputs ``runner`` sees; a source reference adopts a bundle's spec per bundle."""
    for seen, outs in cache:
        if same_preprocessing(seen, runner) or isinstance(ref, BundleRunner):
            return outs
    if not isinstance(ref, BundleRunner) and runner.preprocessing is not None:
        ref.preprocessing = runner.preprocessing  # a source sees each bundle's inputs exactly
    outs = _collect(ref, dataset, options, bar, what="reference ")
    cache.append((runner, outs))
    return outs


def evaluate(
    model: Any,
    data: DataSource,
    *,
    reference: Any = None,
    preprocessing: Preprocessing | None = None,
    limit: int | None = None,
    options: RunOptions | None = None,
    progress: bool = True,
) -> EvalResult:
    """Accuracy on labeled data and, with ``reference``, agreement of every output with the reference model.

    Args:
        model: a bundle (``.epk`` path or Session), a ``.tflite``/``.onnx`` file, or a source model
            (``.keras``/``.h5``, SavedModel folder, ``keras.Model``).
        data: image folder (one sub-folder per class), ``.npz``, ``"fashion-mnist[:split]"``, ``(x, y)``
            or unlabeled ``x``.
        reference: model to compare with (the source, or another bundle); same kinds as ``model``.
        preprocessing: how images become input tensors for models without a spec (default: the bundle's).
        limit: use only the first ``limit`` samples (folders: spread over all classes).
        options: backend, delegates, threads, batch size.
        progress: show a progress bar.

    Raises:
        EvalDataError, LabelMismatchError, InputSpecError, BackendUnavailableError, SourceModelError.
    """
    return evaluate_many([model], data, reference=reference, preprocessing=preprocessing, limit=limit,
                         options=options, progress=progress)[0]


class _CallableModule(types.ModuleType):
    """``edgepack.measure.evaluate`` is both this module and the function: calling the module calls :func:`evaluate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> EvalResult:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
