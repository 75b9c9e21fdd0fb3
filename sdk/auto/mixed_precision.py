"""Accuracy-aware mixed precision: full int8, with the fewest most-sensitive layers kept in float that meet an
accuracy budget.

1. Convert with ``base`` (TFLite full int8, or ONNX ``qdq-int8``) and evaluate it on ``eval_data``; within the budget,
   that bundle is the answer.
2. Otherwise rank the layers — ONNX: by the per-layer debugger's SNR (:func:`debug_quantization`, lowest first);
   TFLite: by the output SNR with only that layer in int8 (:func:`layer_sensitivity`; the debugger's local SNR misses
   layers hurt through their quantized *input*, measured: it ranked the culprits of the attention model 1-4 and
   17-18 of 20) — and keep the ``k`` worst in float (``recipe.exclude``: TFLite selective quantization, ORT
   ``nodes_to_exclude``), ``k`` = 1, 2, 4, ... until one meets the budget, then bisect between the last miss and that
   hit. Every try is a real :func:`convert` and a real evaluation; it counts only when it also passes convert's
   validation gate (a try that fails it is still scored, for the report).
3. Measure fp32, plain int8 and the result in the target's runtime on this host, interleaved, and report the size and
   latency cost and the share of int8's speed-up over fp32 that was kept.

16-bit activations (int16x8) were not made a step: they have no XNNPACK kernels in LiteRT (DESIGN.md §6: 224 ms vs
1.5 ms for MobileNetV2), so they would give away the speed-up that is the point of int8; a float layer costs only
itself.

>>> bundle, report = mixed_precision("model.keras", calib, base=full_int8(), eval_data="fashion-mnist:test",
...                                  max_accuracy_drop=0.5, target="x86")
>>> report["float_layers"], report["speed_up_kept"]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.calibration import Calibration
from edgepack.converters.convert import convert
from edgepack.converters.errors import ToleranceError
from edgepack.converters.formats.tflite.export import configured_converter
from edgepack.converters.formats.tflite.selective import layer_sensitivity
from edgepack.converters.package import ConvertedBundle
from edgepack.converters.validate import Thresholds
from edgepack.measure.data import DataSource, EvalDataError, LabeledData, open_data
from edgepack.measure.evaluate import EvalResult, evaluate_many
from edgepack.measure.qdebug import debug_quantization
from edgepack.measure.runners import KerasRunner, RunOptions, open_runner, prepare
from edgepack.runtimes.benchmark import golden_call, interleaved
from edgepack.runtimes.errors import ConfigError, EdgepackError
from edgepack.runtimes.progress import ProgressBar
from edgepack.runtimes.recipe import Precision, Recipe, get_recipe
from edgepack.runtimes.session import load
from edgepack.runtimes.target import Target, get_target

__all__ = ["MixedPrecisionError", "mixed_precision"]

#: Measurement only (never shipped): the plain int8 and fp32 references are converted without the validation gate.
_NO_GATE = Thresholds(min_cosine=0.0, min_top1_agreement=0.0)


class MixedPrecisionError(EdgepackError):
    """No mix of float and int8 layers tried meets the accuracy budget."""


def mixed_precision(model: Any, calibration: Calibration, *, base: str | Recipe, eval_data: DataSource | None,
                    max_accuracy_drop: float, target: str | Path | Target, progress: bool = True,
                    labels: Sequence[str] | str | Path | None = None, preprocessing: Any = None,
                    eval_limit: int | None = None, debug_samples: int = 100, thresholds: Thresholds | None = None,
                    latency_blocks: int = 20, latency_threads: int | None = 1) -> tuple[ConvertedBundle, dict]:
    """Full int8 with as few float layers as it takes to stay within ``max_accuracy_drop`` points of the source.

    Args:
        model: the float source (``.keras``/SavedModel/``keras.Model`` for TFLite, ``.onnx`` for ONNX).
        calibration: representative data, as :func:`convert` takes it.
        base: the int8 recipe to start from: TFLite ``full-int8`` or ONNX ``qdq-int8`` (name or :class:`Recipe`).
        eval_data: what :func:`edgepack.measure.evaluate` takes (``"fashion-mnist:test"``, ``.npz``, folder, data
            set); labelled: top-1 accuracy, unlabelled: top-1 agreement with the source.
        max_accuracy_drop: the budget, in points (0.5 = half a percentage point below the source).
        target: the target (its runtime measures latency on this host).
        progress: show a progress bar over the tries.
        labels, preprocessing, thresholds: as for :func:`convert`.
        eval_limit: evaluate on the first N samples only.
        debug_samples: samples for the per-layer ranking.
        latency_blocks: interleaved timing blocks (of 20 runs each) per model; 0 skips the latency figures.
        latency_threads: interpreter threads for the latency figures.

    Returns:
        The bundle (its recipe's ``exclude`` lists the float layers; ``bundle.report["mixed_precision"]`` holds the
        report) and the report.

    Raises:
        ConfigError: no eval data, a negative budget, a base recipe that is not full int8.
        MixedPrecisionError: even the most sensitive layers in float miss the budget (says the best reached).
        EvalDataError, ConversionError, ToleranceError: as :func:`evaluate` and :func:`convert` raise them.
    """
    if eval_data is None:
        raise ConfigError("mixed precision needs eval_data (labelled: accuracy; unlabelled: agreement with the "
                          "source), e.g. eval_data='fashion-mnist:test' or an .npz (CLI: --eval-data).")
    if not max_accuracy_drop >= 0:
        raise ConfigError(f"max_accuracy_drop={max_accuracy_drop!r} must be 0 or more points (0.5 = half a point).")
    tgt = get_target(target)
    recipe = _base_recipe(base, model)
    data = open_data(eval_data, limit=eval_limit)
    kwargs: dict[str, Any] = {"target": tgt, "labels": labels, "preprocessing": preprocessing, "progress": False}
    tries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-mixed-") as tmp, \
            ProgressBar(None, "mixed precision: plain int8", enabled=progress) as bar:
        folder = Path(tmp)
        shipped, gated = _convert(model, calibration, recipe, kwargs, thresholds)
        plain = shipped or _convert(model, calibration, recipe, kwargs, _NO_GATE)[0]  # measured all the same
        assert plain is not None  # _NO_GATE never fails the gate
        plain_path = plain.save(folder / "int8.epk")
        first = evaluate_many([plain_path, model], data, progress=False)
        labelled = first[0].accuracy is not None
        reference = _score(first[1], labelled) if labelled else 100.0
        score = _score(first[0], labelled)
        tries.append(_try(recipe.exclude, score, reference, max_accuracy_drop, gated))
        bar.advance()
        chosen, chosen_path = (plain, plain_path) if shipped is not None and tries[-1]["meets"] else (None, None)
        ranking: dict[str, Any] = {}
        if chosen is None:
            bar.describe("mixed precision: ranking layers")
            ranked, ranking = _rank(model, calibration, data, recipe, preprocessing, debug_samples)
            order = [name for name in ranked if name not in recipe.exclude]
            ranking["layers"] = len(order)

            def attempt(k: int) -> tuple[ConvertedBundle | None, Path | None]:
                names = (*recipe.exclude, *order[:k])
                bar.describe(f"mixed precision: {k} float layer(s)")
                mixed = replace(recipe, exclude=names)
                bundle, gate = _convert(model, calibration, mixed, kwargs, thresholds)
                scored = bundle or _convert(model, calibration, mixed, kwargs, _NO_GATE)[0]  # score it all the same
                path = scored.save(folder / f"mixed_{k}.epk")  # type: ignore[union-attr]
                got = evaluate_many([path], data, reference=None if labelled else model, progress=False)[0]
                tries.append(_try(names, _score(got, labelled), reference, max_accuracy_drop, gate))
                bar.advance()
                return (bundle, path) if bundle is not None and tries[-1]["meets"] else (None, None)

            chosen, chosen_path = _search(attempt, len(order) - 1)
            if chosen is None or chosen_path is None:
                best = max((t for t in tries if t["score"] is not None), key=lambda t: t["score"])
                raise MixedPrecisionError(
                    f"no mix meets a {max_accuracy_drop:g}-point budget on {data.name}: the source scores "
                    f"{reference:.2f}, plain int8 {tries[0]['score']:.2f}, the best try {best['score']:.2f} with "
                    f"{len(best['exclude'])} float layer(s) (of {len(order)}). Try a larger budget, more or better "
                    "calibration data, per-channel weights, quantization-aware training, or fp16 / fp32.")
        report = _report(recipe, tries, reference, labelled, data, max_accuracy_drop, ranking, chosen)
        if latency_blocks > 0:
            bar.describe("mixed precision: measuring latency")
            fp32, _ = _convert(model, calibration, _float_recipe(recipe), kwargs, _NO_GATE)
            assert fp32 is not None
            paths = {"fp32": fp32.save(folder / "fp32.epk"), "int8": plain_path, "mixed": chosen_path}
            report.update(_costs(paths, {"fp32": fp32, "int8": plain, "mixed": chosen}, latency_blocks,
                                 latency_threads))
    chosen.add_report("mixed_precision", report)
    return chosen, report


def _base_recipe(base: str | Recipe, model: Any) -> Recipe:
    fmt = base.format if isinstance(base, Recipe) else ("onnx" if str(model).lower().endswith(".onnx") else None)
    recipe = get_recipe(base, format=fmt)
    if recipe.precision is not Precision.FULL_INT8:
        raise ConfigError(f"mixed precision starts from a full int8 recipe (TFLite full-int8, ONNX qdq-int8), not "
                          f"{recipe.label} ({recipe.precision.value}).")
    return recipe


def _float_recipe(recipe: Recipe) -> Recipe:
    return Recipe(precision=Precision.FP32, format=recipe.format, name="fp32", prune=recipe.prune)


def _convert(model: Any, calibration: Calibration, recipe: Recipe, kwargs: dict[str, Any],
             thresholds: Thresholds | None) -> tuple[ConvertedBundle | None, str | None]:
    """The bundle, or None and why when it fails the validation gate (that try misses)."""
    try:
        return convert(model, calibration, recipe=recipe, thresholds=thresholds, **kwargs), None
    except ToleranceError as exc:
        return None, str(exc)


def _score(result: EvalResult, labelled: bool) -> float:
    """Top-1 accuracy (labelled) or top-1 agreement with the source, in points."""
    if labelled:
        if result.accuracy is None:
            raise EvalDataError(f"{result.model}: no accuracy on {result.data}.")
        return 100.0 * result.accuracy.top1
    agree = result.agreement[0].top1_agreement if result.agreement else None
    if agree is None:
        raise EvalDataError(f"{result.model}: unlabelled data needs class scores to compare top-1 with the source; "
                            "pass labelled eval data.")
    return 100.0 * agree


def _try(names: Sequence[str], score: float | None, reference: float, budget: float,
         gate: str | None) -> dict[str, Any]:
    drop = None if score is None else reference - score
    return {"float_layers": len(names), "exclude": list(names), "score": score, "drop": drop,
            "meets": gate is None and drop is not None and drop <= budget + 1e-9,
            **({"failed_validation": gate} if gate else {})}


def _rank(model: Any, calibration: Calibration, data: LabeledData, recipe: Recipe, preprocessing: Any,
          samples: int) -> tuple[list[str], dict[str, Any]]:
    """Layer names, most sensitive first, and how they were ranked (for the report).

    The per-layer debugger ranks by local int8 error; for TFLite that misses layers whose *input* quantization
    hurts (a same-scale op, a fixed-scale SOFTMAX feeding a sum), so the layers are ordered by the output SNR
    with only that layer in int8 (:func:`layer_sensitivity`), the debugger's SNR breaking ties. Samples: the
    calibration data when it is a data set, else the eval data.
    """
    try:
        source: DataSource = open_data(calibration, limit=samples)  # type: ignore[arg-type]
    except EvalDataError:
        source = data
    report = debug_quantization(model, source, recipe=recipe, preprocessing=preprocessing, limit=samples,
                                verify=False)
    if not report.layers:
        raise MixedPrecisionError("the per-layer debugger found no quantized layer to keep in float.")
    local = {layer.name: layer for layer in report.layers}
    how: dict[str, Any] = {"method": report.method,
                           "debugger": [_row(la.name, la.op, snr_db=la.snr_db) for la in report.layers[:20]]}
    if recipe.format != "tflite":
        return [layer.name for layer in report.layers], how
    runner = open_runner(model, preprocessing=preprocessing, options=RunOptions())
    try:
        if not isinstance(runner, KerasRunner):  # the debugger already refused anything else
            return [layer.name for layer in report.layers], how
        dataset = open_data(source, limit=samples)
        xs = [prepare(x, dataset.color, runner)[0].astype(np.float32) for x, _ in dataset]
        conv = configured_converter(runner.src, recipe, calibration=[[x] for x in xs])
        measured = layer_sensitivity(conv, recipe, xs)
    finally:
        runner.close()
    inf = float("inf")
    measured.sort(key=lambda m: (m.output_snr_db, local[m.name].snr_db if m.name in local else inf, m.name))
    how.update(method="output SNR with only that layer int8 (then the debugger's local SNR)",
               measured=[_row(m.name, m.op, output_snr_db=m.output_snr_db) for m in measured[:20]])
    return [m.name for m in measured], how


def _row(name: str, op: str, **figures: float) -> dict[str, Any]:
    return {"name": name, "op": op, **{k: (None if v == float("inf") else round(v, 2)) for k, v in figures.items()}}


def _search(attempt: Any, most: int) -> tuple[ConvertedBundle | None, Path | None]:
    """Smallest ``k`` in 1..``most`` whose try meets the budget: doubling, then bisection (tries in between)."""
    low, k, hit = 0, 1, None
    while k <= most:
        got = attempt(k)
        if got[0] is not None:
            hit = (k, got)
            break
        low, k = k, (most if k < most < 2 * k else 2 * k)
    if hit is None:
        return None, None
    high, best = hit
    while high - low > 1:
        mid = (low + high) // 2
        got = attempt(mid)
        if got[0] is not None:
            high, best = mid, got
        else:
            low = mid
    return best


def _report(recipe: Recipe, tries: list[dict[str, Any]], reference: float, labelled: bool, data: LabeledData,
            budget: float, ranking: dict[str, Any], chosen: ConvertedBundle) -> dict[str, Any]:
    final = chosen.manifest.models[0].recipe
    names = list(final.exclude) if final is not None else []
    return {
        "base_recipe": recipe.label, "format": recipe.format,
        "metric": "top-1 accuracy" if labelled else "top-1 agreement with the source",
        "eval_data": data.name, "eval_samples": len(data), "max_accuracy_drop": budget,
        "source_score": reference, "plain_int8_score": tries[0]["score"],
        "score": next(t["score"] for t in reversed(tries) if t["exclude"] == names),
        "float_layers": {"count": len(names), "names": names, "of": ranking.get("layers")},
        "ranking": ranking,
        "tries": tries,
    }


def _costs(paths: dict[str, Path], bundles: dict[str, ConvertedBundle], blocks: int,
           threads: int | None) -> dict[str, Any]:
    """Size and interleaved p50 latency of fp32, plain int8 and the mix in the target's runtime; speed-up kept."""
    sessions = {k: load(p, num_threads=threads) for k, p in paths.items()}
    try:
        fns = {k: golden_call(s) for k, s in sessions.items()}
        start = time.perf_counter()
        stats = interleaved(fns, blocks=blocks, per_block=20, warmup=20)
        runtime = {k: s.backend for k, s in sessions.items()}
    finally:
        for s in sessions.values():
            s.close()
    p50 = {k: stats[k].p50_ms for k in paths}
    gain = p50["fp32"] - p50["int8"]
    return {
        "size_bytes": {k: b.size_bytes for k, b in bundles.items()},
        "latency_p50_ms": p50,
        "latency_vs_fp32": {k: p50[k] / p50["fp32"] for k in paths},
        "speed_up_kept": (p50["fp32"] - p50["mixed"]) / gain if gain > 0 else None,
        "latency": {"runtime": runtime["mixed"], "threads": threads, "blocks": blocks, "runs_per_block": 20,
                    "seconds": time.perf_counter() - start,
                    "note": "interleaved on this host" + ("" if gain > 0 else
                                                          "; plain int8 is not faster than fp32 here")},
    }
