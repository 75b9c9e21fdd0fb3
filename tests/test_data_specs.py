"""Recipes, targets and the manifest are strict JSON data; pre-processing does what its spec says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgepack.runtimes import recipe as recipes
from edgepack.runtimes import target as targets
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing, ResizeMode
from edgepack.runtimes.preprocess import fit, preprocess, resize, resize_numpy


@pytest.mark.parametrize("factory", list(recipes.RECIPES.values()))
def test_recipes_round_trip_json(factory) -> None:
    recipe = factory()
    assert recipes.Recipe.from_json(recipe.to_json()) == recipe


@pytest.mark.parametrize("target", list(targets.TARGETS.values()))
def test_targets_round_trip_json(target) -> None:
    assert targets.Target.from_json(target.to_json()) == target


def test_unknown_keys_and_bad_values_are_errors() -> None:
    data = recipes.full_int8().to_json()
    with pytest.raises(ConfigError, match="unknown key.*'calibraton'"):
        recipes.Recipe.from_json({**data, "calibraton": 3})
    with pytest.raises(ConfigError, match="not one of"):
        recipes.Recipe.from_json({**data, "precision": "int3"})
    with pytest.raises(ConfigError, match="needs precision full_int8"):
        dataclasses.replace(recipes.fp16(), io_dtype=recipes.IODType.INT8)
    with pytest.raises(ConfigError, match="expected an integer"):
        targets.Target.from_json({**targets.RPI4.to_json(), "cores": "four"})


def test_recipes_and_targets_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipes.fp32().precision = recipes.Precision.FP16  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        targets.RPI4.cores = 8  # type: ignore[misc]


def test_letterbox_crop_stretch_shapes() -> None:
    image = np.full((100, 200, 3), 200, np.uint8)
    assert fit(image, 64, 64, ResizeMode.STRETCH).shape == (64, 64, 3)
    box = fit(image, 64, 64, ResizeMode.LETTERBOX)
    assert box.shape == (64, 64, 3) and box[0, 0, 0] == 114 and box[32, 32, 0] == 200
    assert fit(image, 64, 64, ResizeMode.CROP).shape == (64, 64, 3)


def test_numpy_resize_fallback_close_to_opencv() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
    up_cv, up_np = resize(image, 80, 120).astype(int), resize_numpy(image, 80, 120).astype(int)
    assert np.mean(np.abs(up_cv - up_np)) < 2.0


def test_preprocess_color_layout_and_normalisation() -> None:
    bgr = np.zeros((10, 10, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    spec = Preprocessing(size=(10, 10), color=ColorOrder.RGB, scale=1 / 255, mean=(0.5,), std=(0.5,),
                         layout=Layout.NCHW)
    x = preprocess(bgr, spec)
    assert x.shape == (1, 3, 10, 10) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], 1.0)  # R channel first, (1 - .5) / .5
    np.testing.assert_allclose(x[0, 2], -1.0)
    gray = preprocess(bgr, Preprocessing(size=(5, 5), color=ColorOrder.GRAY))
    assert gray.shape == (1, 5, 5, 1)
    np.testing.assert_allclose(gray, round(0.299 * 255) / 255, atol=1e-6)
