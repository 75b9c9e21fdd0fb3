"""Helpers shared by the bundle-store tests (tests/test_store*.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}


def sha(path: Path) -> str:
    """sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def slots(directory: Path) -> list[str]:
    """Slot folder names of a store, sorted."""
    return sorted(p.name for p in (directory / "slots").iterdir())
