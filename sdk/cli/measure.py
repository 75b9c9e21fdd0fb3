"""``edgepack eval | bench | report | qdebug``: measure accuracy, latency and size the same way every time.

Registered by :mod:`edgepack.cli` (``VERB_GROUPS``). Imports stay light here; each handler imports
what it needs, so ``edgepack bench`` on a device never loads TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgepack.cli import options as cli_args
from edgepack.runtimes.errors import ConfigError, InputSpecError
from edgepack.runtimes.fileio import atomic_write_text
from edgepack.runtimes.progress import ProgressBar

DATA_HELP = "labeled data: folder with one sub-folder per class, .npz (x, y), or fashion-mnist[:test|:train]"


def register(sub: Any) -> None:
    """Add the measurement commands to the ``edgepack`` parser."""
    e = sub.add_parser("eval", help="accuracy on labeled data; agreement with a reference model")
    e.add_argument("model", help=".epk bundle, .tflite, .onnx, .keras/.h5 or SavedModel folder")
    e.add_argument("--data", required=True, help=DATA_HELP)
    e.add_argument("--reference", help="model to compare with: the source, or another bundle")
    e.add_argument("--limit", type=int, default=None, help="use at most N samples")
    e.add_argument("--confusion", action="store_true", help="print the confusion matrix")
    e.add_argument("--json", help="write the result as JSON here")
    cli_args.add_runtime_args(e)
    cli_args.add_preprocessing_args(e)
    e.set_defaults(handler=_eval)

    b = sub.add_parser("bench", help="latency, load time, peak RSS and per-op profile of a bundle")
    b.add_argument("bundle")
    b.add_argument("--runs", type=int, default=200)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--pin", type=cli_args.ints, default=None, help="pin to CPUs, e.g. 0 or 0,1 (Linux)")
    b.add_argument("--images", help="image folder or data (see eval --data) for end-to-end timing")
    b.add_argument("--profile", action="store_true", help="per-op profile where the backend has one")
    b.add_argument("--json", help="write the result (schema edgepack.bench/1) here")
    cli_args.add_runtime_args(b)
    b.set_defaults(handler=_bench)

    r = sub.add_parser("report", help="compare bundles: Markdown + self-contained HTML with plots")
    r.add_argument("bundles", nargs="+", help=".epk files")
    r.add_argument("--data", required=True, help=DATA_HELP)
    r.add_argument("--reference", help="model every bundle is compared with (e.g. the source)")
    r.add_argument("--source", help="float source model, for per-layer quantization debugging")
    r.add_argument("-o", "--output", default="report", help="output folder (default: report/)")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--runs", type=int, default=200)
    r.add_argument("--warmup", type=int, default=20)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--screenshot", help="also render the HTML in headless Chromium to this PNG")
    r.set_defaults(handler=_report)

    q = sub.add_parser("qdebug", help="per-layer quantization error; layers to keep in float")
    q.add_argument("model", help="float source (.keras/SavedModel → TFLite, .onnx → ONNX) or a quantized bundle")
    q.add_argument("--data", required=True, help="calibration / debug data (see eval --data)")
    q.add_argument("--source", help="float model a bundle was made from")
    q.add_argument("--quantized", help="existing QDQ .onnx of an ONNX model (default: quantized here)")
    q.add_argument("--recipe", default=None, help="how to quantize here (qdq-int8, full-int8, ...; default: a bundle's "
                                                  "own recipe, else the format's int8 default for this host)")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--min-snr", type=float, default=None, help="suggest float below this SNR in dB (default 25)")
    q.add_argument("--max-suggested", type=int, default=5)
    q.add_argument("--top", type=int, default=20, help="rows of the table")
    q.add_argument("--no-verify", action="store_true", help="skip re-quantizing with the suggestions in float")
    q.add_argument("--json", help="write the result as JSON here")
    cli_args.add_preprocessing_args(q)
    q.set_defaults(handler=_qdebug)


def _write_json(path: str | None, payload: Any) -> None:
    if path:
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {path}")


def _eval(args: argparse.Namespace) -> int:
    from edgepack.measure.evaluate import RunOptions, evaluate

    opts = RunOptions(backend=args.backend, delegates=args.delegates, num_threads=args.threads)
    result = evaluate(args.model, args.data, reference=args.reference, preprocessing=cli_args.preprocessing_from(args),
                      limit=args.limit, options=opts, progress=sys.stderr.isatty())
    print(result)
    if args.confusion:
        print(result.confusion_table())
    _write_json(args.json, result.to_json())
    return 0


def _bench_images(spec: str) -> tuple[Any, Any]:
    from edgepack.measure.data import is_image, open_data

    data = open_data(spec, limit=32)
    images = [s for s, _ in data]
    if not images or not all(is_image(im) for im in images):
        raise InputSpecError(f"--images {spec}: end-to-end timing needs images (uint8), not tensors.")
    return images, data.color


def _bench(args: argparse.Namespace) -> int:
    from edgepack.runtimes.benchmark import benchmark
    from edgepack.runtimes.manifest import ColorOrder

    images, color = _bench_images(args.images) if args.images else (None, ColorOrder.BGR)
    with ProgressBar(None, "benchmarking", enabled=sys.stderr.isatty()) as bar:
        result = benchmark(args.bundle, warmup=args.warmup, runs=args.runs, threads=args.threads, pin_cpus=args.pin,
                           images=images, image_color=color, profile=args.profile, backend=args.backend,
                           delegates=args.delegates,
                           progress=lambda phase, done, total: bar.update(done, total=total, description=phase))
    print(result.summary())
    if result.profile is not None and result.profile.available:
        for op in result.profile.ops[:10]:
            print(f"  {op.percent:5.1f}%  {op.mean_us:9.1f} us  {op.op:<18} {op.name}")
    if args.json:
        result.save(args.json)
        print(f"wrote {args.json}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from edgepack.measure.report import build_report, screenshot

    if args.runs < 1:
        raise ConfigError("--runs must be at least 1.")
    report = build_report(args.bundles, args.data, reference=args.reference, source=args.source, limit=args.limit,
                          runs=args.runs, warmup=args.warmup, threads=args.threads, progress=sys.stderr.isatty())
    files = report.write(args.output)
    print("\n".join("  ".join(row) for row in report.summary_rows()))
    print(f"wrote {files.markdown}, {files.html}, {files.json}")
    if args.screenshot:
        print(f"wrote {screenshot(files.html, args.screenshot)}")
    return 0


def _qdebug(args: argparse.Namespace) -> int:
    from edgepack.measure.qdebug import DEFAULT_MIN_SNR_DB, debug_quantization

    report = debug_quantization(args.model, args.data, source=args.source, quantized=args.quantized,
                                recipe=args.recipe, preprocessing=cli_args.preprocessing_from(args), limit=args.limit,
                                min_snr_db=DEFAULT_MIN_SNR_DB if args.min_snr is None else args.min_snr,
                                max_suggested=args.max_suggested, verify=not args.no_verify)
    print(report.table(top=args.top))
    _write_json(args.json, report.to_json())
    return 0
