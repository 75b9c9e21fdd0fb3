"""Third-party output during a command (TensorFlow/absl logs, LiteRT's ``INFO: Created TensorFlow Lite XNNPACK
delegate``, ONNX Runtime's quantizer warnings...): captured by default, shown live with ``edgepack -v``, and shown
after the fact when the command fails.

Native libraries print straight to file descriptor 2, so stderr is captured at the descriptor
(as :func:`edgepack.converters.tfenv.quiet_native_output` does for the converter). edgepack's own warnings
(``warnings.warn`` from edgepack code, ``edgepack.*`` loggers at WARNING and above) still reach the user;
stdout (results, progress bars) is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

from edgepack.runtimes.errors import EdgepackError

#: Captured lines shown when a command fails (the last ones: where it went wrong).
SHOWN_ON_FAILURE = 40


def run_handler(args: argparse.Namespace) -> int:
    """Run the verb's handler; third-party output captured unless ``args.verbose``; returns its exit code.

    When the handler fails unexpectedly (any exception but a user error, or a non-zero exit code) the captured lines
    are written to stderr first (so the caller's ``error: ...`` line stays the last one). A user error
    (:class:`EdgepackError`: bad input, a model that cannot be converted) stays one line that says what to do;
    ``edgepack -v`` shows the third-party output behind it.
    """
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return int(args.handler(args))
    lines: list[str] = []
    ok = False
    try:
        with captured_stderr(lines):
            rc = int(args.handler(args))
        ok = rc == 0
        return rc
    except EdgepackError:
        ok = True  # the one-line error is the whole story
        raise
    finally:
        if not ok and lines:
            shown = lines[-SHOWN_ON_FAILURE:]
            print(f"third-party output while the command ran ({len(shown)} of {len(lines)} lines; "
                  "`edgepack -v ...` shows it as it happens):", file=sys.stderr)
            for line in shown:
                print(f"  {line}", file=sys.stderr)


@contextlib.contextmanager
def captured_stderr(lines: list[str]) -> Iterator[None]:
    """Send fd 2 to a temporary file for the block, then put its non-blank lines in ``lines``.

    edgepack's own warnings (``warnings.warn`` from edgepack code, ``edgepack.*`` loggers at WARNING and above) go
    to the real stderr meanwhile.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a detached process): nothing to capture
        yield
        return
    real = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    ours = logging.StreamHandler(real)
    ours.setLevel(logging.WARNING)
    edgepack_log = logging.getLogger("edgepack")
    show = warnings.showwarning
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        edgepack_log.addHandler(ours)
        warnings.showwarning = _route_warnings(show, real)
        try:
            yield
        finally:
            warnings.showwarning = show
            edgepack_log.removeHandler(ours)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            real.close()
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def _edgepack_roots() -> tuple[str, ...]:
    roots = []
    for name in ("edgepack", "edgepack.converters", "edgepack.runtimes"):
        spec = importlib.util.find_spec(name)
        roots += [os.path.abspath(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return tuple(roots)


def _route_warnings(show: Any, real: TextIO) -> Any:
    """``warnings.showwarning`` that writes edgepack's own warnings to the real stderr, the rest to the capture."""
    roots = _edgepack_roots()

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: TextIO | None = None, line: str | None = None) -> None:
        mine = os.path.abspath(filename).startswith(roots)
        show(message, category, filename, lineno, file=real if mine else file, line=line)

    return showwarning
