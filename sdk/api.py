"""Host-side public API: :func:`convert` (``edgepack.convert``), done by :mod:`edgepack.converters.convert`, or by
:mod:`edgepack.auto` for ``recipe="auto"``."""

from __future__ import annotations

from typing import Any

from edgepack.converters.convert import convert as _convert
from edgepack.converters.convert import parse_size
from edgepack.converters.package import ConvertedBundle
from edgepack.runtimes.errors import ConfigError

__all__ = ["ConvertedBundle", "convert", "parse_size"]

_AUTO_ONLY = ("max_accuracy_drop", "max_latency", "max_ram", "eval_data", "device")


def convert(model: Any, calibration: Any = None, *, recipe: Any = "fp32", max_accuracy_drop: float | str | None = None,
            max_latency: float | str | None = None, max_ram: int | str | None = None, eval_data: Any = None,
            device: Any = None, threads: int | None = 1, **kwargs: Any) -> ConvertedBundle:
    """Convert a trained model into a validated bundle for ``target`` (see
    :func:`edgepack.converters.convert.convert` for every other argument).

    ``recipe="auto"`` converts every recipe the target allows (both formats where it has both runtimes), measures
    each on the target's runtime — here for a target of this machine's CPU, on ``device`` (``"user@host"``, over
    ssh) otherwise, or, with neither, ranks them by the target's measured table and labels the choice an estimate —
    and returns the fastest that meets every budget; ``bundle.report["auto"]`` lists every candidate.

    Args:
        max_accuracy_drop: points of top-1 accuracy on ``eval_data`` the bundle may lose vs the source (``1.0``);
            on unlabeled data, points of top-1 disagreement with the source.
        max_latency: p50 latency on the target (``"30ms"``, ``"0.03s"``, ``30``).
        max_ram: peak RSS of a process that loads and runs the bundle (``"200MB"``).
        eval_data: data for the accuracy budget (``"fashion-mnist:test"``, a folder, ``.npz``, ``(x, y)``, ``x``).
        device: ``"user@host"`` or a :class:`edgepack.auto.measure.Device` to measure on.
        threads: interpreter threads while measuring (None: the target's cores).

    Raises:
        ConfigError: an auto-only option without ``recipe="auto"``; see also the two functions named above.
    """
    if isinstance(recipe, str) and recipe.strip().lower() == "auto":
        from edgepack.auto.choose import auto_convert

        return auto_convert(model, calibration, max_accuracy_drop=max_accuracy_drop, max_latency=max_latency,
                            max_ram=max_ram, eval_data=eval_data, device=device, threads=threads, **kwargs)
    given = dict(zip(_AUTO_ONLY, (max_accuracy_drop, max_latency, max_ram, eval_data, device)))
    extra = [k for k, v in given.items() if v is not None]
    if extra:
        raise ConfigError(f"{', '.join(extra)} apply to recipe='auto' (the measured choice); pass recipe='auto' or "
                          "drop them.")
    return _convert(model, calibration, recipe=recipe, **kwargs)
