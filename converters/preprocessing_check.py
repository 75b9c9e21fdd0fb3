"""Check a pre-processing spec against the model's input before anything is converted or written (issue 11, item 4).

A spec that cannot feed the model (size 0, a mean/std per channel of the wrong length, GRAY for a 3-channel input,
NHWC for an NCHW input, 32x32 for a fixed 28x28 input) would pass ``verify`` and the store's self-test — the golden
data skips pre-processing — and fail on the first image. :mod:`.preprocessing_guess` fills in what the user left out;
this module only validates the finished :class:`Preprocessing`.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing

#: Channels each colour order produces.
_CHANNELS = {ColorOrder.GRAY: 1, ColorOrder.RGB: 3, ColorOrder.BGR: 3}


def check_preprocessing(spec: Preprocessing, shapes: Sequence[Sequence[int]]) -> None:
    """Refuse a spec whose images cannot be the model's input.

    Checked on any model: a positive size, and ``mean``/``std`` of length 1 or the colour's channel count. With one
    rank-4 input (``-1`` = dynamic), also: the channel axis that ``layout`` names holds the colour's channel count,
    and fixed height/width equal ``size``. Models with several inputs get the first two checks only.

    Raises:
        ConfigError: naming the flag (and API field) to change.
    """
    h, w = spec.size
    if h <= 0 or w <= 0:
        raise ConfigError(f"--input-size {h}x{w}: height and width must be positive (API: Preprocessing(size=(h, w))).")
    channels = _CHANNELS[spec.color]
    for flag, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) not in (1, channels):
            raise ConfigError(f"--{flag} has {len(values)} values but --color {spec.color.value} gives {channels} "
                              f"channel(s); give 1 value or {channels} (API: Preprocessing({flag}=...)).")
    if len(shapes) != 1 or len(shapes[0]) != 4:
        return
    shape = [int(d) for d in shapes[0]]
    text = "x".join(str(d) for d in shape)
    nhwc = spec.layout is Layout.NHWC
    got, (mh, mw) = (shape[3], shape[1:3]) if nhwc else (shape[1], shape[2:4])
    other = shape[1] if nhwc else shape[3]
    if got > 0 and got != channels:
        if other == channels:
            flip = "NCHW" if nhwc else "NHWC"
            raise ConfigError(f"--layout {spec.layout.value} does not match the model's input ({text}), which is "
                              f"{flip}; pass --layout {flip} (API: Preprocessing(layout=...)).")
        want = "GRAY" if got == 1 else "RGB or BGR" if got == 3 else None
        fix = f"use --color {want}" if want else "this input does not take GRAY/RGB/BGR images"
        raise ConfigError(f"--color {spec.color.value} gives {channels} channel(s) but the model's input ({text}, "
                          f"{spec.layout.value}) takes {got}; {fix} (API: Preprocessing(color=...)).")
    if (mh > 0 and mh != h) or (mw > 0 and mw != w):
        raise ConfigError(f"--input-size {h}x{w} does not match the model's fixed input ({text}); pass --input-size "
                          f"{mh if mh > 0 else h}x{mw if mw > 0 else w} (API: Preprocessing(size=...)).")
