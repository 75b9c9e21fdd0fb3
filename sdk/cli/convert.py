"""``edgepack convert``: a model in, a verified ``.epk`` bundle out (TensorFlow is imported only when it runs)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.cli import options as cli_args
from edgepack.runtimes.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from edgepack.runtimes.recipe import Recipe

#: Options that only ONNX recipes understand (with several recipes they go to the ONNX ones).
ONNX_ONLY = ("--calibration-method", "--float-first-layers")


def register(sub: Any) -> None:
    """Add the ``convert`` parser."""
    c = sub.add_parser("convert", help="convert a model into a verified .epk bundle")
    c.add_argument("model", help=".keras/.h5 file, SavedModel dir, .tflite or .onnx")
    c.add_argument("-o", "--output", help="bundle path (default: <model name>.epk)")
    c.add_argument("--target", default="x86",
                   help="a target name (see `edgepack targets`: rpi4, rpi5, x86, ...) or a target JSON file")
    c.add_argument("--recipe", default="fp32",
                   help="fp32, fp16, dynamic-int8, full-int8, int16x8, qdq-int8, ...; a comma list makes one "
                        "bundle with every variant (e.g. full-int8,qdq-int8: .tflite + .onnx); auto: measure every "
                        "candidate the target allows and keep the fastest within the budgets (docs/auto.md)")
    c.add_argument("--format", default=None,
                   help="output model format (tflite, onnx, or a registered one: `edgepack formats`); applies to every "
                        "recipe of the list (full-int8 → qdq-int8 for onnx)")
    c.add_argument("--io-dtype", choices=("float32", "int8", "uint8"), default=None, help="full-int8 I/O dtype")
    c.add_argument("--calibration",
                   help="image folder, .npy array of samples (one-input models) or .npz with one array per input "
                        "name (first axis = sample index)")
    c.add_argument("--input-shape", action="append", default=None, metavar="NAME=1x3x320x320",
                   help="shape of an input with dynamic dimensions, for the golden data made without samples "
                        "(repeatable, one per input)")
    c.add_argument("--limit", type=int, default=None, help="number of calibration samples")
    c.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default=None,
                   help="ONNX QDQ: how activation ranges are estimated (default minmax)")
    c.add_argument("--exclude", type=cli_args.csv, default=None,
                   help="int8 (ONNX int8, TFLite full-int8): layers kept in float (names as `edgepack qdebug` "
                        "prints them)")
    c.add_argument("--float-first-layers", type=int, default=None, metavar="N",
                   help="ONNX int8: keep the first N weighted layers (Conv/Gemm/MatMul) in float")
    c.add_argument("--labels", help="labels file, one class a line")
    c.add_argument("--postprocess", default=None, metavar="PRESET|SPEC.json",
                   help="output post-processing: a preset (blazeface-short) or a JSON file holding a manifest "
                        "`postprocessing` object (kind, score_threshold, nms_iou, ssd/yolo/mask decoders)")
    cli_args.add_preprocessing_args(c)
    c.add_argument("--max-size", help="fail when the model is larger, e.g. 4MB")
    c.add_argument("--prune", default=None, metavar="channels=0.5|sparsity=0.5[,epochs=2,...]",
                   help="prune before quantizing, distilled from the unpruned model on the calibration data "
                        "(keys: channels, sparsity, importance, round_to, epochs, global_sparsity)")
    c.add_argument("--name", help="bundle name")
    add_auto_args(c)
    c.set_defaults(handler=_convert)


def add_auto_args(c: argparse.ArgumentParser) -> None:
    """The flags of ``--recipe auto`` (docs/auto.md): budgets, evaluation data, where to measure."""
    g = c.add_argument_group("--recipe auto (measure every candidate, keep the fastest within the budgets)")
    g.add_argument("--max-accuracy-drop", metavar="PT", help="top-1 points to lose at most on --eval-data, e.g. 1.0")
    g.add_argument("--max-latency", help="p50 latency on the target, e.g. 30ms, 0.03s")
    g.add_argument("--max-ram", help="peak RSS of a process running the bundle, e.g. 200MB")
    g.add_argument("--eval-data", metavar="DATA", help="accuracy data: folder, .npz (x, y), fashion-mnist:test; "
                                                      "unlabeled: agreement with the source")
    g.add_argument("--device", metavar="USER@HOST", help="measure on this device over ssh (needs edgepack there)")
    g.add_argument("--port", type=int, default=None, help="--device ssh port")
    g.add_argument("--identity", default=None, help="--device ssh private key")
    g.add_argument("--threads", type=int, default=None, help="threads while measuring (default 1)")


AUTO_FLAGS = ("max_accuracy_drop", "max_latency", "max_ram", "eval_data", "device", "port", "identity", "threads")


def auto_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``convert(recipe="auto", ...)`` keywords from the flags; without ``--recipe auto`` they are an error.

    Raises:
        ConfigError: an auto flag with another recipe, or --port/--identity without --device.
    """
    given = [f"--{k.replace('_', '-')}" for k in AUTO_FLAGS if getattr(args, k, None) is not None]
    if args.recipe.strip().lower() != "auto":
        if given:
            raise ConfigError(f"{', '.join(given)} belong to --recipe auto; add it or drop them.")
        return {}
    fixed = [f for f, v in (("--format", args.format), ("--io-dtype", args.io_dtype), ("--exclude", args.exclude),
                            ("--calibration-method", args.calibration_method),
                            ("--float-first-layers", args.float_first_layers)) if v is not None]
    if fixed:
        raise ConfigError(f"{', '.join(fixed)} fix one recipe and --recipe auto tries every one the target allows; "
                          "drop them or name a recipe.")
    if (args.port is not None or args.identity is not None) and args.device is None:
        raise ConfigError("--port and --identity are for --device USER@HOST; add --device.")
    device = None
    if args.device is not None:
        from edgepack.auto.measure import Device

        device = Device(Device.parse(args.device).address, port=args.port, identity=args.identity)
    return {"max_accuracy_drop": args.max_accuracy_drop, "max_latency": args.max_latency, "max_ram": args.max_ram,
            "eval_data": args.eval_data, "device": device, "threads": args.threads or 1}


def recipes_from(args: argparse.Namespace) -> list[Recipe]:
    """The recipes the options ask for, every name resolved with ``--format`` (or the model's own format: ``onnx``
    for an .onnx model).

    ``--io-dtype`` and ``--limit`` apply to every recipe, the ONNX-only options (:data:`ONNX_ONLY`) to the ONNX
    recipes; given without any ONNX recipe they are an error, never ignored.

    Raises:
        ConfigError: An empty list, an unknown recipe, a recipe of another format than ``--format``, or ONNX-only
            options without an ONNX recipe.
    """
    from edgepack.runtimes.recipe import CalibrationMethod, IODType, get_recipe

    names = cli_args.csv(args.recipe)
    if not names:
        raise ConfigError("--recipe is empty; name at least one recipe (fp32, full-int8, qdq-int8, ...).")
    from edgepack.converters.formats import format_claiming, get_format

    if args.format:
        get_format(args.format)  # an unknown name lists the registered formats
    fmt = args.format or format_claiming(args.model)
    recipes = [get_recipe(name, format=fmt) for name in names]
    common: dict[str, Any] = {}
    if args.io_dtype:
        common["io_dtype"] = IODType(args.io_dtype)
    if args.limit:
        common["calibration_samples"] = args.limit
    if getattr(args, "prune", None):
        from edgepack.runtimes.recipe import PruneOptions

        common["prune"] = PruneOptions.parse(args.prune)
    onnx: dict[str, Any] = {}
    if args.calibration_method:
        onnx["calibration_method"] = CalibrationMethod(args.calibration_method)
    if args.float_first_layers is not None:
        onnx["float_first_layers"] = args.float_first_layers
    if onnx and not any(r.format == "onnx" for r in recipes):
        raise ConfigError(f"{', '.join(ONNX_ONLY)} are for ONNX recipes and {', '.join(names)} makes none; "
                          "add --format onnx or name an ONNX recipe (qdq-int8, ...).")
    # Layer names differ by format: with ONNX recipes in the list the names are ONNX node names.
    exclude_format = "onnx" if any(r.format == "onnx" for r in recipes) else "tflite"
    takes_exclude = [r for r in recipes if _takes_exclude(r) and r.format == exclude_format]
    if args.exclude and not takes_exclude:
        raise ConfigError(f"--exclude keeps layers of an int8 model in float and {', '.join(names)} makes none; name "
                          "full-int8 (TFLite) or an ONNX int8 recipe (qdq-int8, onnx-dynamic-int8).")
    out = []
    for r in recipes:
        gets_exclude = bool(args.exclude) and any(r is t for t in takes_exclude)
        r = replace(r, **common)
        if r.format == "onnx" and onnx:
            r = replace(r, onnx=replace(r.options, **onnx))
        if gets_exclude:
            r = replace(r, exclude=tuple(args.exclude))
        out.append(r)
    return out


def _takes_exclude(recipe: Recipe) -> bool:
    """ONNX int8 recipes and TFLite full int8 keep named layers in float."""
    from edgepack.runtimes.recipe import Precision

    if recipe.format == "onnx":
        return recipe.precision in (Precision.FULL_INT8, Precision.INT16X8, Precision.DYNAMIC_INT8)
    return recipe.precision is Precision.FULL_INT8


def _convert(args: argparse.Namespace) -> int:
    from edgepack.api import convert
    from edgepack.converters.calibration import ImageFolder
    from edgepack.runtimes.target import get_target

    target = get_target(args.target)  # a name or a JSON file; fails before any model is loaded
    auto = auto_kwargs(args)
    recipes = [] if auto else recipes_from(args)
    check_output(Path(args.output) if args.output else None)  # before minutes of conversion, not after
    calibration = None
    if args.calibration:
        cal = Path(args.calibration)
        if cal.suffix == ".npz":
            calibration = _load_npz(cal)
        else:
            calibration = _load_npy(cal) if cal.suffix == ".npy" else ImageFolder(cal, limit=args.limit)
    if auto and args.prune:
        auto["prune"] = args.prune  # every candidate also gets a pruned twin
    recipe: Any = "auto" if auto else recipes if len(recipes) > 1 else recipes[0]
    bundle = convert(args.model, calibration, target=target, recipe=recipe, **auto,
                     input_shapes=input_shapes(args.input_shape), name=args.name, labels=args.labels,
                     preprocessing=cli_args.preprocessing_hint_from(args),
                     postprocessing=postprocessing_from(args.postprocess), max_size=args.max_size)
    out = Path(args.output or f"{bundle.manifest.name}.epk")
    try:
        bundle.save(out)
    except OSError as exc:  # e.g. the disk filled up during conversion; the atomic write left nothing
        raise ConfigError(f"cannot write {out} ({exc.strerror or exc}); free space or pass another -o.") from exc
    reports = list(bundle.report.get("models", []))
    for k, m in enumerate(bundle.manifest.models):
        val = (reports[k] if k < len(reports) else {}).get("validation") or {}
        agreement = ", ".join(
            f"{o['name']}: cos {o['cosine']:.5f} top1 {o['top1_agreement']}" for o in val.get("outputs", [])
        )
        print(f"{m.file}: {m.precision}, {m.bytes / 1e6:.3f} MB; vs source {agreement or 'n/a'}")
    if "auto" in bundle.report:
        from edgepack.auto.report import summary_lines

        print("\n".join(summary_lines(bundle.report["auto"])))
    if bundle.report.get("preprocessing_assumed"):
        print(bundle.report["preprocessing_assumed"])
    print(f"wrote {out}")
    return 0


def postprocessing_from(spec: str | None) -> Any:
    """``--postprocess``: a preset name or a JSON file → a ``Postprocessing``; None without the flag.

    Raises:
        ConfigError: an unknown preset, an unreadable file, or JSON that is not a valid spec (unknown keys too).
    """
    if spec is None:
        return None
    import json

    from edgepack.runtimes.detection import PRESETS
    from edgepack.runtimes.manifest import Postprocessing
    from edgepack.runtimes.serde import from_json

    if spec in PRESETS:
        return PRESETS[spec]
    if not spec.endswith(".json"):
        raise ConfigError(f"--postprocess {spec!r}: not a preset ({', '.join(PRESETS)}) nor a .json file.")
    try:
        raw = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--postprocess {spec}: cannot read it as JSON ({exc}).") from exc
    return from_json(Postprocessing, raw, where=f"--postprocess {spec}")


def check_output(out: Path | None) -> None:
    """Refuse an ``-o`` that cannot be written (a directory, a missing or read-only folder, ``/proc``) up front;
    ``None``: the default ``<name>.epk`` in the current folder.

    Raises:
        ConfigError: saying what to pass instead.
    """
    from edgepack.runtimes.fileio import probe_writable

    folder = out.parent if out is not None else Path.cwd()
    if out is not None and out.is_dir():
        raise ConfigError(f"-o {out} is a directory; pass a file path such as {out / 'model.epk'}.")
    if not folder.is_dir():
        raise ConfigError(f"-o {out}: folder {folder} does not exist; create it or pass another path.")
    try:
        probe_writable(folder)
    except OSError as exc:
        where = f"-o {out}" if out is not None else "the current folder (the default output)"
        raise ConfigError(f"cannot write {where}: {folder} is not writable ({exc.strerror or exc}); pass -o with a "
                          "writable path.") from None


def input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]] | None:
    """``["images=1x3x320x320", ...]`` → ``{"images": (1, 3, 320, 320)}``; ``NAME=`` is a scalar.

    Raises:
        ConfigError: not ``NAME=DIMxDIM...`` with positive integers, or a name given twice.
    """
    if not specs:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, eq, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x")) if dims.strip() else ()
        except ValueError:
            shape = (0,)
        if not eq or not name or any(d < 1 for d in shape):
            raise ConfigError(f"--input-shape {spec!r}: write NAME=1x3x320x320 (the input's name, then its "
                              "dimensions, positive integers joined by x).")
        if name in shapes:
            raise ConfigError(f"--input-shape gives {name!r} twice; give each input once.")
        shapes[name] = shape
    return shapes


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    import numpy as np

    from edgepack.converters.errors import CalibrationError

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read {path} as an .npz of arrays by input name ({exc}).") from exc


def _load_npy(path: Path) -> np.ndarray:
    import numpy as np

    from edgepack.converters.errors import CalibrationError

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read {path} as a .npy array ({exc}).") from exc
