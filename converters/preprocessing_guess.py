"""Pre-processing taken from the model: with image calibration data and no full spec from the user, an image input's
size, channels (1 → GRAY, 3 → RGB) and layout (NHWC / NCHW) come from the model's fixed input shape.

Normalisation (``scale``, ``mean``, ``std``; default 0..1) always stays the user's: a shape says nothing about it.
An explicit :class:`~edgepack.runtimes.manifest.Preprocessing` always wins; nothing is guessed for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing, ResizeMode

from .calibration import ImageFolder
from .errors import CalibrationError

log = logging.getLogger("edgepack.converters")

#: Channels of an image input → the colour order assumed for it.
_COLORS = {1: ColorOrder.GRAY, 3: ColorOrder.RGB}
#: How the flags that fix each part are named (CLI / API).
_FLAGS = "--input-size HxW, --color, --layout (API: preprocessing=Preprocessing(size=..., color=..., layout=...))"


@dataclass(frozen=True)
class PreprocessingHint:
    """A partial pre-processing spec: the parts left ``None`` are taken from the model's image input.

    ``edgepack convert`` passes one when ``--input-size`` is not given; ``convert(preprocessing=...)`` takes it too.
    """

    size: tuple[int, int] | None = None
    color: ColorOrder | None = None
    layout: Layout | None = None
    resize: ResizeMode = ResizeMode.STRETCH
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


def image_input(shape: Sequence[int]) -> tuple[tuple[int, int] | None, ColorOrder, Layout] | None:
    """``(size or None when dynamic, colour, layout)`` of a rank-4 input with 1 or 3 channels; None otherwise
    (and when both layouts would fit, e.g. ``1x3x3x3``)."""
    if len(shape) != 4:
        return None
    _, a, b, c = (int(d) for d in shape)
    nhwc, nchw = c in _COLORS, a in _COLORS
    if nhwc == nchw:  # neither, or both (ambiguous)
        return None
    h, w, ch, layout = (a, b, c, Layout.NHWC) if nhwc else (b, c, a, Layout.NCHW)
    return ((h, w) if h > 0 and w > 0 else None), _COLORS[ch], layout


def resolve_preprocessing(shapes: Sequence[Sequence[int]], dtypes: Sequence[str],
                          preprocessing: Preprocessing | PreprocessingHint | None, calibration: Any
                          ) -> tuple[Preprocessing | None, str | None]:
    """The spec to use for a model with these inputs, and one line saying what was taken from the model (or None).

    An explicit :class:`Preprocessing` is returned as it is. Otherwise, for image calibration data
    (:class:`ImageFolder`) and a model with one float image input, the missing parts come from the input's shape.

    Raises:
        CalibrationError: calibration images, but the model's input does not say a part the user left out.
    """
    if isinstance(preprocessing, Preprocessing) or not isinstance(calibration, ImageFolder):
        return preprocessing if isinstance(preprocessing, Preprocessing) else None, None
    hint = preprocessing or PreprocessingHint()
    found = image_input(shapes[0]) if len(shapes) == 1 and np.dtype(dtypes[0]).kind == "f" else None
    shape = "x".join(str(d) for d in shapes[0]) if len(shapes) == 1 else f"{len(shapes)} inputs"
    if found is None and None in (hint.size, hint.color, hint.layout):
        raise CalibrationError(f"calibration images need a pre-processing spec, and the model's input ({shape}) is not "
                               f"one image input to take it from (N,H,W,C or N,C,H,W with 1 or 3 channels); pass "
                               f"{_FLAGS}.")
    size, color, layout = found or (None, None, None)
    if color is not None and hint.color is not None and (hint.color is ColorOrder.GRAY) != (color is ColorOrder.GRAY):
        gray = color is ColorOrder.GRAY
        raise CalibrationError(f"--color {hint.color.value} does not match the model's input ({shape}), which takes "
                               f"{'1 channel' if gray else '3 channels'}; use --color "
                               f"{'GRAY' if gray else 'RGB or BGR'} (API: PreprocessingHint(color=...)).")
    size = hint.size or size
    if size is None:
        raise CalibrationError(f"the model's image input ({shape}) has no fixed size to resize calibration images to; "
                               "pass --input-size HxW (API: preprocessing=Preprocessing(size=(h, w), ...)).")
    taken = [part for part, given in (("size", hint.size), ("color", hint.color), ("layout", hint.layout))
             if given is None]
    spec = Preprocessing(size=size, resize=hint.resize, color=hint.color or color or ColorOrder.RGB,
                         scale=hint.scale, mean=hint.mean, std=hint.std, layout=hint.layout or layout or Layout.NHWC)
    if not taken:
        return spec, None
    note = (f"pre-processing from the model's input {shape}: {spec.size[0]}x{spec.size[1]} {spec.color.value} "
            f"{spec.layout.value} ({', '.join(taken)} assumed; set --input-size/--color/--layout to change), "
            f"scale {spec.scale:.6g} mean {list(spec.mean)} std {list(spec.std)}")
    log.info("%s", note)
    return spec, note
