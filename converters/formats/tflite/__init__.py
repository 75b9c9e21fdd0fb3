"""TFLite output format (LiteRT): source, export, inspect, pipeline."""

from edgepack.converters.formats.tflite.pipeline import TFLiteFormat

__all__ = ["TFLiteFormat"]
