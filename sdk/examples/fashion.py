"""Small real example models trained on offline data (for the demo, tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepack.examples.datasets import load_fashion_mnist
from edgepack.runtimes.manifest import ColorOrder, Preprocessing

#: How a Fashion-MNIST image (or any grayscale photo) becomes the CNN's input.
FASHION_PREPROCESSING = Preprocessing(size=(28, 28), color=ColorOrder.GRAY, scale=1.0 / 255.0)


def fashion_cnn(*, seed: int = 0) -> Any:
    """An untrained small CNN for 28x28x1 inputs, 10 logits."""
    from edgepack.converters.tfenv import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, name="logits"),
        ],
        name="fashion_cnn",
    )


def train_fashion_cnn(path: str | Path, *, epochs: int = 3, limit: int | None = None, seed: int = 0) -> Path:
    """Train on the real Fashion-MNIST training set and save as ``.keras`` (cached: reused if present)."""
    return train_on_fashion(path, lambda: fashion_cnn(seed=seed), epochs=epochs, limit=limit, verbose=2)


def train_on_fashion(path: str | Path, make_model: Callable[[], Any], *, epochs: int, limit: int | None,
                     verbose: int = 0) -> Path:
    """Train ``make_model()`` (28x28x1 in, 10 logits) on the real Fashion-MNIST training set and save it as
    ``.keras`` atomically (cached: reused if present)."""
    path = Path(path)
    if path.is_file():
        return path
    import keras

    x, y = load_fashion_mnist("train", limit=limit)
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[..., None].astype("float32") / 255.0, y, epochs=epochs, batch_size=128, verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    return path


def make_device_bundles(out: str | Path, *, recipes: tuple[str, ...] = ("fp32", "full-int8"),
                        model: str | Path = ".cache/tests/fashion_small.keras", target: str = "rpi4") -> list[Path]:
    """Small real bundles for device tests: the Fashion CNN (trained on 12k images, cached) per recipe."""
    import numpy as np

    import edgepack as ep
    from edgepack.examples.datasets import FASHION_LABELS

    model_path = train_fashion_cnn(model, epochs=2, limit=12000)
    x, _ = load_fashion_mnist("train", limit=12000)
    calibration = x[np.random.default_rng(1).choice(len(x), 120, replace=False)]
    paths = []
    for recipe in recipes:
        bundle = ep.convert(model_path, calibration, target=target, recipe=recipe, labels=FASHION_LABELS,
                            preprocessing=FASHION_PREPROCESSING, progress=False)
        paths.append(bundle.save(Path(out) / f"fashion_{recipe}.epk"))
        print(f"wrote {paths[-1]} ({bundle.manifest.models[0].precision}, {bundle.size_bytes} bytes)")
    return paths


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Make small real bundles for device tests.")
    parser.add_argument("--out", default=".cache/device-bundles")
    parser.add_argument("--recipes", default="fp32,full-int8,dynamic-int8")
    args = parser.parse_args()
    make_device_bundles(args.out, recipes=tuple(args.recipes.split(",")))
