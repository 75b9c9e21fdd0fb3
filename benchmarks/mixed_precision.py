"""Accuracy-aware mixed precision (issue 13): a real model that plain int8 hurts, made whole by keeping the fewest
sensitive layers in float, at what cost in size and latency.

The model (``edgepack.examples.attention``): a Fashion-MNIST CNN whose head pools the 14x14 feature map with two
softmax-attention heads, trained here on the real training set. Full int8 hurts it for reasons of TFLite's int8
arithmetic, not of its weights: SOFTMAX has the fixed output scale 1/256 (attention weights near 1/196 round to 0, 1
or 2 steps), and the weighted sum (MUL, then MEAN, then the x196 rescale) is computed at scales set by the few large
products, so most small terms round away. Nothing is hand-edited.

    .venv/bin/python benchmarks/mixed_precision.py [--budget 0.5] [--eval-limit 10000] [--onnx]

Prints the figures and writes ``results/mixed_precision.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result
from _models import CACHE

from edgepack.auto.mixed_precision import mixed_precision
from edgepack.examples.attention import train_attention_cnn
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING


def run(model: Path, base: str, calibration: np.ndarray, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    bundle, report = mixed_precision(model, calibration, base=base, eval_data="fashion-mnist:test",
                                     eval_limit=args.eval_limit, max_accuracy_drop=args.budget, target="x86",
                                     labels=FASHION_LABELS, preprocessing=FASHION_PREPROCESSING,
                                     latency_blocks=args.blocks, progress=sys.stderr.isatty())
    report["seconds"] = time.perf_counter() - start
    entry = bundle.manifest.models[0]
    report["bundle"] = {"file": entry.file, "precision": entry.precision, "exclude": list(entry.recipe.exclude)}
    return report


def show(name: str, r: dict) -> None:
    print(f"\n== {name}: base {r['base_recipe']} ({r['format']}), {r['metric']} on {r['eval_samples']} "
          f"{r['eval_data']} samples, budget {r['max_accuracy_drop']} points")
    print(f"source {r['source_score']:.2f} | plain int8 {r['plain_int8_score']:.2f} "
          f"(drop {r['source_score'] - r['plain_int8_score']:.2f}) | mixed {r['score']:.2f} "
          f"(drop {r['source_score'] - r['score']:.2f}) with {r['float_layers']['count']} of "
          f"{r['float_layers']['of']} layers in float")
    for t in r["tries"]:
        gate = " (fails convert's validation gate)" if "failed_validation" in t else ""
        print(f"  try {t['float_layers']:>2} float layers: {t['score']:.2f}{' meets' if t['meets'] else ''}{gate}")
    print("  float layers: " + ", ".join(n.split(";")[0] for n in r["float_layers"]["names"]))
    if "latency_p50_ms" in r:
        lat, size = r["latency_p50_ms"], r["size_bytes"]
        print("  " + " | ".join(f"{k} {size[k]} B, p50 {lat[k]:.4f} ms ({r['latency_vs_fp32'][k]:.2f}x fp32)"
                                for k in ("fp32", "int8", "mixed")))
        kept = r["speed_up_kept"]
        print(f"  speed-up kept: {'n/a' if kept is None else f'{kept:.0%}'} of int8's over fp32 "
              f"({r['latency']['runtime']}, {r['latency']['threads']} thread, {r['latency']['blocks']} interleaved "
              f"blocks of {r['latency']['runs_per_block']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=0.5, help="max accuracy drop in points")
    parser.add_argument("--eval-limit", type=int, default=10000)
    parser.add_argument("--blocks", type=int, default=30, help="interleaved latency blocks (20 runs each)")
    parser.add_argument("--onnx", action="store_true", help="also the ONNX qdq-int8 path")
    args = parser.parse_args()
    model = train_attention_cnn(CACHE / "attention_cnn.keras", epochs=6, limit=None)
    x, _ = load_fashion_mnist("train")
    calibration = x[np.random.default_rng(1).choice(len(x), 200, replace=False)]
    results = {"model": {"file": model.name, "how": "edgepack.examples.attention.train_attention_cnn(epochs=6, "
                         "all 60k Fashion-MNIST training images)"}, "budget_points": args.budget}
    results["tflite"] = run(model, "full-int8", calibration, args)
    show("TFLite", results["tflite"])
    if args.onnx:
        from edgepack.converters.formats.onnx.from_keras import keras_to_onnx

        onnx_path = CACHE / "attention_cnn.onnx"
        if not onnx_path.is_file():
            src = keras_to_onnx(model)
            try:
                onnx_path.write_bytes(src.model_bytes())
            finally:
                src.close()
        results["onnx"] = run(onnx_path, "qdq-int8", calibration, args)
        show("ONNX", results["onnx"])
    path = write_result("mixed_precision", results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
