"""A MobileNet-style classifier (inverted residuals, depthwise convs, residual adds) in Keras 3 and PyTorch.

Both take Fashion-MNIST padded to 32x32 (one channel) and give 10 logits: a stride-2 stem, five inverted-residual
blocks (32 → 64 → 96 channels, expansion 2, at 16x16 then 8x8), a 1x1 head conv, global average pooling and a
Dense/Linear classifier. The convs are wide enough that latency is dominated by them, so removing channels shows in
measured latency; the stride-2 stem keeps training on a 2-core CPU to about a minute per epoch.
Used by the pruning tests and ``benchmarks/pruning_mobilenet.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepack.examples.datasets import load_fashion_mnist

#: (expansion, output channels, stride) of each inverted-residual block, before ``width`` scaling.
BLOCKS: tuple[tuple[int, int, int], ...] = ((2, 32, 1), (2, 64, 2), (2, 64, 1), (2, 96, 1), (2, 96, 1))
STEM = 32
HEAD = 128


def _ch(c: int, width: float) -> int:
    return max(8, round(c * width / 8) * 8)


def fashion_32(split: str = "train", *, limit: int | None = None,
               layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as float32 in [0, 1], zero-padded to 32x32: ``(N, 1, 32, 32)`` (NCHW) or ``(N, 32, 32, 1)``."""
    x, y = load_fashion_mnist(split, limit=limit)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255.0
    return (x[:, None] if layout == "NCHW" else x[..., None]), y.astype(np.int64)


# ----------------------------------------------------------------------------------------------------- Keras 3
def mobilenet_keras(*, width: float = 1.0, input_shape: tuple[int, int, int] = (32, 32, 1), classes: int = 10,
                    seed: int = 0) -> Any:
    """An untrained Functional MobileNet-style model (NHWC input, ``classes`` logits)."""
    from edgepack.converters.tfenv import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(_ch(STEM, width), 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="stem_bn")(x))
    cin = _ch(STEM, width)
    for i, (t, c, s) in enumerate(BLOCKS):
        cout, hidden = _ch(c, width), cin * t
        y = layers.Conv2D(hidden, 1, use_bias=False, name=f"b{i}_expand")(x)
        y = layers.ReLU(6.0)(layers.BatchNormalization(name=f"b{i}_expand_bn")(y))
        y = layers.DepthwiseConv2D(3, strides=s, padding="same", use_bias=False, name=f"b{i}_dw")(y)
        y = layers.ReLU(6.0)(layers.BatchNormalization(name=f"b{i}_dw_bn")(y))
        y = layers.Conv2D(cout, 1, use_bias=False, name=f"b{i}_project")(y)
        y = layers.BatchNormalization(name=f"b{i}_project_bn")(y)
        x = layers.Add(name=f"b{i}_add")([x, y]) if s == 1 and cin == cout else y
        cin = cout
    x = layers.Conv2D(_ch(HEAD, width), 1, use_bias=False, name="head")(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="head_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_fashion")


def train_mobilenet_keras(path: str | Path, *, epochs: int = 3, limit: int | None = None, seed: int = 0) -> Path:
    """Train on real Fashion-MNIST (32x32) and save as ``.keras`` (cached: reused if present)."""
    path = Path(path)
    if path.is_file():
        return path
    import keras

    x, y = fashion_32("train", limit=limit, layout="NHWC")
    model = mobilenet_keras(seed=seed)
    steps = epochs * ((len(x) + 127) // 128)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------------- PyTorch
def mobilenet_torch(*, width: float = 1.0, in_channels: int = 1, classes: int = 10, seed: int = 0) -> Any:
    """An untrained MobileNet-style ``nn.Module`` (NCHW input, ``classes`` logits); same layout as the Keras one."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    def cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
        mods: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                                 nn.BatchNorm2d(cout)]
        return nn.Sequential(*mods, nn.ReLU6()) if act else nn.Sequential(*mods)

    class InvertedResidual(nn.Module):  # type: ignore[misc]
        def __init__(self, cin: int, cout: int, t: int, stride: int) -> None:
            super().__init__()
            hidden = cin * t
            self.use_res = stride == 1 and cin == cout
            self.block = nn.Sequential(cbr(cin, hidden, 1), cbr(hidden, hidden, 3, stride, groups=hidden),
                                       cbr(hidden, cout, 1, act=False))

        def forward(self, x: Any) -> Any:
            return x + self.block(x) if self.use_res else self.block(x)

    class MobileNet(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            cin = _ch(STEM, width)
            layers: list[nn.Module] = [cbr(in_channels, cin, 3, 2)]
            for t, c, s in BLOCKS:
                layers.append(InvertedResidual(cin, _ch(c, width), t, s))
                cin = _ch(c, width)
            layers.append(cbr(cin, _ch(HEAD, width), 1))
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(_ch(HEAD, width), classes)

        def forward(self, x: Any) -> Any:
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    return MobileNet()


def train_torch(module: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int = 128,
                learning_rate: float = 2e-3, seed: int = 0) -> Any:
    """Plain supervised training (Adam, cross-entropy, cosine decay); returns ``module`` in eval mode."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    data, labels = torch.from_numpy(x), torch.from_numpy(y)
    steps = max(1, epochs * ((len(data) + batch_size - 1) // batch_size))
    opt = torch.optim.Adam(module.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=steps)
    module.train()
    module.to(memory_format=torch.channels_last)  # ~2x faster convolutions on the CPU
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(data[idx].contiguous(memory_format=torch.channels_last)),
                                                   labels[idx])
            loss.backward()
            opt.step()
            sched.step()
    return module.to(memory_format=torch.contiguous_format).eval()


def train_mobilenet_torch(path: str | Path, *, epochs: int = 3, limit: int | None = None, seed: int = 0) -> Path:
    """Train the PyTorch model on real Fashion-MNIST (32x32) and save its ``state_dict`` (cached: reused)."""
    import torch

    path = Path(path)
    if path.is_file():
        return path
    x, y = fashion_32("train", limit=limit)
    model = train_torch(mobilenet_torch(seed=seed), x, y, epochs=epochs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.pt")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def load_mobilenet_torch(path: str | Path) -> Any:
    """The PyTorch model with the weights ``train_mobilenet_torch`` saved, in eval mode."""
    import torch

    model = mobilenet_torch()
    model.load_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))
    return model.eval()
