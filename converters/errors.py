"""Conversion errors (all derive from :class:`~edgepack.runtimes.errors.EdgepackError`)."""

from __future__ import annotations

from edgepack.runtimes.errors import EdgepackError


class ConversionError(EdgepackError):
    """A model could not be converted with the recipe."""


class SourceModelError(ConversionError):
    """The source model file is missing, of an unsupported kind, or cannot be loaded."""


class CalibrationError(ConversionError):
    """Calibration data is empty, unreadable, or does not fit the model's input."""


class ToleranceError(ConversionError):
    """The converted model differs from the source more than allowed."""
