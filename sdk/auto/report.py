"""Text views of a bundle's ``report["auto"]``: the candidates table the CLI prints after ``--recipe auto``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def rows(auto: dict[str, Any]) -> list[list[str]]:
    """One row per candidate: name, status, size MB, accuracy, drop, p50/p95 ms (or × fp32), RSS MB, reason."""
    out = []
    for c in auto.get("candidates", []):
        speed = _fmt(c.get("p50_ms"), ".3f") if c.get("p50_ms") is not None else (
            _fmt(c.get("estimated_vs_fp32"), ".2f") + "× est" if c.get("estimated_vs_fp32") is not None else "-")
        out.append([c["candidate"], c["status"], _fmt(c.get("bytes"), ".3f", 1e-6), _fmt(c.get("accuracy"), ".4f"),
                    _fmt(c.get("accuracy_drop"), "+.2f"), speed, _fmt(c.get("p95_ms"), ".3f"),
                    _fmt(c.get("rss_bytes"), ".0f", 1e-6), c.get("reason", "")])
    return out


HEADERS = ["candidate", "status", "MB", "top-1", "drop pt", "p50 ms", "p95 ms", "RSS MB", "why"]


def summary_lines(auto: dict[str, Any]) -> list[str]:
    """The chosen candidate, where it was measured (or that it is an estimate), and the table."""
    table = [HEADERS, *rows(auto)]
    widths = [max(len(r[k]) for r in table) for k in range(len(HEADERS) - 1)]
    lines = [f"auto: chose {auto['chosen']} for {auto['target']}"
             + (" — an ESTIMATE (not measured on the target)" if auto.get("estimate") else "")
             + f"; measured: {auto.get('where', '?')}"]
    for r in table:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    lines += [f"  note: {n}" for n in auto.get("notes", [])]
    return lines


def auto_report_of(path: str | Path) -> dict[str, Any] | None:
    """A bundle's ``report["auto"]`` (made with ``--recipe auto``), None when it was made otherwise."""
    from edgepack.runtimes.bundle import read_bundle

    bundle = read_bundle(path)
    if "report.json" not in bundle.names():
        return None
    try:
        auto = json.loads(bundle.read("report.json")).get("auto")
    except (ValueError, AttributeError):
        return None
    return auto if isinstance(auto, dict) else None
