"""``edgepack targets | formats``: what ``--target`` and ``--format`` accept, read from the live registries."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from typing import Any

from edgepack.runtimes.target import Target, get_target, registered_targets

TARGET_COLUMNS = ("name", "arch", "cores", "runtimes", "delegates", "precisions", "model", "RAM", "latency")
FORMAT_COLUMNS = ("name", "extension", "description")


def register(sub: Any) -> None:
    """Add the ``targets`` and ``formats`` parsers."""
    t = sub.add_parser("targets", help="list the deployment targets --target accepts")
    t.add_argument("targets", nargs="*", metavar="TARGET",
                   help="show only these: names or target JSON files (default: every registered target)")
    t.add_argument("--json", action="store_true", help="print the targets as a JSON list")
    t.set_defaults(handler=_targets)

    f = sub.add_parser("formats", help="list the output model formats --format accepts")
    f.add_argument("--json", action="store_true", help="print the formats as a JSON list")
    f.set_defaults(handler=_formats)


def _targets(args: argparse.Namespace) -> int:
    chosen = [get_target(t) for t in args.targets] if args.targets else list(registered_targets().values())
    if args.json:
        print(json.dumps([t.to_json() for t in chosen], indent=2))
        return 0
    print_table("targets", TARGET_COLUMNS, [target_row(t) for t in chosen])
    for t in chosen:
        if t.description:
            print(f"  {t.name}: {t.description}")
    print("  --recipe auto gets latency: " + "; ".join(f"{t.name}: {auto_latency_source(t)}" for t in chosen))
    return 0


def target_row(t: Target) -> list[str]:
    """One table row: the target's fields, its budgets in MB / ms (``-``: no limit)."""
    b = t.budgets
    return [t.name, t.arch, str(t.cores), ",".join(t.runtimes), ",".join(t.delegates), ",".join(t.precisions),
            _size(b.model_bytes), _size(b.ram_bytes), "-" if b.latency_ms is None else f"{b.latency_ms:g} ms"]


def auto_latency_source(t: Target) -> str:
    """Where ``--recipe auto`` gets the target's latency: ``here`` (this machine's CPU), else ``--device`` or the
    target's measured table (an estimate)."""
    from edgepack.auto.measure import is_host_target

    if is_host_target(t):
        return "here"
    from importlib import resources

    has_table = resources.files("edgepack.auto").joinpath("measured", f"{t.name}.json").is_file()
    return "--device or its table (estimate)" if has_table else "--device"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:g} GB" if n >= 1e9 else f"{n / 1e6:g} MB"


def _formats(args: argparse.Namespace) -> int:
    from edgepack.converters.formats import registered_formats  # loads the format plug-ins: only here

    formats = registered_formats()
    rows = [[name, f".{cls.extension}", cls.description] for name, cls in formats.items()]
    if args.json:
        print(json.dumps([dict(zip(FORMAT_COLUMNS, row)) for row in rows], indent=2))
    else:
        print_table("formats", FORMAT_COLUMNS, rows)
    return 0


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal (when rich is installed), plain aligned columns otherwise (pipes, files)."""
    if sys.stdout.isatty() and importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(*headers, title=title)
        for row in rows:
            table.add_row(*(escape(str(c)) for c in row))
        Console().print(table)
        return
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for row in (headers, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
