"""``edgepack prune``: remove channels or zero weights, fine-tune, measure against the unpruned model, and write the
pruned model (same format as the source) only when it pays — or with ``--force``, marked as rejected."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgepack.runtimes.errors import ConfigError

#: Exit code when the prune was measured and does not pay (the report says why; nothing written without --force).
EXIT_REJECTED = 3


def register(sub: Any) -> None:
    """Add the ``prune`` parser."""
    p = sub.add_parser("prune", help="prune a model (channels or sparsity), fine-tune it, keep it only if it pays")
    p.add_argument("model", help=".keras/.h5 file (channels and sparsity) or .onnx file (sparsity, one-shot)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--channels", type=float, metavar="R", help="fraction of channels to remove, e.g. 0.5")
    what.add_argument("--sparsity", type=float, metavar="R", help="fraction of weights to set to zero, e.g. 0.5")
    p.add_argument("--data", help="fine-tuning data: fashion-mnist:train, a folder of class folders, .npz (x, y) — "
                                  "labels train; unlabelled images/arrays (.npy, a plain image folder) distil from "
                                  "the unpruned model")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (default 2; 0: none)")
    p.add_argument("--importance", choices=("l1", "l2", "activation"), default="l1",
                   help="how channels are ranked: weight norm, or mean activation measured on --data")
    p.add_argument("--round-to", type=int, default=None, metavar="N",
                   help="channel counts become multiples of N (default: the target's channel_multiple)")
    p.add_argument("--target", default="x86", help="target whose runtime measures the latency (default x86)")
    p.add_argument("--recipe", default=None,
                   help="recipe both models are converted with for measuring (default: full-int8 with --data)")
    p.add_argument("--eval-data", default=None,
                   help="accuracy data (default: the last 10%% of --data, held out of fine-tuning)")
    p.add_argument("--max-accuracy-drop", type=float, default=None, metavar="PT",
                   help="reject the prune when accuracy drops more than PT points")
    p.add_argument("--limit", type=int, default=None, help="use at most N samples of --data")
    p.add_argument("--protect", default="", help="comma list of layer names never pruned (outputs always are)")
    p.add_argument("--force", action="store_true", help="write the pruned model even when it does not pay")
    p.add_argument("-o", "--output", required=True, help="pruned model path (.keras for Keras, .onnx for ONNX)")
    p.set_defaults(handler=_prune)


def _prune(args: argparse.Namespace) -> int:
    from edgepack.cli.convert import check_output
    from edgepack.pruning import prune

    out = Path(args.output)
    check_output(out)
    want = ".onnx" if str(args.model).lower().endswith(".onnx") else ".keras"
    if out.suffix.lower() != want:
        raise ConfigError(f"-o {out}: a pruned {Path(args.model).suffix} model is written as {want}; "
                          f"pass e.g. {out.with_suffix(want).name}.")
    if args.data is None and args.epochs and not str(args.model).lower().endswith(".onnx"):
        raise ConfigError("--data is needed to fine-tune (labelled data trains, unlabelled data distils); "
                          "or pass --epochs 0 to prune without fine-tuning.")
    data = _data(args.data)
    result = prune(args.model, data, channels=args.channels, sparsity=args.sparsity, epochs=args.epochs,
                   importance=args.importance, round_to=args.round_to, target=args.target, recipe=args.recipe,
                   eval_data=args.eval_data, max_accuracy_drop=args.max_accuracy_drop, limit=args.limit,
                   protect=tuple(x for x in args.protect.split(",") if x))
    print(result.summary())
    report_path = out.with_name(f"{out.stem}.prune.json")
    if not result.accepted and not args.force:
        from edgepack.runtimes.fileio import atomic_write_text

        atomic_write_text(report_path, json.dumps(result.report, indent=2, default=str))
        print(f"not written: the prune does not pay ({'; '.join(result.reasons)}); report in {report_path}; "
              "--force writes it anyway")
        return EXIT_REJECTED
    result.save(out)
    print(f"wrote {out} and {report_path}")
    return 0


def _data(spec: str | None) -> Any:
    """``--data``: what :func:`edgepack.measure.data.open_data` reads, or a plain image folder (unlabelled)."""
    if spec is None:
        return None
    path = Path(spec)
    if path.is_dir() and not any(p.is_dir() for p in path.iterdir()):
        from edgepack.runtimes.images import list_images, read_image

        files = list_images(path)
        if not files:
            raise ConfigError(f"--data {path} holds no images.")
        return _UnlabelledImages(path.name, [read_image(f) for f in files])
    return spec


class _UnlabelledImages:
    """A plain folder of images (no class folders): samples without labels, so pruning distils."""

    def __init__(self, name: str, images: list[Any]) -> None:
        from edgepack.runtimes.manifest import ColorOrder

        self.name, self._images, self.color = name, images, ColorOrder.BGR

    @property
    def classes(self) -> None:
        """No class names: the folder is unlabelled."""
        return None

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Any:
        return ((image, None) for image in self._images)
