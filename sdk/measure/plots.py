"""Matplotlib figures for :mod:`edgepack.measure.report` (rendered headless, returned as PNG bytes)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgepack.runtimes.errors import EdgepackError

if TYPE_CHECKING:
    from edgepack.measure.qdebug import QuantDebugReport
    from edgepack.measure.report import ReportEntry

#: Smallest half-span of the scatter's y axis (0.5 accuracy points either side).
MIN_Y_SPAN = 0.005
#: Layers above this SNR lost nothing to quantization (pooling, reshapes): left out of the bar chart.
LOSSLESS_DB = 100.0
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


class PlotsUnavailableError(EdgepackError):
    """matplotlib, which draws the report's plots, is not installed (it comes with the ``dev`` extra)."""


def require() -> None:
    """Raise :class:`PlotsUnavailableError` unless matplotlib can be imported (call it before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotsUnavailableError("edgepack report draws its plots with matplotlib, which is not installed "
                                    "here; install it with `pip install 'edgepack[dev]'`.") from exc


def _pyplot() -> Any:
    require()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def quality(entry: ReportEntry) -> tuple[float | None, str]:
    """The y value of the scatter: top-1 accuracy, else top-1 agreement, else cosine with the reference."""
    ev = entry.evaluation
    if ev.accuracy is not None:
        return ev.accuracy.top1, "top-1 accuracy"
    if ev.agreement and ev.agreement[0].top1_agreement is not None:
        return ev.agreement[0].top1_agreement, "top-1 agreement with the reference"
    if ev.agreement:
        return ev.agreement[0].cosine, "cosine similarity with the reference"
    return None, "no quality figure (no labels, no reference)"


def scatter(entries: Sequence[ReportEntry]) -> bytes:
    """Accuracy vs invoke latency (p50, with p90 whiskers); marker area ∝ model size, sizes annotated."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    biggest = max(e.size_bytes for e in entries) or 1
    label = "quality"
    for k, e in enumerate(entries):
        y, label = quality(e)
        if y is None:
            continue
        inv = e.bench.invoke
        color = COLORS[k % len(COLORS)]
        ax.errorbar([inv.p50_ms], [y], xerr=[[0], [max(inv.p90_ms - inv.p50_ms, 0)]], fmt="none", ecolor=color,
                    alpha=0.6, capsize=3)
        ax.scatter([inv.p50_ms], [y], s=60 + 900 * e.size_bytes / biggest, color=color, alpha=0.75,
                   edgecolors="black", linewidths=0.6, label=f"{e.name} ({e.size_bytes / 1e6:.2f} MB)")
        ax.annotate(e.name, (inv.p50_ms, y), textcoords="offset points", xytext=(14, 26 - 13 * k), fontsize=8,
                    arrowprops={"arrowstyle": "-", "alpha": 0.5, "linewidth": 0.6})
    lat = [e.bench.invoke.p50_ms for e in entries]
    if max(lat) / max(min(lat), 1e-9) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("invoke latency p50 (ms; whisker to p90)")
    ys = [q for q in (quality(e)[0] for e in entries) if q is not None]
    if ys and max(ys) - min(ys) < MIN_Y_SPAN:  # do not blow tiny differences up to the full height
        mid = (max(ys) + min(ys)) / 2
        ax.set_ylim(mid - MIN_Y_SPAN, mid + MIN_Y_SPAN)
    ax.set_ylabel(label)
    ax.set_title("accuracy vs latency vs size (marker area ∝ model bytes)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.25)
    ax.legend(fontsize=8, loc="best", markerscale=0.4)
    return _png(fig)


def latency_distribution(entries: Sequence[ReportEntry]) -> bytes:
    """Box plots of every timed run: invoke-only and, where measured, end-to-end."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.75 * len(entries)))
    data, labels, colors = [], [], []
    for k, e in enumerate(entries):
        for kind, stats in (("invoke", e.bench.invoke), ("end-to-end", e.bench.end_to_end)):
            if stats is not None and stats.samples_ms:
                data.append(stats.samples_ms)
                labels.append(f"{e.name} {kind}")
                colors.append(COLORS[k % len(COLORS)])
    if data:
        import matplotlib

        horizontal: dict[str, Any] = ({"orientation": "horizontal"} if _version(matplotlib.__version__) >= (3, 10)
                                      else {"vert": False})
        box = ax.boxplot(data, patch_artist=True, showfliers=True, whis=(1, 99),
                         flierprops={"markersize": 2, "alpha": 0.4}, **horizontal)
        for patch, color, lab in zip(box["boxes"], colors, labels):
            patch.set_facecolor(color)
            patch.set_alpha(0.35 if lab.endswith("end-to-end") else 0.7)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.invert_yaxis()
        hi = max(max(d) for d in data)
        lo = min(min(d) for d in data)
        if hi / max(lo, 1e-9) > 30:
            ax.set_xscale("log")
    ax.set_xlabel("latency per run (ms); box: p25–p75, whiskers: p1–p99")
    ax.set_title("latency distribution per bundle")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def layer_errors(report: QuantDebugReport, *, top: int = 15, title: str = "") -> bytes:
    """Horizontal bars of the worst layers' SNR (lower is worse); layers suggested for float in red."""
    from edgepack.measure.qdebug import short_name

    plt = _pyplot()
    lossy = [la for la in report.layers if math.isfinite(la.snr_db) and la.snr_db < LOSSLESS_DB]
    layers = lossy[:top]
    hidden = len(report.layers) - len(lossy)
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.32 * max(len(layers), 1)))
    names = [f"{short_name(la.name)[-48:]} ({la.op})" for la in layers]
    values = [la.snr_db for la in layers]
    colors = ["#d62728" if la.name in report.suggested_float else "#1f77b4" for la in layers]
    ax.barh(range(len(layers)), values, color=colors, alpha=0.8)
    ax.set_yticks(range(len(layers)), names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(report.min_snr_db, color="black", linestyle="--", linewidth=1,
               label=f"suggested for float below {report.min_snr_db:g} dB")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("local quantization SNR (dB, higher is better)"
                  + (f"; {hidden} lossless op(s) (> {LOSSLESS_DB:g} dB) not shown" if hidden else ""))
    ax.set_title(title or f"per-layer error, worst {len(layers)} ({report.method})", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def auto_candidates(auto: dict[str, Any], *, title: str = "") -> bytes:
    """``--recipe auto`` candidates: accuracy (or 100 − drop) vs p50 latency (or estimated × fp32), marker area ∝
    model bytes; the winner ringed, candidates over a budget hollow."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    rows = [c for c in auto.get("candidates", []) if c.get("bytes")]
    biggest = max((c["bytes"] for c in rows), default=1)
    est = bool(auto.get("estimate"))
    xs = []
    for k, c in enumerate(rows):
        x = c.get("estimated_vs_fp32") if est else c.get("p50_ms")
        y = c.get("accuracy") if c.get("accuracy") is not None else (
            None if c.get("accuracy_drop") is None else 100 - c["accuracy_drop"])
        if x is None or y is None:
            continue
        xs.append(x)
        color = COLORS[k % len(COLORS)]
        won = c.get("status") == "won"
        ax.scatter([x], [y], s=60 + 900 * c["bytes"] / biggest, color=color if won or "budget" not in
                   c.get("reason", "") else "none", edgecolors="black" if not won else "red",
                   linewidths=2.5 if won else 0.8, alpha=0.75, label=f"{c['candidate']} ({c['bytes'] / 1e6:.2f} MB)")
        ax.annotate(c["candidate"] + (" ★" if won else ""), (x, y), textcoords="offset points",
                    xytext=(10, 8), fontsize=7)
    if xs and max(xs) / max(min(xs), 1e-9) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("estimated latency (× fp32, from the target's table)" if est else "latency p50 on the target (ms)")
    ax.set_ylabel("top-1 accuracy" if any(c.get("accuracy") is not None for c in rows) else "100 − accuracy drop")
    ax.set_title(title or f"--recipe auto for {auto.get('target')}: accuracy vs latency vs size (★ chosen)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", markerscale=0.4)
    return _png(fig)
