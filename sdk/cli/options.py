"""Argument types shared by the ``edgepack`` sub-commands."""

from __future__ import annotations

import argparse
from typing import Any


def csv(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` → ``("a", "b", "c")``."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers."""
    try:
        return tuple(int(p) for p in csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers."""
    try:
        return tuple(float(p) for p in csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def size(text: str) -> tuple[int, int]:
    """``"224x224"`` → ``(224, 224)`` (height, width)."""
    try:
        h, w = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 224x224, got {text!r}") from None
    return h, w


def add_preprocessing_args(p: argparse.ArgumentParser, *, title: str = "image pre-processing") -> None:
    """``--input-size --color --resize --layout --scale --mean --std`` (a :class:`Preprocessing` spec)."""
    g = p.add_argument_group(title)
    g.add_argument("--input-size", type=size, help="image models: HxW the images are resized to")
    g.add_argument("--color", choices=("RGB", "BGR", "GRAY"), default=None,
                   help="channel order (default: RGB; convert: GRAY/RGB from a fixed 1/3-channel model input)")
    g.add_argument("--resize", choices=("stretch", "letterbox", "crop"), default="stretch")
    g.add_argument("--layout", choices=("NHWC", "NCHW"), default=None,
                   help="tensor layout (default: NHWC; convert: from a fixed model input)")
    g.add_argument("--scale", type=float, default=1 / 255)
    g.add_argument("--mean", type=floats, default=(0.0,))
    g.add_argument("--std", type=floats, default=(1.0,))


def preprocessing_from(args: argparse.Namespace) -> Any:
    """The :class:`Preprocessing` the options describe, or None without ``--input-size``."""
    if not args.input_size:
        return None
    from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing, ResizeMode

    return Preprocessing(size=args.input_size, resize=ResizeMode(args.resize), color=ColorOrder(args.color or "RGB"),
                         scale=args.scale, mean=args.mean, std=args.std, layout=Layout(args.layout or "NHWC"))


def preprocessing_hint_from(args: argparse.Namespace) -> Any:
    """For ``convert``: the full :class:`Preprocessing` with ``--input-size``, else a ``PreprocessingHint`` (what
    the options fix; size, colour and layout left out are taken from the model's image input)."""
    if args.input_size:
        return preprocessing_from(args)
    from edgepack.converters.preprocessing_guess import PreprocessingHint
    from edgepack.runtimes.manifest import ColorOrder, Layout, ResizeMode

    return PreprocessingHint(color=ColorOrder(args.color) if args.color else None,
                             layout=Layout(args.layout) if args.layout else None, resize=ResizeMode(args.resize),
                             scale=args.scale, mean=args.mean, std=args.std)


def add_runtime_args(p: argparse.ArgumentParser, *, threads: bool = True, purpose: str = "") -> None:
    """``--backend --delegates --threads``: where a bundle runs. The one definition every verb uses.

    Args:
        p: The verb's parser.
        threads: Also add ``--threads`` (``store recover`` runs its self-test without it).
        purpose: What the runtime is for, shown in the group title (``"self-test"``).
    """
    g = p.add_argument_group(f"runtime{f' ({purpose})' if purpose else ''}")
    g.add_argument("--backend", default=None, help="litert, tflite-runtime, onnxruntime, tf-lite (default: by model)")
    g.add_argument("--delegates", type=csv, default=None, help="delegate ladder tried in order, e.g. gpu,xnnpack,cpu")
    if threads:
        g.add_argument("--threads", type=int, default=None, help="interpreter threads (default: the runtime's)")
