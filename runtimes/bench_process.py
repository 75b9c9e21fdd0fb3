"""Run :func:`~edgepack.runtimes.benchmark.benchmark` in a fresh process (its own load time and peak RSS).

``python -c "from edgepack.runtimes.bench_process import main; main()" BUNDLE --json out.json`` is what
:func:`benchmark_isolated` starts; ``edgepack bench`` is the same for people.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .benchmark import BenchmarkError, BenchResult, benchmark
from .errors import EdgepackError
from .manifest import ColorOrder


def benchmark_isolated(
    path: str | os.PathLike[str],
    *,
    images: np.ndarray | None = None,
    image_color: ColorOrder = ColorOrder.BGR,
    warmup: int = 10,
    runs: int = 200,
    threads: int | None = None,
    pin_cpus: Sequence[int] | None = None,
    profile: bool = False,
    timeout: float = 1800,
) -> BenchResult:
    """Run :func:`benchmark` in a fresh Python process, so load time and peak RSS are the bundle's own."""
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        out = Path(tmp) / "bench.json"
        entry = "from edgepack.runtimes.bench_process import main; raise SystemExit(main())"
        cmd = [sys.executable, "-c", entry, str(path), "--json", str(out),
               "--warmup", str(warmup), "--runs", str(runs), "--quiet"]
        if threads:
            cmd += ["--threads", str(threads)]
        if pin_cpus:
            cmd += ["--pin", ",".join(str(c) for c in pin_cpus)]
        if profile:
            cmd.append("--profile")
        if images is not None:
            np.save(Path(tmp) / "images.npy", np.asarray(images), allow_pickle=False)
            cmd += ["--images", str(Path(tmp) / "images.npy"), "--color", image_color.value]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BenchmarkError(f"benchmark of {path} took over {timeout:.0f} s; use fewer runs.") from exc
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BenchmarkError(f"benchmark of {path} failed in its own process: {tail}")
        return BenchResult.from_json(json.loads(out.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the isolated child: ``BUNDLE [--runs N] [--images x.npy] [--json out.json]``."""
    import argparse

    p = argparse.ArgumentParser(prog="edgepack-bench-child", description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--pin", default=None, help="CPUs to pin to, e.g. 0 or 0,1")
    p.add_argument("--images", default=None, help=".npy array of images (N, H, W[, C]) for end-to-end timing")
    p.add_argument("--color", choices=[c.value for c in ColorOrder], default="BGR")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        pins = [int(c) for c in args.pin.split(",")] if args.pin else None
        images = np.load(args.images, allow_pickle=False) if args.images else None
        result = benchmark(args.bundle, warmup=args.warmup, runs=args.runs, threads=args.threads, pin_cpus=pins,
                           images=None if images is None else list(images), image_color=ColorOrder(args.color),
                           profile=args.profile)
    except (EdgepackError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        result.save(args.json)
    if not args.quiet:
        print(result.summary())
    return 0


