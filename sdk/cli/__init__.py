"""The ``edgepack`` command: :func:`main` assembles one module per verb group, each with ``register(subparsers)``.

User errors (:class:`~edgepack.runtimes.errors.EdgepackError`) print one line (``error: ...``) and exit 2 —
never a traceback. Verb modules import their heavy dependencies inside their handlers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edgepack.runtimes.errors import EdgepackError

EXIT_USER_ERROR = 2

#: The verb-group modules (``edgepack.cli.<name>``), in help order. Each ``register(subparsers)`` adds its parsers
#: and sets ``handler=`` (a function taking the parsed args and returning the exit code).
VERB_GROUPS = ("convert", "bundle", "device", "store", "measure", "listing")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb (also used by the docs)."""
    p = argparse.ArgumentParser(prog="edgepack", description="Package models for edge devices and run them.")
    sub = p.add_subparsers(dest="command", required=True)
    for name in VERB_GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgepack`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except EdgepackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
