"""Channel pruning that pays: a MobileNet-style network (residual adds, depthwise convs) trained here on real
Fashion-MNIST, 30–50 % of its channels removed, fine-tuned with labels, measured on the device runtime.

PyTorch: torch-pruning (``remove_channels_torch``) → ``finetune_torch`` → ONNX fp32 through ``edgepack convert`` →
ONNX Runtime (1 thread). Keras 3 (``--keras``): ``remove_channels`` → ``finetune`` (its rate cosine-decayed,
as ``finetune_torch`` does: with a constant rate the pruned model lost 6 points) → LiteRT fp32 and full
int8 (1 thread, XNNPACK). Latency: batch 1, the unpruned and pruned models interleaved block by block so machine
load hits them alike (``edgepack.runtimes.interleaved``); accuracy on all 10,000 test images through the bundles.
Target: ≥ 1.3× lower latency at ≤ 1 point of accuracy lost. Prints a table and writes
``benchmarks/results/pruning_mobilenet.json``. Trained models are cached under ``.cache/tests/``.

Measured here (2 shared x86 cores, ratio 0.3, 2 fine-tuning epochs on 30k images): PyTorch → ONNX fp32 1.54× faster,
89.73 → 89.72 %; Keras → LiteRT fp32 1.67×, 90.54 → 90.09 %; full int8 1.40×, 90.55 → 90.16 %. At ratio 0.4 PyTorch
gave 1.90× for 0.64 points, at 0.5 2.63× for 1.06 points (just over the limit).

    .venv/bin/python benchmarks/pruning_mobilenet.py [--ratio 0.3] [--finetune-epochs 2] [--keras] [--no-torch]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from edgepack.converters.convert import convert
from edgepack.examples.mobilenet import fashion_32
from edgepack.runtimes import interleaved, load

CACHE = Path(".cache/tests")
TARGET_SPEEDUP, MAX_DROP = 1.3, 1.0


def _accuracy(session: Any, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.concatenate([session.run(x[i:i + 500])[0].argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).mean() * 100)


def _measure(bundles: dict[str, Path], xt: np.ndarray, yt: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    sessions = {name: load(path, num_threads=1) for name, path in bundles.items()}
    acc = {name: _accuracy(s, xt, yt) for name, s in sessions.items()}
    one = xt[:1]
    fns = {name: (lambda s=s: s.run(one)) for name, s in sessions.items()}
    lat = interleaved(fns, blocks=args.blocks, per_block=args.per_block, warmup=20)
    return {name: {"accuracy_pct": acc[name], "p50_ms": lat[name].p50_ms, "p90_ms": lat[name].p90_ms,
                   "bundle_bytes": bundles[name].stat().st_size} for name in bundles}


def _verdict(rows: dict[str, Any], base: str, pruned: str) -> dict[str, Any]:
    speedup = rows[base]["p50_ms"] / rows[pruned]["p50_ms"]
    drop = rows[base]["accuracy_pct"] - rows[pruned]["accuracy_pct"]
    return {"speedup": speedup, "accuracy_drop_points": drop,
            "meets_target": bool(speedup >= TARGET_SPEEDUP and drop <= MAX_DROP)}


def run_torch(args: argparse.Namespace, out: Path, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    """Train (cached), prune with torch-pruning, fine-tune with labels, ONNX fp32 in ONNX Runtime."""
    import torch

    from edgepack.converters.pruning.torch_channels import remove_channels_torch, torch_params_macs
    from edgepack.converters.pruning.torch_finetune import finetune_torch
    from edgepack.examples.mobilenet import load_mobilenet_torch, train_mobilenet_torch

    torch.set_num_threads(1)  # on a small shared CPU torch's thread pool costs more than it gives
    t0 = time.perf_counter()
    model = load_mobilenet_torch(train_mobilenet_torch(CACHE / "mobilenet_fashion_torch.pt", epochs=args.train_epochs,
                                                       limit=args.train_limit))
    train_s = time.perf_counter() - t0
    x, y = fashion_32("train", limit=args.finetune_limit)
    example = torch.from_numpy(xt[:1])
    t0 = time.perf_counter()
    pruned, plan = remove_channels_torch(model, example, ratio=args.ratio, round_to=args.round_to)
    prune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ft = finetune_torch(pruned, x, y, epochs=args.finetune_epochs, learning_rate=args.learning_rate)
    finetune_s = time.perf_counter() - t0
    calib = x[:200]
    bundles = {}
    for name, module in (("unpruned", model), ("pruned", pruned)):
        bundle = convert(module, calib, recipe="fp32", format="onnx", example_input=example, progress=False)
        bundles[f"{name} onnx fp32"] = bundle.save(out / f"torch_{name}.epk")
    rows = _measure(bundles, xt, yt, args)
    (p0, m0), (p1, m1) = torch_params_macs(model, example), torch_params_macs(pruned, example)
    rows["unpruned onnx fp32"].update(params=p0, macs=m0)
    rows["pruned onnx fp32"].update(params=p1, macs=m1)
    return {"framework": "pytorch", "runtime": "onnxruntime, CPUExecutionProvider, 1 thread", "rows": rows,
            "plan": {k: list(v) for k, v in plan.items()}, "finetune": ft,
            "seconds": {"train_or_cache": train_s, "prune": prune_s, "finetune": finetune_s},
            "fp32": _verdict(rows, "unpruned onnx fp32", "pruned onnx fp32")}


def run_keras(args: argparse.Namespace, out: Path, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    """Train (cached), prune with edgepack's Keras channel removal, fine-tune, LiteRT fp32 and full int8."""
    import keras

    from edgepack.converters.pruning.keras_channels import remove_channels
    from edgepack.converters.pruning.keras_finetune import finetune
    from edgepack.examples.mobilenet import train_mobilenet_keras

    xt_nhwc = xt.transpose(0, 2, 3, 1)
    t0 = time.perf_counter()
    model = keras.saving.load_model(train_mobilenet_keras(CACHE / "mobilenet_fashion.keras",
                                                          epochs=args.keras_train_epochs, limit=args.train_limit))
    train_s = time.perf_counter() - t0
    x, y = fashion_32("train", limit=args.finetune_limit, layout="NHWC")
    t0 = time.perf_counter()
    pruned, plan = remove_channels(model, ratio=args.ratio, round_to=args.round_to)
    prune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ft = finetune(pruned, x, y, epochs=args.finetune_epochs, learning_rate=args.learning_rate)  # cosine-decayed
    finetune_s = time.perf_counter() - t0
    bundles = {}
    for name, m in (("unpruned", model), ("pruned", pruned)):
        for recipe in ("fp32", "full-int8"):
            bundle = convert(m, x[:200], recipe=recipe, progress=False)
            bundles[f"{name} tflite {recipe}"] = bundle.save(out / f"keras_{name}_{recipe}.epk")
    rows = _measure(bundles, xt_nhwc, yt, args)
    for name, m in (("unpruned", model), ("pruned", pruned)):
        for recipe in ("fp32", "full-int8"):
            rows[f"{name} tflite {recipe}"]["params"] = int(m.count_params())
    return {"framework": "keras", "runtime": "ai-edge-litert, XNNPACK, 1 thread", "rows": rows,
            "plan": repr(plan), "finetune": repr(ft),
            "seconds": {"train_or_cache": train_s, "prune": prune_s, "finetune": finetune_s},
            "fp32": _verdict(rows, "unpruned tflite fp32", "pruned tflite fp32"),
            "full_int8": _verdict(rows, "unpruned tflite full-int8", "pruned tflite full-int8")}


def _print(result: dict[str, Any]) -> None:
    print(f"\n{result['framework']} ({result['runtime']}); seconds: "
          + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items()))
    print(f"  {'variant':28s} {'acc %':>7s} {'p50 ms':>8s} {'p90 ms':>8s} {'bytes':>9s} {'params':>8s}")
    for name, r in result["rows"].items():
        print(f"  {name:28s} {r['accuracy_pct']:7.2f} {r['p50_ms']:8.3f} {r['p90_ms']:8.3f} {r['bundle_bytes']:9d} "
              f"{r.get('params', 0):8d}")
    for key in ("fp32", "full_int8"):
        if key in result:
            v = result[key]
            print(f"  {key}: {v['speedup']:.2f}x faster, {v['accuracy_drop_points']:+.2f} points lost → "
                  f"{'meets' if v['meets_target'] else 'MISSES'} the target (>= {TARGET_SPEEDUP}x, <= {MAX_DROP} pt)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3, help="fraction of channels removed (0.3-0.5)")
    parser.add_argument("--round-to", type=int, default=4)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--keras-train-epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=30000, help="training images (of 60,000)")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-limit", type=int, default=30000)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=50)
    parser.add_argument("--keras", action="store_true", help="also the Keras 3 → LiteRT half")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch → ONNX Runtime half")
    args = parser.parse_args()
    xt, yt = fashion_32("test")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_torch:
            results.append(run_torch(args, Path(tmp), xt, yt))
            _print(results[-1])
        if args.keras:
            results.append(run_keras(args, Path(tmp), xt, yt))
            _print(results[-1])
    path = write_result("pruning_mobilenet", {"ratio": args.ratio, "round_to": args.round_to,
                                              "test_images": len(xt), "results": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
