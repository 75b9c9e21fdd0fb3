"""Compare a converted model with its source: agreement figures and the pass/fail rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgepack.runtimes.backends.base import Engine
from edgepack.runtimes.tensors import dequantize, to_model_dtype

from .errors import ToleranceError


@dataclass(frozen=True)
class Agreement:
    """How closely one output of a converted model follows the reference."""

    name: str
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    snr_db: float
    top1_agreement: float | None


@dataclass(frozen=True)
class Thresholds:
    """Minimum agreement a converted model must reach to count."""

    min_cosine: float
    min_top1_agreement: float


MIN_TOP1_SAMPLES = 20

DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(0.9999, 0.99),
    "fp16": Thresholds(0.999, 0.98),
    "dynamic_int8": Thresholds(0.99, 0.95),
    "full_int8": Thresholds(0.98, 0.90),
    "int16x8": Thresholds(0.995, 0.95),
}


def agreement(name: str, reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Agreement of ``candidate`` with ``reference`` (both ``(N, ...)``)."""
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    got = candidate.astype(np.float64).reshape(len(candidate), -1)
    diff = np.abs(ref - got)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(denom > 0, np.sum(ref * got, axis=1) / np.maximum(denom, 1e-300), 1.0)
    noise = float(np.sum((ref - got) ** 2))
    snr = float("inf") if noise == 0 else 10 * np.log10(max(float(np.sum(ref**2)), 1e-300) / noise)
    top1 = float(np.mean(np.argmax(ref, 1) == np.argmax(got, 1))) if ref.shape[1] > 1 else None
    return Agreement(name=name, max_abs_error=float(diff.max()) if diff.size else 0.0,
                     mean_abs_error=float(diff.mean()) if diff.size else 0.0, cosine=float(np.mean(cos)),
                     snr_db=snr, top1_agreement=top1)


@dataclass
class Validation:
    """Agreement of each output over ``samples`` inputs, plus any rule that failed."""

    samples: int
    outputs: list[Agreement]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every rule held."""
        return not self.failures


def run_batch(engine: Engine, samples: Sequence[Sequence[np.ndarray]],
              input_order: Sequence[int]) -> list[np.ndarray]:
    """Run every sample (batch of one) through ``engine``; stack float outputs as ``(N, ...)``."""
    per_output: list[list[np.ndarray]] = [[] for _ in engine.outputs]
    for sample in samples:
        arrays = [to_model_dtype(sample[j], spec) for j, spec in zip(input_order, engine.inputs)]
        for k, (out, spec) in enumerate(zip(engine.run(arrays), engine.outputs)):
            per_output[k].append(dequantize(out, spec))
    return [np.concatenate(o, axis=0) for o in per_output]


def check(
    agreements: Sequence[Agreement], *, precision: str, samples: int, thresholds: Thresholds | None = None
) -> list[str]:
    """Rules that ``agreements`` break for this precision (empty when all hold).

    Top-1 agreement is judged only over at least :data:`MIN_TOP1_SAMPLES` samples: on fewer, one
    near-tie flips it by several points and says nothing about the model.
    """
    t = thresholds or DEFAULT_THRESHOLDS.get(precision, DEFAULT_THRESHOLDS["full_int8"])
    failures = []
    judge_top1 = samples >= MIN_TOP1_SAMPLES
    for a in agreements:
        if not a.cosine >= t.min_cosine:
            failures.append(f"{a.name}: cosine {a.cosine:.5f} < {t.min_cosine}")
        if judge_top1 and a.top1_agreement is not None and a.top1_agreement < t.min_top1_agreement:
            failures.append(f"{a.name}: top-1 agreement {a.top1_agreement:.3f} < {t.min_top1_agreement}")
    return failures


def raise_if_failed(validation: Validation, *, precision: str, hint: str = "") -> None:
    """Raise :class:`ToleranceError` listing every failed rule, then ``hint`` (what the format suggests trying)."""
    if validation.failures:
        raise ToleranceError(
            f"the {precision} model misses tolerance vs the source on {validation.samples} samples: "
            + "; ".join(validation.failures)
            + ". Use a less aggressive recipe, more/better calibration data, or loosen thresholds= if intended."
            + (f" {hint}" if hint else "")
        )
