"""Several cameras, one model: 4 streams of the opencv-doc pedestrian video on the Fashion-MNIST bundle, batched vs
sequential (``MultiStream``), saturated (unpaced: how many frames/s the shared worker serves) and camera-like (paced
at ``--fps`` each: per-stream FPS, glass-to-result, queue length over time — does anything grow?).

    .venv/bin/python benchmarks/camera_streams.py --duration 15      # 4 phases x 15 s = 1 minute
    .venv/bin/python benchmarks/camera_streams.py --duration 300 --phases paced-batched   # the 5-minute soak

Writes ``benchmarks/results/camera_streams.json``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from edgepack.runtimes import load
from edgepack.runtimes.pipeline import MultiStream, open_source

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"
PHASES = ("saturated-batched", "saturated-sequential", "paced-batched", "paced-sequential")


def fashion_bundle() -> Path:
    """The Fashion-MNIST CNN as an fp32 bundle (built once, cached)."""
    path = CACHE / "camera_streams_fashion_fp32.epk"
    if not path.exists():
        import edgepack as ep
        from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
        from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn

        model = train_fashion_cnn(CACHE / "fashion_small.keras", epochs=2, limit=12000)
        x, _ = load_fashion_mnist("train", limit=12000)
        cal = x[np.random.default_rng(1).choice(len(x), 120, replace=False)]
        CACHE.mkdir(parents=True, exist_ok=True)
        ep.convert(model, cal, target="rpi4", recipe="fp32", labels=FASHION_LABELS,
                   preprocessing=FASHION_PREPROCESSING, progress=False).save(path)
    return path


def windows(samples: list[tuple[float, float]], n: int = 10) -> list[dict[str, float]]:
    """``(t, value)`` samples → n equal time windows with the p50/p95 of each (growth shows as a rising p95)."""
    if not samples:
        return []
    t = np.array([s[0] for s in samples])
    v = np.array([s[1] for s in samples])
    edges = np.linspace(t.min(), t.max() + 1e-9, n + 1)
    out = []
    for a, b in itertools.pairwise(edges):
        sel = v[(t >= a) & (t < b)]
        if sel.size:
            out.append({"t0_s": round(float(a), 2), "n": int(sel.size), "p50": round(float(np.percentile(sel, 50)), 3),
                        "p95": round(float(np.percentile(sel, 95)), 3)})
    return out


def run_phase(session: object, phase: str, *, streams: int, duration: float, fps: float, max_batch: int,
              window_ms: float) -> dict[str, object]:
    paced = phase.startswith("paced")
    sources = [open_source(VIDEO, pace=paced, fps=fps if paced else None, loop=True) for _ in range(streams)]
    ms = MultiStream(session, sources, max_batch=max_batch, window_ms=window_ms, batched=phase.endswith("-batched"))
    t0 = time.monotonic()
    g2r: list[tuple[float, float]] = []
    for r in ms.run(duration_s=duration):
        g2r.append((r.capture_ts - t0, r.glass_to_result_ms))
    stats = ms.stats
    queue = stats.queue
    step = max(1, len(queue) // 300)
    third = max(1, len(queue) // 3)
    result = {
        "phase": phase, "paced_fps_per_stream": fps if paced else None, "duration_s": duration, "mode": stats.mode,
        "throughput_fps": round(stats.throughput_fps, 2), "per_stream_fps": [round(s.fps, 2) for s in stats.streams],
        "fps_spread": round(stats.fps_spread, 4), "mean_batch": round(stats.mean_batch, 3), "batches": stats.batches,
        "g2r_p50_ms": [round(s.g2r_p50_ms, 3) for s in stats.streams],
        "g2r_p95_ms": [round(s.g2r_p95_ms, 3) for s in stats.streams],
        "service_ms": [round(s.service_ms, 3) for s in stats.streams],
        "dropped": [s.dropped for s in stats.streams], "frames": [s.frames for s in stats.streams],
        "stage_p50_ms": {k: round(v, 3) for k, v in stats.streams[0].stage_p50_ms.items()},
        "g2r_windows_ms": windows(g2r),
        "queue_mean_first_third": round(float(np.mean([q for _, q in queue[:third]])), 3) if queue else 0.0,
        "queue_mean_last_third": round(float(np.mean([q for _, q in queue[-third:]])), 3) if queue else 0.0,
        "queue_max": max((q for _, q in queue), default=0),
        "queue_samples": queue[::step],
        "summary": stats.summary_line(),
    }
    print(f"{phase}: {stats.summary_line()}; queue mean first/last third {result['queue_mean_first_third']}/"
          f"{result['queue_mean_last_third']}, max {result['queue_max']}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per phase (default 15)")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--fps", type=float, default=30.0, help="per-stream rate of the paced phases")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--window-ms", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    ap.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    ap.add_argument("--out", default="camera_streams", help="result name under benchmarks/results/")
    args = ap.parse_args()
    session = load(fashion_bundle(), num_threads=args.threads)
    print(f"model: Fashion-MNIST CNN fp32 on {session.explain()}", flush=True)
    phases = [run_phase(session, p, streams=args.streams, duration=args.duration, fps=args.fps,
                        max_batch=args.max_batch, window_ms=args.window_ms) for p in args.phases]
    path = write_result(args.out, {
        "video": VIDEO, "model": "Fashion-MNIST CNN fp32 (GRAY 28x28 pre-processing)", "backend": session.explain(),
        "streams": args.streams, "max_batch": args.max_batch, "window_ms": args.window_ms,
        "threads": args.threads, "phases": phases})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
