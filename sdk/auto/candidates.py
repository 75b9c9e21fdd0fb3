"""The candidates of ``--recipe auto``: every recipe the target allows, in every format the target runs, each
converted and validated by :func:`edgepack.converters.convert.convert` (one bundle per candidate)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from edgepack.converters.convert import convert
from edgepack.converters.formats import format_claiming, registered_formats
from edgepack.converters.package import ConvertedBundle
from edgepack.runtimes.backends import registered_backends
from edgepack.runtimes.errors import EdgepackError
from edgepack.runtimes.recipe import IODType, PruneOptions, Recipe, get_recipe
from edgepack.runtimes.target import Target

#: Per format, the recipes tried (name, I/O dtype), fastest-on-a-typical-CPU first only for readability.
RECIPES: dict[str, tuple[tuple[str, IODType], ...]] = {
    "tflite": (("fp32", IODType.FLOAT32), ("fp16", IODType.FLOAT32), ("dynamic-int8", IODType.FLOAT32),
               ("full-int8", IODType.FLOAT32), ("full-int8", IODType.INT8), ("int16x8", IODType.FLOAT32)),
    "onnx": (("onnx-fp32", IODType.FLOAT32), ("onnx-fp16", IODType.FLOAT32), ("onnx-dynamic-int8", IODType.FLOAT32),
             ("qdq-int8", IODType.FLOAT32), ("qdq-int16x8", IODType.FLOAT32)),
}


@dataclass
class Candidate:
    """One recipe in one format, what became of it, and what was measured (figures filled in by measure/select)."""

    key: str
    recipe: Recipe
    status: str = "pending"  # converted | failed | skipped | ineligible | won | lost
    reason: str = ""
    bundle: ConvertedBundle | None = None
    path: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """The output format (``tflite``, ``onnx``)."""
        return self.recipe.format

    def row(self) -> dict[str, Any]:
        """The candidate as one row of the bundle report."""
        return {"candidate": self.key, "format": self.format, "precision": self.recipe.precision.value,
                "io_dtype": self.recipe.io_dtype.value, "status": self.status, "reason": self.reason,
                **self.figures}


def key_of(recipe: Recipe) -> str:
    """A short unique name: ``tflite-full_int8-int8io``, ``onnx-qdq_int8``."""
    io = "" if recipe.io_dtype is IODType.FLOAT32 else f"-{recipe.io_dtype.value}io"
    pruned = "" if recipe.prune is None else "-pruned"
    return f"{recipe.format}-{recipe.label}{io}{pruned}"


def target_formats(target: Target, model: Any) -> list[str]:
    """Formats the target has a runtime for and the source can become (an ``.onnx`` source stays ONNX; a Keras
    model or SavedModel becomes either)."""
    backends = registered_backends()
    runs = [f for r in target.runtimes if r in backends for f in backends[r].formats]
    native = format_claiming(model)
    known = registered_formats()
    return [f for f in dict.fromkeys(runs) if f in known and f in RECIPES and (native is None or f == native)]


def enumerate_candidates(model: Any, target: Target, *, has_calibration: bool,
                         prune: PruneOptions | None = None) -> list[Candidate]:
    """Every candidate the target allows; those needing calibration data are ``skipped`` without it. With
    ``prune``, every recipe also gets a pruned twin (pruned, distilled on the calibration data, then quantized)."""
    out: list[Candidate] = []
    for fmt in target_formats(target, model):
        for name, io in RECIPES[fmt]:
            rec = get_recipe(name, format=fmt)
            if io is not IODType.FLOAT32:
                rec = replace(rec, io_dtype=io)
            if not target.allows(rec.precision):
                continue
            for variant in (rec, *(() if prune is None else (replace(rec, prune=prune),))):
                cand = Candidate(key_of(variant), variant)
                if variant.needs_calibration and not has_calibration:
                    cand.status, cand.reason = "skipped", "needs calibration data (--calibration)"
                elif variant.prune is not None and variant.prune.epochs and not has_calibration:
                    cand.status, cand.reason = "skipped", "pruning distils on the calibration data (--calibration)"
                out.append(cand)
    return out


def build(cand: Candidate, model: Any, calibration: Any, target: Target, convert_kwargs: dict[str, Any]) -> None:
    """Convert and validate one candidate; a failure is recorded on it, never raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "tflite-runtime cannot run this": read back from the report
            bundle = convert(model, calibration, target=target, recipe=cand.recipe, progress=False, **convert_kwargs)
    except EdgepackError as exc:
        cand.status, cand.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        return
    cand.bundle, cand.status = bundle, "converted"
    cand.figures["bytes"] = bundle.size_bytes
    val = (bundle.report.get("models") or [{}])[0].get("validation") or {}
    outs = val.get("outputs") or []
    if outs:
        cand.figures["validation_cosine"] = outs[0].get("cosine")
    cannot = {rt: msg for rt, msg in runtime_compatibility(bundle).items() if msg != "ok"}
    if cannot:
        cand.status = "ineligible"
        cand.reason = "; ".join(f"{rt} on {target.name} {msg}" for rt, msg in cannot.items()) + \
            " (a target that names a runtime must be able to load the bundle with it)"


def runtime_compatibility(bundle: ConvertedBundle) -> dict[str, str]:
    """``{runtime: "ok" | "cannot run: ..."}`` as convert recorded it for the bundle's model."""
    report = (bundle.report.get("models") or [{}])[0]
    return dict(report.get("runtime_compatibility") or {})


def build_all(cands: list[Candidate], model: Any, calibration: Any, target: Target, convert_kwargs: dict[str, Any],
              *, progress: bool, on_step: Callable[[str], None] | None = None) -> None:
    """Convert every pending candidate under one progress bar."""
    from edgepack.runtimes.progress import ProgressBar

    todo = [c for c in cands if c.status == "pending"]
    with ProgressBar(len(todo), "auto: converting candidates", enabled=progress) as bar:
        for cand in todo:
            bar.describe(f"auto: converting {cand.key}")
            if on_step is not None:
                on_step(cand.key)
            build(cand, model, calibration, target, convert_kwargs)
            bar.advance()
