"""Budgets of ``--recipe auto``: size, accuracy drop, latency and peak RAM, parsed from what people write."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgepack.converters.convert import parse_size
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.target import Target

_LATENCY_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*([a-zµ%]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class AutoBudgets:
    """What a candidate must meet to win (``None``: no limit); ``origin`` says where each limit came from."""

    max_size_bytes: int | None = None
    max_accuracy_drop: float | None = None  # percentage points (1.0 = one point of top-1)
    max_latency_ms: float | None = None  # p50 on the target's runtime
    max_ram_bytes: int | None = None  # peak RSS of a fresh process that loads and runs the bundle
    origin: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (for the bundle report)."""
        return {"max_size_bytes": self.max_size_bytes, "max_accuracy_drop_points": self.max_accuracy_drop,
                "max_latency_ms": self.max_latency_ms, "max_ram_bytes": self.max_ram_bytes,
                "origin": dict(self.origin)}


def parse_bytes(value: int | str, *, flag: str) -> int:
    """``4MB``, ``4 MiB``, ``512KB``, ``4000000`` (bytes) → bytes.

    Raises:
        ConfigError: anything else (``four``), or a limit that is not positive.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{flag}: {value!r} is not a size; write e.g. 4MB, 4 MiB or 4000000 (bytes).")
    if isinstance(value, (int, float)):
        n = int(value)
    elif value.strip().isdigit():
        n = int(value.strip())
    else:
        try:
            n = parse_size(value)
        except ConfigError:
            raise ConfigError(f"{flag}: cannot read {value!r} as a size; write e.g. 4MB, 4 MiB, 512KB or 4000000 "
                              "(bytes).") from None
    if n <= 0:
        raise ConfigError(f"{flag}: {value!r} is not a positive size; write e.g. 4MB.")
    return n


def parse_latency_ms(value: float | int | str, *, flag: str = "max_latency") -> float:
    """``30ms``, ``0.03s``, ``500us`` or a bare number (milliseconds) → milliseconds.

    Raises:
        ConfigError: anything else, or a limit that is not positive.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{flag}: {value!r} is not a latency; write e.g. 30ms, 0.03s or 30 (milliseconds).")
    if isinstance(value, (int, float)):
        ms = float(value)
    else:
        m = _NUMBER.match(value)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in ("", *_LATENCY_UNITS):
            raise ConfigError(f"{flag}: cannot read {value!r} as a latency; write e.g. 30ms, 0.03s or 30 "
                              "(milliseconds).")
        ms = float(m.group(1)) * _LATENCY_UNITS.get(unit, 1.0)
    if not ms > 0 or ms == float("inf"):
        raise ConfigError(f"{flag}: {value!r} is not a positive latency; write e.g. 30ms.")
    return ms


def parse_accuracy_drop(value: float | int | str, *, flag: str = "max_accuracy_drop") -> float:
    """Accuracy points: ``1.0``, ``1``, ``0.5pt``, ``1%`` (points of top-1, not a fraction of it) → points.

    Raises:
        ConfigError: anything else, or a negative number.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{flag}: {value!r} is not a number of points; write e.g. 1.0 (one point of top-1).")
    if isinstance(value, (int, float)):
        pts = float(value)
    else:
        m = _NUMBER.match(value)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in ("", "%", "pt", "pts", "points", "pp"):
            raise ConfigError(f"{flag}: cannot read {value!r} as accuracy points; write e.g. 1.0 (one point of "
                              "top-1 accuracy, 90.0 % → 89.0 %).")
        pts = float(m.group(1))
    if not 0 <= pts <= 100:
        raise ConfigError(f"{flag}: {value!r} must be between 0 and 100 points; write e.g. 1.0.")
    return pts


def make_budgets(target: Target, *, max_size: int | str | None = None,
                 max_accuracy_drop: float | str | None = None, max_latency: float | str | None = None,
                 max_ram: int | str | None = None, use_target_runtime_budgets: bool = True) -> AutoBudgets:
    """The budgets in force: what was given, else the target's own (size always; latency and RAM only when they can
    be measured on the target, ``use_target_runtime_budgets``).

    Raises:
        ConfigError: a budget that cannot be read.
    """
    origin: list[tuple[str, str]] = []

    def pick(given: Any, parsed: Any, own: Any, key: str, use_own: bool = True) -> Any:
        if given is not None:
            origin.append((key, "given"))
            return parsed
        if own is not None and use_own:
            origin.append((key, f"target {target.name}"))
            return own
        return None

    b = target.budgets
    size = pick(max_size, None if max_size is None else parse_bytes(max_size, flag="max_size"), b.model_bytes,
                "max_size_bytes")
    drop = pick(max_accuracy_drop, None if max_accuracy_drop is None else parse_accuracy_drop(max_accuracy_drop),
                None, "max_accuracy_drop_points")
    lat = pick(max_latency, None if max_latency is None else parse_latency_ms(max_latency), b.latency_ms,
               "max_latency_ms", use_target_runtime_budgets)
    ram = pick(max_ram, None if max_ram is None else parse_bytes(max_ram, flag="max_ram"), b.ram_bytes,
               "max_ram_bytes", use_target_runtime_budgets)
    return AutoBudgets(max_size_bytes=size, max_accuracy_drop=drop, max_latency_ms=lat, max_ram_bytes=ram,
                       origin=tuple(origin))
