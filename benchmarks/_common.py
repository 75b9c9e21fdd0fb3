"""Helpers shared by the benchmark scripts: machine/library versions and JSON output."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from edgepack.runtimes.versions import installed_versions

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARIES = ("edgepack", "numpy", "ai-edge-litert", "tensorflow-cpu", "keras", "onnxruntime", "onnx", "tf2onnx")


def environment() -> dict[str, Any]:
    """Machine and library versions recorded with every result."""
    versions = installed_versions(LIBRARIES)
    return {
        "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "system": platform.platform(), "libraries": versions,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the environment attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2, default=float))
    return path
