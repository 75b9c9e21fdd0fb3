"""Refuse a bundle before loading when the installed interpreter lacks an op version it needs.

The manifest records every op and version a ``.tflite`` model uses (``requires.ops``). For
interpreters whose kernels are frozen (tflite-runtime 2.14, the last release), the maximum supported
version of each builtin op is known data; a model needing more fails here with a clear message instead
of deep inside the interpreter.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from .backends.base import Backend
from .errors import ModelLoadError
from .manifest import ModelEntry

#: Backend name → packaged JSON table ``{op name: max builtin version}``.
OP_TABLES = {"tflite-runtime": "tflite_runtime_2_14_ops.json"}


@cache
def max_op_versions(backend: str) -> dict[str, int]:
    """The op-version table of a frozen interpreter, or ``{}`` when it has none."""
    name = OP_TABLES.get(backend)
    if name is None:
        return {}
    resource = resources.files(__package__).joinpath("data", name)
    if not resource.is_file():
        return {}
    text = resource.read_text(encoding="utf-8")
    return {str(k): int(v) for k, v in json.loads(text)["max_versions"].items()}


def unsupported_ops(entry: ModelEntry, backend: str) -> list[str]:
    """``OP vN (max M)`` for every op of ``entry`` that ``backend`` cannot run."""
    if entry.format != "tflite":
        return []
    return unsupported_requirements(entry.requires, backend)


def unsupported_requirements(requires: dict[str, object], backend: str) -> list[str]:
    """``OP vN (max M)`` for every op in a TFLite model's ``requires`` that ``backend`` lacks."""
    table = max_op_versions(backend)
    if not table:
        return []
    needed = requires.get("ops", {})
    if not isinstance(needed, dict):
        return []
    problems = []
    for op, version in sorted(needed.items()):
        have = table.get(op)
        if have is None:
            problems.append(f"{op} v{version} (not available)")
        elif int(version) > have:
            problems.append(f"{op} v{version} (max v{have})")
    return problems


def check_runtime_supports(entry: ModelEntry, backend: Backend) -> None:
    """Raise :class:`ModelLoadError` when ``backend`` cannot run some op version of ``entry``."""
    problems = unsupported_ops(entry, backend.name)
    if problems:
        raise ModelLoadError(
            f"{entry.file} ({entry.precision}) needs op versions that {backend.name} does not have: "
            f"{', '.join(problems)}. Use the litert backend (pip install 'edgepack[litert]'), or convert "
            "with a recipe this runtime supports (fp32 or full int8)."
        )
