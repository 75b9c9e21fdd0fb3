"""Judge the measured candidates against the budgets: the fastest that meets every budget wins; every other one
says why it lost; when none fits, :class:`BudgetError` lists the closest and the budget each missed."""

from __future__ import annotations

from collections.abc import Sequence

from edgepack.converters.errors import ToleranceError

from .budgets import AutoBudgets
from .candidates import Candidate


class BudgetError(ToleranceError):
    """No candidate meets every budget (the message lists the closest ones and what each missed)."""


def misses(cand: Candidate, budgets: AutoBudgets) -> list[tuple[str, float]]:
    """The budgets ``cand`` misses, each with how far over it is (measured / limit, > 1)."""
    f = cand.figures
    out: list[tuple[str, float]] = []
    checks = (
        ("size", f.get("bytes"), budgets.max_size_bytes, lambda v: f"{v / 1e6:.3g} MB"),
        ("latency", f.get("p50_ms"), budgets.max_latency_ms, lambda v: f"p50 {v:.3g} ms"),
        ("RAM", f.get("rss_bytes"), budgets.max_ram_bytes, lambda v: f"peak RSS {v / 1e6:.3g} MB"),
    )
    for name, value, limit, fmt in checks:
        if limit is not None and value is not None and value > limit:
            out.append((f"{name} {fmt(value)} > {fmt(limit)}", value / limit))
    drop, limit_drop = f.get("accuracy_drop"), budgets.max_accuracy_drop
    if limit_drop is not None and drop is not None and drop > limit_drop:
        out.append((f"accuracy drop {drop:.2f} pt > {limit_drop:g} pt", 1 + (drop - limit_drop) / max(limit_drop, 0.1)))
    return out


def speed_of(cand: Candidate) -> float | None:
    """What ranks candidates: measured p50 latency, else the estimated ratio to fp32 (None: nothing known)."""
    f = cand.figures
    if f.get("p50_ms") is not None:
        return float(f["p50_ms"])
    if f.get("estimated_vs_fp32") is not None:
        return float(f["estimated_vs_fp32"])
    return None


def choose(cands: Sequence[Candidate], budgets: AutoBudgets, *, estimate: bool) -> Candidate:
    """Mark the winner ``won`` and the others ``lost`` with their reason; return the winner.

    Raises:
        BudgetError: no measured candidate meets every budget.
    """
    judged = [c for c in cands if c.status == "converted"]
    fits = [c for c in judged if not misses(c, budgets) and speed_of(c) is not None]
    for c in judged:
        missed = misses(c, budgets)
        if missed:
            c.status, c.reason = "lost", "over budget: " + "; ".join(m for m, _ in missed)
        elif speed_of(c) is None:
            c.status, c.reason = "lost", c.reason or "no latency figure (not measured, none in the target's table)"
    if not fits:
        raise BudgetError(nothing_fits(judged, budgets, [c for c in cands if c not in judged]))
    fits.sort(key=lambda c: (speed_of(c), c.figures.get("bytes") or 0))
    win = fits[0]
    best = speed_of(win) or 0.0
    unit = "× fp32 (estimated)" if estimate and win.figures.get("p50_ms") is None else " ms p50"
    win.status = "won"
    win.reason = f"fastest that meets every budget: {best:.4g}{unit}"
    for c in fits[1:]:
        s = speed_of(c) or 0.0
        c.status = "lost"
        c.reason = f"slower: {s:.4g}{unit}, {s / best:.2f}× the winner" if best > 0 else "slower"
    return win


def nothing_fits(judged: Sequence[Candidate], budgets: AutoBudgets, others: Sequence[Candidate]) -> str:
    """One line: the budgets, the closest candidates and what each missed, and what did not convert."""
    given = []
    if budgets.max_size_bytes is not None:
        given.append(f"size <= {budgets.max_size_bytes / 1e6:g} MB")
    if budgets.max_accuracy_drop is not None:
        given.append(f"accuracy drop <= {budgets.max_accuracy_drop:g} pt")
    if budgets.max_latency_ms is not None:
        given.append(f"p50 latency <= {budgets.max_latency_ms:g} ms")
    if budgets.max_ram_bytes is not None:
        given.append(f"peak RSS <= {budgets.max_ram_bytes / 1e6:g} MB")
    scored = sorted(judged, key=lambda c: (len(misses(c, budgets)), max((x for _, x in misses(c, budgets)),
                                                                        default=1.0)))
    closest = "; ".join(f"{c.key}: " + (", ".join(m for m, _ in misses(c, budgets)) or c.reason)
                        for c in scored[:3])
    rest = "; ".join(f"{c.key} {c.status} ({c.reason[:80]})" for c in others if c.status in ("failed", "ineligible"))
    msg = f"no candidate meets every budget ({', '.join(given) or 'none given'})"
    msg += f"; closest: {closest}" if closest else "; no candidate converted"
    if rest:
        msg += f"; not eligible: {rest}"
    return msg + "; relax a budget, give calibration data (int8 candidates) or pick a recipe yourself."
