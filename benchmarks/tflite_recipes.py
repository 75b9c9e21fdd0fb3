"""Fashion-MNIST CNN through the five TFLite recipes: size, test accuracy, median latency, and the
wrapper overhead of ``Session.run`` vs raw ``interpreter.invoke()`` — all measured in one run.

    .venv/bin/python benchmarks/tflite_recipes.py [--runs 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

import edgepack as ep
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn
from edgepack.runtimes import load

RECIPES = ("fp32", "fp16", "dynamic-int8", "full-int8", "int16x8")


def latency(fn, x, runs: int) -> float:
    for _ in range(20):
        fn(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def overhead(session, x: np.ndarray, *, pairs: int) -> dict[str, float]:
    """Session.run vs raw set_tensor+invoke+get_tensor, alternating call by call; ratio of the medians.

    Alternating single calls puts both under the same machine load at every moment, and the median
    ignores pre-emption spikes: on a shared 2-core machine block timings drift by more than the overhead.
    """
    interp = session.raw_engine().raw_interpreter()
    i_in, i_out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def raw() -> None:
        interp.set_tensor(i_in, x)
        interp.invoke()
        interp.get_tensor(i_out)

    def wrapped() -> None:
        session.run(x)

    raw_t, wrap_t = [], []
    clock = time.perf_counter
    for _ in range(50):
        raw()
        wrapped()
    for _ in range(pairs):
        t0 = clock()
        raw()
        t1 = clock()
        wrapped()
        t2 = clock()
        raw_t.append(t1 - t0)
        wrap_t.append(t2 - t1)
    raw_med, wrap_med = statistics.median(raw_t), statistics.median(wrap_t)
    return {"ratio_median": wrap_med / raw_med, "raw_us": raw_med * 1e6, "session_us": wrap_med * 1e6,
            "pairs": pairs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=".cache/demo/fashion_cnn.keras")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model = train_fashion_cnn(args.model, epochs=3)
    x_test, y_test = load_fashion_mnist("test")
    x_train, _ = load_fashion_mnist("train")
    calib = x_train[np.random.default_rng(0).choice(len(x_train), 500, replace=False)]
    inputs = x_test[..., None].astype(np.float32) / 255
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for recipe in RECIPES:
        bundle = ep.convert(model, calib, target="rpi4", recipe=recipe, labels=FASHION_LABELS,
                            preprocessing=FASHION_PREPROCESSING, progress=False)
        path = bundle.save(tmp / f"{recipe}.epk")
        session = load(path, num_threads=args.threads)
        preds = np.array([np.argmax(session.run(inputs[i : i + 1])[0]) for i in range(len(inputs))])
        x = inputs[:1]
        row = {
            "recipe": recipe, "bytes": bundle.size_bytes, "accuracy": float(np.mean(preds == y_test)),
            "median_ms": latency(session.run, x, args.runs) * 1e3, "delegate": session.delegate,
            "partitions": session.delegated_partitions,
            "overhead": overhead(session, x, pairs=max(2000, args.runs * 2)),
        }
        rows.append(row)
        session.close()
    fp32 = rows[0]
    print(f"{'recipe':<14}{'bytes':>10}{'x fp32':>8}{'accuracy':>10}{'median ms':>11}{'x fp32':>8}  delegate"
          f"{'wrapper':>10}")
    for r in rows:
        r["size_vs_fp32"] = r["bytes"] / fp32["bytes"]
        r["latency_vs_fp32"] = r["median_ms"] / fp32["median_ms"]
        print(f"{r['recipe']:<14}{r['bytes']:>10}{r['size_vs_fp32']:>8.3f}{r['accuracy']:>10.4f}"
              f"{r['median_ms']:>11.3f}{r['latency_vs_fp32']:>8.2f}  {r['delegate']:<8}"
              f"{r['overhead']['ratio_median']:>10.3f}")
    out = write_result("tflite_recipes", {"threads": args.threads, "test_images": len(y_test), "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
