"""The ``edgepack`` command: :func:`main` assembles one module per verb group, each with ``register(subparsers)``.

User errors (:class:`~edgepack.runtimes.errors.EdgepackError`) print one line (``error: ...``) and exit 2 —
never a traceback. A host-only library missing on a device install (TensorFlow, onnx, torch, pytest, ...) is
one line naming the pip extra that brings it (``EXTRA_FOR_MODULE`` in ``runtimes/errors.py``), exit 2.
Verb modules import their heavy dependencies inside their handlers. When the reader of our output goes away
(``edgepack inspect b.epk | head``) the command stops quietly with exit code 141 (128 + SIGPIPE, what a shell
reports for a program killed by the broken pipe), no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from edgepack.cli.quiet import run_handler
from edgepack.runtimes.errors import EXTRA_FOR_MODULE, EdgepackError, MissingDependencyError
from edgepack.runtimes.versions import EDGEPACK_VERSION

EXIT_USER_ERROR = 2
#: Exit code when stdout's reader closed the pipe (128 + SIGPIPE), as if killed by the signal.
EXIT_BROKEN_PIPE = 141

#: The verb-group modules (``edgepack.cli.<name>``), in help order. Each ``register(subparsers)`` adds its parsers
#: and sets ``handler=`` (a function taking the parsed args and returning the exit code).
VERB_GROUPS = ("convert", "prune", "bundle", "keys", "device", "store", "measure", "listing")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb (also used by the docs)."""
    p = argparse.ArgumentParser(prog="edgepack", description="Package models for edge devices and run them.")
    p.add_argument("--version", action="version", version=f"edgepack {EDGEPACK_VERSION}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show third-party logs (TensorFlow, LiteRT, ONNX Runtime) as they happen; by default they are "
                        "captured and shown only when a command fails")
    sub = p.add_subparsers(dest="command", required=True)
    for name in VERB_GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgepack`` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        try:
            return run_handler(args)  # third-party output captured unless -v (cli/quiet.py)
        except ModuleNotFoundError as exc:
            missing = _missing(exc, args.command)
            if missing is None:
                raise
            raise missing from exc
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except EdgepackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Python would print a traceback flushing stdout at exit: point it at devnull instead (the recipe in
        # the `signal` docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _missing(exc: ModuleNotFoundError, command: str) -> MissingDependencyError | None:
    """A missing optional library as a MissingDependencyError naming its extra; None for any other module."""
    root = (exc.name or "").split(".")[0]
    if root not in EXTRA_FOR_MODULE:
        return None
    return MissingDependencyError.for_module(root, purpose=f"`edgepack {command}`")
