"""Installed versions of named distributions (stdlib only), recorded with bundles and benchmark results."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

#: The edgepack version (one place; ``edgepack.__version__`` and every manifest read it).
EDGEPACK_VERSION = "0.1.0"


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` for each of ``names`` that is installed here; absent ones are left out."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
