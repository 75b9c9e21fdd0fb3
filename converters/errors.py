"""Conversion errors (all derive from :class:`~edgepack.runtimes.errors.EdgepackError`)."""

from __future__ import annotations

from edgepack.runtimes.errors import EdgepackError, UnsupportedOperatorError, UnsupportedOpsetError


class ConversionError(EdgepackError):
    """A model could not be converted with the recipe."""


class SourceModelError(ConversionError):
    """The source model file is missing, of an unsupported kind, or cannot be loaded."""


class CalibrationError(ConversionError):
    """Calibration data is empty, unreadable, or does not fit the model's input."""


class ToleranceError(ConversionError):
    """The converted model differs from the source more than allowed."""


class OnnxModelError(SourceModelError):
    """An ONNX source is not an ONNX protobuf, is invalid, or its external-data files are missing."""


class OnnxOpsetError(OnnxModelError, UnsupportedOpsetError):
    """The ONNX source needs an opset newer than the installed ONNX Runtime supports."""


class OnnxOperatorError(OnnxModelError, UnsupportedOperatorError):
    """The ONNX source uses an operator (e.g. a custom domain) that the installed ONNX Runtime lacks."""


class ExportError(SourceModelError):
    """A framework model (PyTorch, Keras/SavedModel) could not be exported to ONNX."""


class PruningError(ConversionError):
    """A model cannot be pruned as asked (nothing prunable, a layer whose channel groups cannot be resolved,
    fine-tuning data that does not fit)."""
