"""`make demo`, device half: load a bundle with the runtime ONLY (no TensorFlow) and report.

Prints test-set accuracy of the bundle vs the source model on all 10,000 Fashion-MNIST test images,
bundle size vs fp32 size, median latency, and which delegate it runs on and why.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edgepack.runtimes import load


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--metrics", default=".cache/demo/source_metrics.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    session = load(args.bundle, num_threads=args.threads)
    x = _idx(Path(args.data) / "t10k-images-idx3-ubyte.gz")
    y = _idx(Path(args.data) / "t10k-labels-idx1-ubyte.gz")
    correct, times = 0, []
    for i in range(len(x)):
        tensor = session.preprocess(x[i])  # the bundle's own pre-processing spec
        start = time.perf_counter()
        out = session.run(tensor)[0]
        times.append(time.perf_counter() - start)
        correct += int(np.argmax(out) == y[i])
    accuracy = correct / len(x)
    metrics = json.loads(Path(args.metrics).read_text()) if Path(args.metrics).is_file() else {}
    src = metrics.get("source_accuracy")
    fp32_bytes = metrics.get("fp32_model_bytes")
    model = session.model
    print()
    target = session.manifest.target.name if session.manifest.target else "none"
    print(f"bundle            {args.bundle}  ({model.precision}, target {target})")
    print(f"machine           {platform.machine()}, python {platform.python_version()}")
    print(f"runs on           {session.backend} {session.backend_version} / {session.delegate} "
          f"({session.delegated_partitions} delegated partition(s))")
    for attempt in session.fallback_log:
        print(f"  ladder          {attempt}")
    line = f"accuracy          bundle {accuracy:.4f} on {len(x)} test images"
    if src is not None:
        line += f" | source {src:.4f} | drop {100 * (src - accuracy):+.2f} points"
    print(line)
    size = f"size              {model.bytes} bytes"
    if fp32_bytes:
        size += f" | fp32 {fp32_bytes} bytes | ratio {model.bytes / fp32_bytes:.3f}x"
    print(size)
    print(f"latency (invoke)  median {statistics.median(times) * 1e3:.3f} ms, "
          f"p90 {np.percentile(times, 90) * 1e3:.3f} ms over {len(times)} runs, {args.threads} thread(s)")
    heavy = [m for m in ("tensorflow", "keras", "torch", "onnx") if m in sys.modules]
    print(f"runtime imports   numpy + {session.backend} only: {'yes' if not heavy else 'NO: ' + ', '.join(heavy)}")
    return 0 if not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
