"""`make demo`, host half: train (cached) a CNN on real Fashion-MNIST, package it for a Raspberry Pi 4.

Writes ``fashion_cnn.epk`` (full int8, calibrated on real training images) and
``.cache/demo/source_metrics.json`` (the source model's test accuracy and the fp32 size), then
``demos/run_bundle.py`` loads the bundle with the runtime only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import edgepack as ep
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", default=".cache/demo")
    parser.add_argument("--output", default="fashion_cnn.epk")
    parser.add_argument("--calibration-samples", type=int, default=500)
    args = parser.parse_args()
    cache = Path(args.cache)
    model_path = train_fashion_cnn(cache / "fashion_cnn.keras", epochs=3)
    print(f"source model: {model_path}")

    import keras

    model = keras.models.load_model(model_path, compile=False)
    x_test, y_test = load_fashion_mnist("test")
    logits = model.predict(x_test[..., None].astype("float32") / 255.0, batch_size=500, verbose=0)
    source_accuracy = float(np.mean(np.argmax(logits, 1) == y_test))

    # Calibrate on real training images, spread over the set (not the first N only).
    x_train, _ = load_fashion_mnist("train")
    pick = np.random.default_rng(0).choice(len(x_train), args.calibration_samples, replace=False)
    calibration = x_train[pick]  # uint8 images: pre-processed by the bundle's own spec
    common = {"target": "rpi4", "labels": FASHION_LABELS, "preprocessing": FASHION_PREPROCESSING}
    fp32 = ep.convert(model_path, calibration[:50], recipe=ep.recipes.fp32(), **common)
    bundle = ep.convert(model_path, calibration,
                        recipe=ep.recipes.full_int8(samples=args.calibration_samples), **common)
    out = bundle.save(args.output)
    metrics = {"source_accuracy": source_accuracy, "fp32_model_bytes": fp32.size_bytes,
               "source_file": str(model_path)}
    (cache / "source_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote {out} ({bundle.size_bytes} model bytes; fp32 would be {fp32.size_bytes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
