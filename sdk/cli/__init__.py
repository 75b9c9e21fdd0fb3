"""``edgepack`` command line: convert | run | inspect | verify, plus the ``cli_*`` command modules.

User errors print one line (``error: ...``) and exit 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.cli import options as cli_args
from edgepack.runtimes.errors import EdgepackError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    p = argparse.ArgumentParser(prog="edgepack", description="Package models for edge devices and run them.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a model into a verified .epk bundle")
    c.add_argument("model", help=".keras/.h5 file, SavedModel dir, .tflite or .onnx")
    c.add_argument("-o", "--output", help="bundle path (default: <model name>.epk)")
    c.add_argument("--target", default="x86", help="rpi4, rpi5, android-phone, arm64-board, jetson, x86")
    c.add_argument("--recipe", default="fp32",
                   help="fp32, fp16, dynamic-int8, full-int8, int16x8, qdq-int8, ...; a comma list makes one "
                        "bundle with every variant (e.g. full-int8,qdq-int8: .tflite + .onnx)")
    c.add_argument("--format", choices=("tflite", "onnx"), default=None, help="output model format")
    c.add_argument("--io-dtype", choices=("float32", "int8", "uint8"), default=None, help="full-int8 I/O dtype")
    c.add_argument("--calibration", help="image folder or .npy array of samples")
    c.add_argument("--limit", type=int, default=None, help="number of calibration samples")
    c.add_argument("--calibration-method", choices=("minmax", "entropy", "percentile"), default=None,
                   help="ONNX QDQ: how activation ranges are estimated (default minmax)")
    c.add_argument("--exclude", type=cli_args.csv, default=None,
                   help="ONNX int8: node names kept in float (names as `edgepack qdebug` prints them)")
    c.add_argument("--float-first-layers", type=int, default=None, metavar="N",
                   help="ONNX int8: keep the first N weighted layers (Conv/Gemm/MatMul) in float")
    c.add_argument("--labels", help="labels file, one class a line")
    cli_args.add_preprocessing_args(c)
    c.add_argument("--max-size", help="fail when the model is larger, e.g. 4MB")
    c.add_argument("--name", help="bundle name")

    r = sub.add_parser("run", help="run a bundle on an image file or a .npy tensor")
    r.add_argument("bundle")
    r.add_argument("input", help="image file (pre-processed by the bundle's spec) or .npy tensor")
    _runtime_args(r)
    r.add_argument("--top-k", type=int, default=None)

    i = sub.add_parser("inspect", help="show manifest, I/O, sizes, ops and precision")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")

    v = sub.add_parser("verify", help="check checksums and golden outputs on this machine")
    v.add_argument("bundle")
    _runtime_args(v)
    for module in _command_modules():
        module.register(sub)
    return p


#: Further sub-command modules (``edgepack.cli_<name>``), each with ``register(subparsers)`` that adds its
#: parsers and sets ``handler=`` defaults (a function taking the parsed args, returning the exit code).
COMMAND_MODULES = ("device", "store", "measure")


def _command_modules() -> list[Any]:
    found = []
    for name in COMMAND_MODULES:
        full = f"edgepack.cli.{name}"
        if importlib.util.find_spec(full) is not None:
            found.append(importlib.import_module(full))
    return found


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default=None, help="litert, tflite-runtime, onnxruntime, tf-lite")
    p.add_argument("--delegates", type=cli_args.csv, default=None, help="ladder, e.g. gpu,xnnpack,cpu")
    p.add_argument("--threads", type=int, default=None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgepack`` command."""
    args = build_parser().parse_args(argv)
    try:
        handlers = {"convert": _convert, "run": _run, "inspect": _inspect, "verify": _verify}
        handler = handlers.get(args.command) or args.handler
        return int(handler(args))
    except EdgepackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _convert(args: argparse.Namespace) -> int:
    import dataclasses

    from edgepack.api import convert
    from edgepack.converters.calibration import ImageFolder
    from edgepack.runtimes.recipe import CalibrationMethod, IODType, get_recipe

    names = [r for r in args.recipe.split(",") if r]
    fmt = args.format or ("onnx" if args.model.lower().endswith(".onnx") else None)
    recipes = [get_recipe(r, format=fmt if len(names) == 1 else None) for r in names]
    changes: dict[str, object] = {}
    if args.io_dtype:
        changes["io_dtype"] = IODType(args.io_dtype)
    if args.limit:
        changes["calibration_samples"] = args.limit
    onnx_only: dict[str, object] = {}  # with several recipes, these go to the ONNX ones only
    if args.calibration_method:
        onnx_only["calibration_method"] = CalibrationMethod(args.calibration_method)
    if args.exclude:
        onnx_only["exclude"] = args.exclude
    if args.float_first_layers is not None:
        onnx_only["float_first_layers"] = args.float_first_layers
    recipes = [dataclasses.replace(r, **changes, **(onnx_only if len(recipes) == 1 or r.format.value == "onnx" else {}))
               for r in recipes]
    pre = cli_args.preprocessing_from(args)
    calibration = None
    if args.calibration:
        cal = Path(args.calibration)
        calibration = _load_npy(cal) if cal.suffix == ".npy" else ImageFolder(cal, limit=args.limit)
    bundle = convert(args.model, calibration, target=args.target, recipe=recipes if len(recipes) > 1 else recipes[0],
                     name=args.name,
                     labels=args.labels, preprocessing=pre, max_size=args.max_size)
    out = Path(args.output or f"{bundle.manifest.name}.epk")
    bundle.save(out)
    for m in bundle.manifest.models:
        rep = next((r for r in bundle.report["models"] if r.get("precision") == m.precision), {})
        val = rep.get("validation") or {}
        agreement = ", ".join(
            f"{o['name']}: cos {o['cosine']:.5f} top1 {o['top1_agreement']}" for o in val.get("outputs", [])
        )
        print(f"{m.file}: {m.precision}, {m.bytes / 1e6:.3f} MB; vs source {agreement or 'n/a'}")
    print(f"wrote {out}")
    return 0


def _load_npy(path: Path) -> np.ndarray:
    from edgepack.converters.errors import CalibrationError

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read {path} as a .npy array ({exc}).") from exc


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from edgepack.runtimes import load

    return load(args.bundle, backend=args.backend, delegates=args.delegates, num_threads=args.threads)


def _run(args: argparse.Namespace) -> int:
    from edgepack.runtimes.errors import InputSpecError

    session = _load(args)
    path = Path(args.input)
    if not path.is_file():
        raise InputSpecError(f"input {path} does not exist.")
    print(f"running on {session.explain()}")
    if path.suffix == ".npy":
        outputs = session.run(np.load(path, allow_pickle=False))
        for k, o in enumerate(outputs):
            head = np.array2string(o.ravel()[:10], precision=4)
            print(f"output {k} {session.outputs[k].name} {list(o.shape)}: {head}")
        return 0
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputSpecError(f"cannot read image {path}; pass a .jpg/.png or a .npy tensor.")
    pred = session.predict(image, top_k=args.top_k)
    for c in pred.top_k:
        print(f"{c.score:9.4f}  {c.label}")
    if not pred.top_k:
        print(f"outputs: {[list(o.shape) for o in pred.outputs]}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from edgepack.runtimes import read_bundle

    bundle = read_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(m.to_bytes().decode())
        return 0
    print(f"{m.name} v{m.version} ({m.schema}), made {m.created} by edgepack {m.edgepack_version}")
    print(f"source: {m.source.format} {m.source.file}; target: {m.target.get('name')}; recipe: {m.recipe.get('name')}")
    for e in m.models:
        print(f"model {e.file}: {e.format} {e.precision}, {e.bytes} bytes, sha256 {e.sha256[:16]}…")
        for kind, specs in (("in ", e.inputs), ("out", e.outputs)):
            for s in specs:
                q = f" q(scale={s.quantization.scale:.4g}, zp={s.quantization.zero_point})" if s.quantization else ""
                print(f"  {kind} {s.name}: {list(s.shape)} {s.dtype}{q}")
        ops = e.requires.get("ops") or e.requires.get("op_types") or {}
        if ops:
            print("  ops: " + ", ".join(f"{k} v{v}" if isinstance(ops, dict) else k for k, v in _items(ops)))
        if e.requires.get("opset"):
            print(f"  opset: {e.requires['opset']}")
    if m.preprocessing:
        print(f"preprocessing: {json.dumps(json.loads(m.to_bytes())['preprocessing'])}")
    print(f"postprocessing: {m.postprocessing.kind.value}; labels: {len(bundle.labels())}")
    print(f"files: {', '.join(bundle.names())}")
    return 0


def _items(ops: object) -> list[tuple[str, object]]:
    if isinstance(ops, dict):
        return sorted(ops.items())
    return [(str(o), "") for o in ops]  # type: ignore[union-attr]


def _verify(args: argparse.Namespace) -> int:
    session = _load(args)
    print(f"checksums OK ({len(session.bundle.names())} files)")
    for attempt in session.fallback_log:
        print(f"  {attempt}")
    print(f"golden outputs match on {session.backend}/{session.delegate}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
