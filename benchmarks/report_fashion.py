"""The issue's 'done' check, reproducible: the Fashion-MNIST CNN through the five TFLite recipes, then
``edgepack report`` on all five (10k test images, per-layer debugging with the source) and a headless-Chromium
screenshot of the HTML.

    .venv/bin/python benchmarks/report_fashion.py [--out .cache/report/fashion]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import edgepack as ep
from edgepack.cli import main as cli
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("fp32", "fp16", "dynamic-int8", "full-int8", "int16x8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / ".cache" / "report" / "fashion"))
    parser.add_argument("--runs", default="200")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = train_fashion_cnn(ROOT / ".cache" / "demo" / "fashion_cnn.keras", epochs=3)
    x_train, _ = load_fashion_mnist("train")
    calib = x_train[np.random.default_rng(0).choice(len(x_train), 500, replace=False)]
    bundles = []
    for recipe in RECIPES:
        path = out / f"{recipe}.epk"
        if not path.is_file():
            ep.convert(model, calib, target="rpi4", recipe=recipe, labels=FASHION_LABELS,
                       preprocessing=FASHION_PREPROCESSING, progress=False).save(path)
        bundles.append(str(path))
    np.savez(out / "calibration.npz", x=calib)
    return cli(["report", *bundles, "--data", "fashion-mnist:test", "--reference", str(model), "--source", str(model),
                "--runs", args.runs, "-o", str(out / "report"), "--screenshot", str(out / "report.png")])


if __name__ == "__main__":
    sys.exit(main())
