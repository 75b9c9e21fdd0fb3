"""Import TensorFlow quietly (host side only)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

from edgepack.runtimes.errors import MissingDependencyError


def import_tensorflow() -> ModuleType:
    """Import TensorFlow with its log noise turned down (DESIGN.md §6).

    Raises:
        MissingDependencyError: TensorFlow is not installed (a device install); names ``edgepack[convert]``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "tensorflow":
            raise
        raise MissingDependencyError.for_module("tensorflow", purpose="converting or reading Keras/TF models") from exc

    tf.get_logger().setLevel("ERROR")
    return tf


@contextlib.contextmanager
def quiet_native_output() -> Iterator[list[str]]:
    """Capture what native code prints to fd 1/2 (the converter's MLIR logs); yields the captured lines.

    The lines are available after the block, so a failure can quote the converter's own reason.
    """
    captured: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.extend(sink.read().decode("utf-8", "replace").splitlines())
