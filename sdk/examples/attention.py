"""A Fashion-MNIST CNN with softmax attention pooling: a real model that plain int8 hurts (mixed precision demo).

Attention pooling (a softmax over the 196 positions of a 14x14 feature map weighs the features that are summed) is a
common head. In a full-int8 TFLite model every SOFTMAX output has the fixed scale 1/256 (zero point -128): weights
near 1/196 ≈ 0.005 land on 0, 1 or 2 steps, most small ones become 0 and the weights no longer sum to 1, so the pooled
features are distorted. Calibration cannot fix a fixed scale; keeping that one op in float (its output re-quantized
with the calibrated range, ≈ 1/255 of the largest weight) can. Nothing here is hand-tuned: the model is trained on
the real data like any other (:func:`train_attention_cnn`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepack.examples.fashion import train_on_fashion


def attention_cnn(*, heads: int = 2, seed: int = 0) -> Any:
    """Untrained: two convs, ``heads`` softmax-attention poolings of the 14x14 feature map, a dense layer, 10 logits."""
    from edgepack.converters.tfenv import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    image = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(image)
    x = layers.MaxPooling2D()(x)
    features = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    pooled = []
    for head in range(heads):
        scores = layers.Reshape((196,))(layers.Conv2D(1, 1, name=f"attention_scores_{head}")(features))
        weights = layers.Reshape((14, 14, 1))(layers.Softmax(name=f"attention_{head}")(scores))
        mean = layers.GlobalAveragePooling2D()(layers.Multiply()([features, weights]))
        pooled.append(layers.Rescaling(196.0, name=f"attention_pooled_{head}")(mean))  # mean x 196 = weighted sum
    x = layers.Concatenate()(pooled) if heads > 1 else pooled[0]
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(image, layers.Dense(10, name="logits")(x), name="attention_cnn")


def train_attention_cnn(path: str | Path, *, epochs: int = 4, limit: int | None = 12000, heads: int = 2,
                        seed: int = 0) -> Path:
    """Train on the real Fashion-MNIST training set and save as ``.keras`` (cached: reused if present)."""
    return train_on_fashion(path, lambda: attention_cnn(heads=heads, seed=seed), epochs=epochs, limit=limit)
