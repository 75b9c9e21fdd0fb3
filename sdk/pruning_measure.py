"""Measure a pruned model against the unpruned one the way the target will run them: both converted with the same
recipe, both run in the target's runtime (latency interleaved, one thread), both evaluated on the same data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.errors import ConversionError, PruningError
from edgepack.runtimes.manifest import Preprocessing
from edgepack.runtimes.recipe import Recipe, get_recipe
from edgepack.runtimes.target import Target

#: Interleaved timing: blocks x calls per model (ratios measured this way hold on a shared machine).
BLOCKS, PER_BLOCK = 20, 25


def input_shape(model: Any, kind: str, example_input: Any = None) -> tuple[int, ...]:
    """The model's first input shape (dynamic dimensions as -1)."""
    if kind == "keras":
        inputs = model.inputs
        if len(inputs) != 1:
            raise PruningError(f"pruning data for a model with {len(inputs)} inputs must be model-ready arrays; "
                               "images fit one-input models only.")
        return tuple(-1 if d is None else int(d) for d in inputs[0].shape)
    if kind == "torch":
        if example_input is None:
            raise PruningError("a PyTorch module needs example_input=... (a tensor shaped like one batch).")
        return tuple(int(d) for d in example_input.shape)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(int(d.dim_value) if d.dim_value > 0 else -1 for d in dims)


def compare(original: Any, pruned: Any, *, kind: str, target: Target, recipe: str | Recipe | None,
            calibration: np.ndarray | None, eval_data: Any, preprocessing: Preprocessing | None,
            example_input: Any, progress: bool) -> dict[str, Any]:
    """Convert both models for ``target``, then measure sizes, latency and accuracy; a flat dict of figures."""
    import tempfile

    fmt = "onnx" if kind in ("torch", "onnx") else None
    rec = get_recipe(recipe or ("full-int8" if calibration is not None else "fp32"), format=fmt)
    out: dict[str, Any] = {"recipe": rec.label, "format": rec.format}
    with tempfile.TemporaryDirectory(prefix="edgepack-prune-") as tmp:
        paths = {}
        for which, model in (("before", original), ("after", pruned)):
            path = Path(tmp) / f"{which}.epk"
            bundle = _convert(model, which, target=target, recipe=rec, calibration=calibration,
                              preprocessing=preprocessing, example_input=example_input, progress=progress)
            bundle.save(path)
            paths[which] = path
            out[f"model_bytes_{which}"] = bundle.manifest.models[0].bytes
            out[f"bundle_bytes_{which}"] = path.stat().st_size
        out.update(_latency(paths))
        if eval_data is not None:
            out.update(_accuracy(paths, eval_data, progress=progress))
    return out


def _convert(model: Any, which: str, *, target: Target, recipe: Recipe, calibration: np.ndarray | None,
             preprocessing: Preprocessing | None, example_input: Any, progress: bool) -> Any:
    from edgepack.converters.convert import convert

    calib = None if calibration is None else calibration[: recipe.calibration_samples]
    try:
        return convert(model, calib, target=target, recipe=recipe, preprocessing=preprocessing,
                       example_input=example_input, name=f"{which}-pruning", progress=progress)
    except ConversionError as exc:
        if which == "before":
            raise
        raise PruningError(f"the pruned model does not convert with {recipe.label} for {target.name}: {exc}") from exc


def _latency(paths: dict[str, Path]) -> dict[str, Any]:
    from edgepack.runtimes import load
    from edgepack.runtimes.benchmark import golden_call, interleaved

    sessions = {which: load(path, num_threads=1) for which, path in paths.items()}
    try:
        calls = {which: golden_call(session) for which, session in sessions.items()}
        stats = interleaved(calls, blocks=BLOCKS, per_block=PER_BLOCK, warmup=10)
        out: dict[str, Any] = {"latency_threads": 1, "latency_runs": BLOCKS * PER_BLOCK}
        for which, s in stats.items():
            out[f"latency_p50_ms_{which}"] = s.p50_ms
            out[f"latency_p90_ms_{which}"] = s.p90_ms
            out[f"delegate_{which}"] = getattr(sessions[which], "delegate", None)
        return out
    finally:
        for session in sessions.values():
            session.close()


def _accuracy(paths: dict[str, Path], eval_data: Any, *, progress: bool) -> dict[str, Any]:
    from edgepack.measure.evaluate import evaluate, evaluate_many

    before, after = evaluate_many([str(paths["before"]), str(paths["after"])], eval_data, progress=progress)
    out: dict[str, Any] = {"eval_data": before.data, "eval_samples": before.samples}
    if before.accuracy is not None and after.accuracy is not None:
        out["accuracy_before"], out["accuracy_after"] = before.accuracy.top1, after.accuracy.top1
        out["accuracy_metric"] = "top-1 on labels"
    else:
        agree = evaluate(str(paths["after"]), eval_data, reference=str(paths["before"]), progress=progress)
        top1 = agree.agreement[0].top1_agreement if agree.agreement else None
        out["accuracy_before"], out["accuracy_after"] = 1.0, top1
        out["accuracy_metric"] = "top-1 agreement with the unpruned model (no labels)"
    if out.get("accuracy_after") is not None:
        out["accuracy_drop_points"] = 100.0 * (out["accuracy_before"] - out["accuracy_after"])
    return out
