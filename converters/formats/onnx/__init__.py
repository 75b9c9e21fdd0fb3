"""ONNX output format (ONNX Runtime): source (+ from_torch, from_keras), prepare, quantize, inspect, pipeline."""

from edgepack.converters.formats.onnx.pipeline import OnnxFormat

__all__ = ["OnnxFormat"]
