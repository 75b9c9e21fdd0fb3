"""Small real example models trained on offline data (for the demo, tests and benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepack.runtimes.manifest import ColorOrder, Preprocessing

from .datasets import load_fashion_mnist

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
    path = Path(path)
    if path.is_file():
        return path
    import keras

    x, y = load_fashion_mnist("train", limit=limit)
    model = fashion_cnn(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[..., None].astype("float32") / 255.0, y, epochs=epochs, batch_size=128, verbose=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    return path
