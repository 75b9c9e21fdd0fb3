"""Shared fixtures: a real Fashion-MNIST CNN (trained once, cached) and real bundles made from it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "tests"


@pytest.fixture(scope="session")
def fashion_train() -> tuple[np.ndarray, np.ndarray]:
    from edgepack.examples.datasets import load_fashion_mnist

    return load_fashion_mnist("train", limit=12000)


@pytest.fixture(scope="session")
def fashion_test() -> tuple[np.ndarray, np.ndarray]:
    from edgepack.examples.datasets import load_fashion_mnist

    return load_fashion_mnist("test", limit=1000)


@pytest.fixture(scope="session")
def fashion_model_path() -> Path:
    """A small CNN trained on 12k real Fashion-MNIST images (≈85 % test accuracy), cached."""
    from edgepack.examples.fashion import train_fashion_cnn

    return train_fashion_cnn(CACHE / "fashion_small.keras", epochs=2, limit=12000)


@pytest.fixture(scope="session")
def calibration(fashion_train: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """120 real uint8 training images (pre-processed by the bundle spec)."""
    x, _ = fashion_train
    return x[np.random.default_rng(1).choice(len(x), 120, replace=False)]


@pytest.fixture(scope="session")
def bundle_factory(tmp_path_factory: pytest.TempPathFactory, fashion_model_path: Path, calibration: np.ndarray):
    """``make(recipe)`` → path of a real bundle of the Fashion CNN (cached per recipe for the session)."""
    import edgepack as ep
    from edgepack.examples.datasets import FASHION_LABELS
    from edgepack.examples.fashion import FASHION_PREPROCESSING

    made: dict[str, Path] = {}
    folder = tmp_path_factory.mktemp("bundles")

    def make(recipe: str = "fp32", **kwargs: object) -> Path:
        key = recipe + repr(sorted(kwargs.items()))
        if key not in made:
            bundle = ep.convert(fashion_model_path, calibration, target="rpi4", recipe=recipe,
                                labels=FASHION_LABELS, preprocessing=FASHION_PREPROCESSING, progress=False, **kwargs)
            made[key] = bundle.save(folder / f"fashion_{len(made)}_{recipe}.epk")
        return made[key]

    return make


@pytest.fixture(scope="module")
def bundles(bundle_factory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """Bundle A (fp32) and bundle B (full int8) of the real Fashion-MNIST CNN (store tests)."""
    return bundle_factory("fp32"), bundle_factory("full-int8")
