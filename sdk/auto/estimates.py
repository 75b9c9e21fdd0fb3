"""The measured table kept per target (``sdk/auto/measured/<target>.json``): what ``--recipe auto`` ranks the
candidates by when the target's latency cannot be measured (another CPU architecture and no ``--device``).

A table row is ``{model, format, precision, vs_fp32, [latency_ms], source}``: latency relative to fp32 in the same
format on that target's runtime, and where the figure came from. A choice made from it is an *estimate*."""

from __future__ import annotations

import json
import statistics
from importlib import resources
from typing import Any

from edgepack.runtimes.errors import ConfigError

from .candidates import Candidate


def table(target_name: str) -> dict[str, Any] | None:
    """The measured table of a target, None when there is none."""
    try:
        text = resources.files("edgepack.auto").joinpath("measured", f"{target_name}.json").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the measured table of {target_name} is not valid JSON ({exc}); reinstall edgepack.") \
            from exc
    return data if isinstance(data, dict) else None


def known_tables() -> list[str]:
    """Targets that have a measured table."""
    folder = resources.files("edgepack.auto").joinpath("measured")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def estimate(cands: list[Candidate], target_name: str) -> list[str]:
    """Fill ``estimated_vs_fp32`` (median over the table's rows of the same format and precision) and the rows'
    sources into the converted candidates; returns notes for the report.

    Raises:
        ConfigError: the target has no table (name the way out: measure on a device).
    """
    data = table(target_name)
    if data is None:
        raise ConfigError(f"target {target_name} is not this machine's CPU architecture and has no measured table "
                          f"(tables: {', '.join(known_tables())}); measure on the device with --device user@host.")
    rows = [r for r in data.get("rows", []) if isinstance(r, dict)]
    for c in cands:
        if c.status != "converted":
            continue
        match = [r for r in rows if r.get("format") == c.format and r.get("precision") == c.recipe.precision.value]
        if not match:
            c.figures["estimated_vs_fp32"] = None
            c.figures["estimate_source"] = f"no {c.format} {c.recipe.precision.value} row in the {target_name} table"
            continue
        c.figures["estimated_vs_fp32"] = float(statistics.median(float(r["vs_fp32"]) for r in match))
        c.figures["estimate_source"] = "; ".join(dict.fromkeys(f"{r.get('model')}: {r.get('source')}" for r in match))
    return [f"estimate: {target_name} latency not measured (no --device, and this machine is not a "
            f"{target_name}); ranked by the measured table sdk/auto/measured/{target_name}.json — "
            f"{data.get('note', '')}".rstrip(" —")]
