"""edgepack.converters — host-side conversion: source models → validated TFLite / ONNX models.

Modules import TensorFlow only when a conversion needs it.
"""

from .errors import CalibrationError, ConversionError, SourceModelError, ToleranceError

__all__ = ["CalibrationError", "ConversionError", "SourceModelError", "ToleranceError"]
