"""Structured channel removal on real Keras 3 models: channel counts, sliced weights, dependency groups (residual
Add, Concatenate, Flatten → Dense, depthwise), protected heads, save → reload → convert → LiteRT, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.converters.errors import PruningError
from edgepack.converters.tfenv import import_tensorflow
from edgepack.runtimes.recipe import Importance

import_tensorflow()
import keras  # noqa: E402

from edgepack.converters.pruning.keras_channels import remove_channels  # noqa: E402
from edgepack.converters.pruning.keras_stats import keras_params_macs  # noqa: E402
from edgepack.examples.fashion import FASHION_PREPROCESSING, fashion_cnn  # noqa: E402

L = keras.layers


@pytest.fixture(autouse=True)
def _fresh_layer_names() -> None:
    keras.backend.clear_session()  # auto names (conv2d, dense...) restart per test


def mobile_block_model() -> keras.Model:
    """Conv-BN-ReLU6 stem, an inverted residual (expand, depthwise, project, Add), Concatenate, logits."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    x = L.ReLU(6.0)(L.BatchNormalization(name="stem_bn")(x))
    y = L.ReLU(6.0)(L.BatchNormalization(name="expand_bn")(L.Conv2D(32, 1, use_bias=False, name="expand")(x)))
    y = L.ReLU(6.0)(L.BatchNormalization(name="dw_bn")(L.DepthwiseConv2D(3, padding="same", name="dw")(y)))
    y = L.BatchNormalization(name="project_bn")(L.Conv2D(16, 1, use_bias=False, name="project")(y))
    x = L.Add(name="residual")([x, y])
    a = L.Conv2D(8, 1, activation="relu", name="branch_a")(x)
    b = L.SeparableConv2D(8, 3, padding="same", activation="relu", name="branch_b")(x)
    c = L.Conv2D(16, 1, activation="relu", name="mix")(L.Concatenate(name="concat")([a, b]))
    out = L.Dense(5, name="logits")(L.GlobalAveragePooling2D()(c))
    model = keras.Model(inp, out, name="mobile_block")
    for layer in model.layers:  # non-trivial batch-norm statistics
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 1.5, n)])
    return model


def silence(model: keras.Model, channels: dict[str, np.ndarray]) -> None:
    """Make the given output channels exactly zero after each layer's batch-norm/activation (and weigh nothing)."""
    for name, idx in channels.items():
        layer = model.get_layer(name)
        weights = layer.get_weights()
        kernel = 1 if isinstance(layer, L.SeparableConv2D) else 0
        if isinstance(layer, L.DepthwiseConv2D):
            weights[0][:, :, idx, :] = 0.0
        else:
            weights[kernel][..., idx] = 0.0
        if len(weights) > kernel + 1:
            weights[kernel + 1][idx] = 0.0
        layer.set_weights(weights)
        bn = f"{name}_bn"
        if bn in {ly.name for ly in model.layers}:
            gamma, beta, mean, var = model.get_layer(bn).get_weights()
            beta[idx], mean[idx] = 0.0, 0.0
            model.get_layer(bn).set_weights([gamma, beta, mean, var])


def test_fashion_cnn_channel_counts_and_params() -> None:
    model = fashion_cnn()
    pruned, plan = remove_channels(model, ratio=0.5)
    assert plan.layers == {"conv2d": (32, 16), "conv2d_1": (64, 32), "dense": (128, 64)}
    assert plan.protected == ("logits",)
    sizes = (("conv2d", "filters"), ("conv2d_1", "filters"), ("dense", "units"), ("logits", "units"))
    assert [pruned.get_layer(n).get_config()[k] for n, k in sizes] == [16, 32, 64, 10]
    assert pruned.get_layer("dense").get_weights()[0].shape == (7 * 7 * 32, 64)  # Flatten rows follow conv2d_1
    params, macs = keras_params_macs(model)
    new_params, new_macs = keras_params_macs(pruned)
    assert params == model.count_params() and new_params <= 0.6 * params and new_macs <= 0.3 * macs
    assert macs == 28 * 28 * 9 * 32 + 14 * 14 * 9 * 32 * 64 + 3136 * 128 + 128 * 10
    assert plan.to_json()["layers"]["conv2d"] == [32, 16]
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]


def test_importance_removes_the_silenced_filters_and_flatten_rows_follow() -> None:
    model = fashion_cnn()
    for name in ("conv2d", "conv2d_1"):  # positive filters on positive images: every live channel responds
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([np.abs(kernel), bias + 0.01])
    rng = np.random.default_rng(0)
    dead = {"conv2d": np.sort(rng.choice(32, 16, replace=False)),
            "conv2d_1": np.sort(rng.choice(64, 32, replace=False))}
    silence(model, dead)
    x = rng.uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    for importance in (Importance.L1, Importance.L2, Importance.ACTIVATION):
        pruned, plan = remove_channels(model, ratio=0.5, importance=importance, data=x, protect=["dense"])
        for name, idx in dead.items():
            assert plan.kept[name] == tuple(sorted(set(range(len(idx) * 2)) - set(idx.tolist())))
        assert "dense" in plan.protected and "dense" not in plan.layers
        # only zero channels went: the outputs are the same (this checks the Flatten → Dense row mapping)
        np.testing.assert_allclose(pruned(x), model(x), atol=1e-5)


def test_functional_residual_depthwise_concat_block() -> None:
    model = mobile_block_model()
    rng = np.random.default_rng(1)
    dead_residual = np.sort(rng.choice(16, 8, replace=False))
    expand = np.sort(rng.choice(32, 16, replace=False))
    dead = {"stem": dead_residual, "project": dead_residual, "expand": expand, "dw": expand,
            "branch_a": np.array([0, 3, 5, 6]), "branch_b": np.array([1, 2, 4, 7]), "mix": np.arange(0, 16, 2)}
    silence(model, dead)
    pruned, plan = remove_channels(model, ratio=0.5)
    assert plan.layers["stem"] == plan.layers["project"] == plan.layers["stem_bn"] == (16, 8)  # one Add group
    assert plan.layers["expand"] == plan.layers["dw"] == plan.layers["dw_bn"] == (32, 16)
    assert plan.layers["branch_a"] == plan.layers["branch_b"] == (8, 4) and plan.protected == ("logits",)
    for name, idx in dead.items():
        if name != "dw":
            assert set(plan.kept[name]).isdisjoint(idx.tolist()), name
    x = rng.uniform(0, 1, (4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(pruned(x, training=False), model(x, training=False), atol=1e-5)
    # the kept channels' weights are the original slices
    keep = {n: np.array(k) for n, k in plan.kept.items()}
    old, new = model.get_layer("expand").get_weights()[0], pruned.get_layer("expand").get_weights()[0]
    np.testing.assert_array_equal(new, old[:, :, keep["stem"], :][..., keep["expand"]])
    old, new = model.get_layer("dw").get_weights(), pruned.get_layer("dw").get_weights()
    np.testing.assert_array_equal(new[0], old[0][:, :, keep["expand"], :])
    np.testing.assert_array_equal(new[1], old[1][keep["expand"]])
    concat_rows = np.concatenate([keep["branch_a"], 8 + keep["branch_b"]])
    old, new = model.get_layer("mix").get_weights()[0], pruned.get_layer("mix").get_weights()[0]
    np.testing.assert_array_equal(new, old[:, :, concat_rows, :][..., keep["mix"]])
    old, new = model.get_layer("branch_b").get_weights(), pruned.get_layer("branch_b").get_weights()
    np.testing.assert_array_equal(new[0], old[0][:, :, keep["stem"], :])
    np.testing.assert_array_equal(new[1], old[1][:, :, keep["stem"], :][..., keep["branch_b"]])
    assert keras_params_macs(pruned)[1] < 0.4 * keras_params_macs(model)[1]


def test_two_head_detector_keeps_both_heads() -> None:
    keras.utils.set_random_seed(4)
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="backbone_1")(inp)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="backbone_2")(x)
    cls = L.Reshape((-1, 3), name="class_reshape")(L.Conv2D(2 * 3, 1, name="class_head")(x))
    box = L.Conv2D(16, 3, padding="same", activation="relu", name="box_tower")(x)
    box = L.Reshape((-1, 4), name="boxes")(L.Conv2D(2 * 4, 1, name="box_head")(box))
    model = keras.Model(inp, [cls, box], name="detector")
    pruned, plan = remove_channels(model, ratio=0.5)
    assert set(plan.protected) == {"class_head", "box_head"}
    assert plan.layers == {"backbone_1": (32, 16), "backbone_2": (32, 16), "box_tower": (16, 8)}
    x_in = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    assert [o.shape for o in pruned(x_in)] == [o.shape for o in model(x_in)] == [(2, 128, 3), (2, 128, 4)]


def test_save_reload_convert_and_run_in_litert(fashion_model_path: Path, calibration: np.ndarray,
                                               tmp_path: Path) -> None:
    import edgepack as ep
    from edgepack.runtimes import load

    model = keras.models.load_model(fashion_model_path)
    x = calibration[:16, :, :, None].astype(np.float32) / 255.0
    pruned, _ = remove_channels(model, ratio=0.5, importance=Importance.ACTIVATION, data=x)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    reloaded = keras.models.load_model(path)
    expected = pruned.predict(x, verbose=0)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-5)
    for recipe in ("fp32", "full-int8"):
        bundle = ep.convert(path, calibration, recipe=recipe, preprocessing=FASHION_PREPROCESSING, progress=False)
        saved = bundle.save(tmp_path / f"pruned_{recipe}.epk")
        if recipe == "fp32":
            session = load(saved, delegates=("xnnpack", "cpu"))
            got = np.concatenate([session.run(x[i:i + 1])[0] for i in range(len(x))])
            np.testing.assert_allclose(got, expected, atol=1e-4)


def test_bad_input_is_a_pruning_error() -> None:
    model = fashion_cnn()
    for ratio in (0, 1.5, 1.0, -0.1, True):
        with pytest.raises(PruningError, match="between 0 and 1"):
            remove_channels(model, ratio=ratio)
    with pytest.raises(PruningError, match="round_to"):
        remove_channels(model, ratio=0.5, round_to=0)
    with pytest.raises(PruningError, match="needs data"):
        remove_channels(model, ratio=0.5, importance=Importance.ACTIVATION)
    with pytest.raises(PruningError, match="does not fit"):
        remove_channels(model, ratio=0.5, importance=Importance.ACTIVATION, data=np.zeros((4, 28, 28)))
    with pytest.raises(PruningError, match="not in the model: 'nope'"):
        remove_channels(model, ratio=0.5, protect=["nope"])
    only_dense = keras.Sequential([keras.Input((8,)), L.Dense(3, name="out")])
    with pytest.raises(PruningError, match="nothing to prune"):
        remove_channels(only_dense, ratio=0.5)


def test_unsupported_layer_is_named_unless_protected() -> None:
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, name="conv")(inp)
    x = L.Conv2DTranspose(8, 3, name="up")(x)
    out = L.Dense(2, name="logits")(L.GlobalAveragePooling2D()(L.Conv2D(16, 1, name="conv_b")(x)))
    model = keras.Model(inp, out)
    with pytest.raises(PruningError, match=r"'up' \(Conv2DTranspose.*protect=\['up'\]"):
        remove_channels(model, ratio=0.5)
    pruned, plan = remove_channels(model, ratio=0.5, protect=["up"])
    assert plan.layers == {"conv_b": (16, 8)} and "conv" in plan.protected
    x_in = np.zeros((1, 8, 8, 3), np.float32)
    assert pruned(x_in).shape == model(x_in).shape


def test_squeeze_excite_reshape_follows_the_channels(tmp_path: Path) -> None:
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inp)
    se = L.Dense(16, activation="sigmoid", name="excite")(L.Dense(8, activation="relu", name="squeeze")(
        L.GlobalAveragePooling2D()(x)))
    x = L.Multiply(name="scale")([x, L.Reshape((1, 1, 16), name="se_reshape")(se)])
    out = L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(L.Conv2D(8, 1, name="conv_out")(x)))
    model = keras.Model(inp, out)
    pruned, plan = remove_channels(model, ratio=0.5)
    assert plan.layers["conv"] == plan.layers["excite"] == plan.layers["se_reshape"] == (16, 8)
    assert pruned.get_layer("se_reshape").get_config()["target_shape"] == (1, 1, 8)
    pruned.save(tmp_path / "se.keras")
    x_in = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "se.keras")(x_in), pruned(x_in), atol=1e-5)


def test_keras_ops_calls_are_followed_or_named() -> None:
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    y = keras.ops.relu(L.Conv2D(16, 3, padding="same", name="c2")(x))
    z = keras.ops.concatenate([x, y * 2.0], axis=-1)
    out = L.Dense(3, name="logits")(L.GlobalAveragePooling2D()(L.Conv2D(8, 1, name="c3")(z)))
    pruned, plan = remove_channels(keras.Model(inp, out), ratio=0.5)
    assert plan.layers == {"c1": (16, 8), "c2": (16, 8), "c3": (8, 4)}
    assert pruned.get_layer("c3").get_weights()[0].shape == (1, 1, 16, 4)
    odd = keras.Model(inp, L.Dense(2, name="logits")(L.Flatten()(keras.ops.reshape(x, (-1, 16, 8, 8)))))
    with pytest.raises(PruningError, match=r"'reshape' \(Reshape: keras.ops"):
        remove_channels(odd, ratio=0.5)


@pytest.mark.parametrize(("count", "ratio", "round_to", "kept"), [
    (32, 0.5, 4, 16), (10, 0.5, 4, 4), (7, 0.05, 4, 4), (4, 0.5, 4, 4), (3, 0.9, 4, 3), (100, 0.3, 8, 72),
    (64, 0.99, 8, 8), (48, 0.3, 16, 32),
])
def test_kept_counts_are_multiples_never_zero_never_more(count: int, ratio: float, round_to: int, kept: int) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), L.Dense(count, name="hidden"), L.Dense(2, name="logits")])
    if kept == count:
        with pytest.raises(PruningError, match="nothing to prune"):
            remove_channels(model, ratio=ratio, round_to=round_to)
        return
    pruned, plan = remove_channels(model, ratio=ratio, round_to=round_to)
    assert plan.layers == {"hidden": (count, kept)} and pruned.get_layer("hidden").units == kept
