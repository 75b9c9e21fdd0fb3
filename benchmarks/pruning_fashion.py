"""Issue 12's Fashion-MNIST check: the demo's CNN, 50 % of channels removed + 2 epochs of fine-tuning — with labels
(the 60k training images) and without (distilled from the unpruned model on unlabelled training images) — both
models converted to full int8 for the target and timed interleaved in LiteRT on one thread; accuracy on all 10,000
test images. Targets: ≤ 0.6× parameters, ≥ 1.3× faster, ≤ 1 point lost.

    .venv/bin/python benchmarks/pruning_fashion.py [--channels 0.5] [--epochs 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import edgepack as ep
from edgepack.examples.datasets import load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

ROOT = Path(__file__).resolve().parents[1]


def run(model: Path, data: object, *, channels: float, epochs: int) -> dict[str, object]:
    result = ep.prune(model, data, channels=channels, epochs=epochs, target="rpi4", recipe="full-int8",
                      eval_data="fashion-mnist:test", preprocessing=FASHION_PREPROCESSING, progress=True)
    m, p = result.report["measured"], result.report["pruning"]
    row = {
        "mode": p["fine_tune_mode"], "params_ratio": p["params_after"] / p["params_before"],
        "macs_ratio": p["macs_after"] / p["macs_before"], "speedup": result.report["ratios"]["speedup"],
        "latency_ms_before": m["latency_p50_ms_before"], "latency_ms_after": m["latency_p50_ms_after"],
        "accuracy_before": m["accuracy_before"], "accuracy_after": m["accuracy_after"],
        "accuracy_drop_points": m["accuracy_drop_points"], "model_bytes_before": m["model_bytes_before"],
        "model_bytes_after": m["model_bytes_after"], "accepted": result.accepted, "reasons": result.reasons,
        "channels": p["channels"]["layers"],
    }
    print(result.summary())
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    model = train_fashion_cnn(ROOT / ".cache" / "demo" / "fashion_cnn.keras", epochs=3)
    x, y = load_fashion_mnist("train")
    rows = {"labels": run(model, (x, y), channels=args.channels, epochs=args.epochs),
            "distill": run(model, x, channels=args.channels, epochs=args.epochs)}
    for name, r in rows.items():
        print(f"{name:8s} params ×{r['params_ratio']:.3f}  MACs ×{r['macs_ratio']:.3f}  speed-up ×{r['speedup']:.2f} "
              f"(int8 LiteRT, 1 thread)  accuracy {r['accuracy_before']:.4f} → {r['accuracy_after']:.4f} "
              f"({r['accuracy_drop_points']:+.2f} pt lost)  accepted={r['accepted']}")
    ok = all(r["params_ratio"] <= 0.6 and r["speedup"] >= 1.3 and r["accuracy_drop_points"] <= 1.0
             for r in rows.values())
    path = write_result("pruning_fashion", {"channels": args.channels, "epochs": args.epochs, "rows": rows,
                                            "targets_met": ok})
    print(f"targets met: {ok}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
