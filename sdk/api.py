"""Host-side public API: :func:`convert` (the work is done by :mod:`edgepack.converters.convert`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgepack.converters.calibration import Calibration
from edgepack.converters.convert import convert as _convert_impl
from edgepack.converters.convert import parse_size
from edgepack.converters.package import ConvertedBundle
from edgepack.converters.validate import Thresholds
from edgepack.runtimes.manifest import Postprocessing, Preprocessing
from edgepack.runtimes.recipe import Recipe
from edgepack.runtimes.target import Target

__all__ = ["ConvertedBundle", "convert", "parse_size"]


def convert(
    model: Any,
    calibration: Calibration | None = None,
    *,
    target: str | Path | Target = "x86",
    recipe: str | Recipe | Sequence[str | Recipe] = "fp32",
    format: str | None = None,
    example_input: Any = None,
    name: str | None = None,
    labels: Sequence[str] | str | Path | None = None,
    preprocessing: Preprocessing | None = None,
    postprocessing: Postprocessing | None = None,
    max_size: int | str | None = None,
    thresholds: Thresholds | None = None,
    progress: bool = True,
) -> ConvertedBundle:
    """Convert a trained model into a validated bundle for ``target``.

    Args:
        model: ``.keras``/``.h5`` path, SavedModel directory, ``keras.Model``, an existing ``.tflite``, an
            ``.onnx`` file or a ``torch.nn.Module`` (ONNX recipes).
        calibration: representative data (numpy array, :class:`ImageFolder`, iterable); part of it is
            held back to validate the converted model against the source.
        target: device class (``rpi4``, ``rpi5``, ``android-phone``, ``arm64-board``, ``jetson``, ``x86``, any
            registered one) or a target JSON file.
        recipe: ``fp32``, ``fp16``, ``dynamic-int8``, ``full-int8``, ``int16x8``, ONNX ``qdq-int8``... or a
            :class:`Recipe`; a list makes one bundle holding every variant (e.g. ``.tflite`` + ``.onnx``).
        format: ``tflite``, ``onnx`` (or a registered format): maps a recipe name to that format
            (``full-int8`` → ``qdq-int8``); default: the source's own format (``.onnx``, torch) else ``tflite``.
        example_input: PyTorch sources only: an example input for ``torch.onnx.export``.
        labels: class names (list or labels file).
        preprocessing: how images become input tensors (saved in the bundle; used for calibration images).
        postprocessing: how outputs become results (default: classification top-5 when labels are given).
        max_size: fail when the model file is larger (``"4MB"``); the target's budget applies otherwise.
        thresholds: minimum cosine / top-1 agreement with the source (defaults by precision).
        progress: show progress bars.

    Raises:
        SourceModelError, CalibrationError, ConversionError, ToleranceError, ConfigError.
    """
    return _convert_impl(
        model, calibration, target=target, recipe=recipe, format=format, example_input=example_input, name=name,
        labels=labels, preprocessing=preprocessing, postprocessing=postprocessing, max_size=max_size,
        thresholds=thresholds, progress=progress,
    )
