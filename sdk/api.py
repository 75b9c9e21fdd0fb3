"""Host-side public API: :func:`convert` (``edgepack.convert``), done by :mod:`edgepack.converters.convert`."""

from __future__ import annotations

from edgepack.converters.convert import convert, parse_size
from edgepack.converters.package import ConvertedBundle

__all__ = ["ConvertedBundle", "convert", "parse_size"]
