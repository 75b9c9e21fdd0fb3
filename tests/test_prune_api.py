"""``edgepack.prune`` / ``edgepack prune`` / ``convert --prune``: real Keras pruning, real conversions, real LiteRT
and ONNX Runtime measurements; the verdict follows the measured figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.converters.errors import PruningError
from edgepack.runtimes.errors import ConfigError


@pytest.fixture(scope="module")
def labelled(fashion_train: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = fashion_train
    return x[:1500], y[:1500]


def test_prune_channels_api_measures_both_models_and_saves(fashion_model_path: Path, labelled, fashion_test,
                                                           tmp_path: Path) -> None:
    import edgepack as ep

    xt, yt = fashion_test
    result = ep.prune(fashion_model_path, labelled, channels=0.5, epochs=1, recipe="fp32",
                      eval_data=(xt[:300], yt[:300]), progress=False)
    m = result.report["measured"]
    pr = result.report["pruning"]
    assert pr["params_after"] <= 0.6 * pr["params_before"]
    assert pr["macs_after"] < pr["macs_before"]
    assert pr["fine_tune_mode"] == "labels"
    assert m["model_bytes_after"] < m["model_bytes_before"]
    assert m["latency_p50_ms_before"] > 0 and m["latency_p50_ms_after"] > 0
    assert 0.0 <= m["accuracy_after"] <= 1.0 and m["eval_samples"] == 300
    speedup = m["latency_p50_ms_before"] / m["latency_p50_ms_after"]
    assert result.accepted == (speedup >= 1.05), result.reasons  # the verdict follows the measurement
    out = result.save(tmp_path / "pruned.keras")
    import keras

    again = keras.saving.load_model(out, compile=False)
    x = (labelled[0][:8, ..., None] / 255.0).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-5)
    saved = json.loads(out.with_name("pruned.prune.json").read_text())
    assert saved["pruning"]["channels"]["layers"]


def test_prune_without_labels_distils(fashion_model_path: Path, labelled) -> None:
    import edgepack as ep

    x, _ = labelled
    result = ep.prune(fashion_model_path, x[:600], channels=0.5, epochs=1, measure=False, progress=False)
    assert result.report["pruning"]["fine_tune_mode"] == "distill"


def test_convert_prune_then_quantize_records_it(fashion_model_path: Path, calibration: np.ndarray) -> None:
    from dataclasses import replace

    import edgepack as ep
    from edgepack.examples.fashion import FASHION_PREPROCESSING
    from edgepack.runtimes.recipe import PruneOptions, full_int8

    plain = ep.convert(fashion_model_path, calibration, target="rpi4", recipe="full-int8",
                       preprocessing=FASHION_PREPROCESSING, progress=False)
    rec = replace(full_int8(), prune=PruneOptions(channels=0.5, epochs=1))
    pruned = ep.convert(fashion_model_path, calibration, target="rpi4", recipe=rec,
                        preprocessing=FASHION_PREPROCESSING, progress=False)
    assert pruned.manifest.models[0].bytes < 0.7 * plain.manifest.models[0].bytes
    report = pruned.report["models"][0]["pruning"]
    assert report["fine_tune_mode"] == "distill" and report["channels"]["layers"]
    assert pruned.manifest.models[0].recipe.prune == rec.prune  # the recipe in the bundle says it was pruned


def test_cli_convert_prune_flag(fashion_model_path: Path, calibration: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "cal.npy", calibration[:60])
    out = tmp_path / "p.epk"
    rc = main(["convert", str(fashion_model_path), "--target", "rpi4", "--recipe", "fp32", "--calibration",
               str(tmp_path / "cal.npy"), "--input-size", "28x28", "--color", "GRAY", "--prune",
               "sparsity=0.5,epochs=0", "-o", str(out)])
    assert rc == 0 and out.is_file()
    from edgepack.runtimes import load

    session = load(out)
    assert session.bundle.manifest.models[0].recipe.prune.sparsity == 0.5


def test_cli_prune_rejects_what_does_not_pay_and_writes_nothing(tmp_path: Path, capsys) -> None:
    onnx_path = _tiny_onnx(tmp_path)
    out = tmp_path / "sparse.onnx"
    rc = main(["prune", str(onnx_path), "--sparsity", "0.05", "--epochs", "0", "--recipe", "fp32", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 3, text
    assert not out.exists() and "does not shrink" in text
    report = json.loads(out.with_name("sparse.prune.json").read_text())
    assert report["accepted"] is False and report["ratios"]["bundle_bytes"] > 0.9
    rc = main(["prune", str(onnx_path), "--sparsity", "0.05", "--epochs", "0", "--recipe", "fp32", "--force",
               "-o", str(out)])
    assert rc == 0 and out.is_file()


@pytest.mark.parametrize("args, message", [
    (["--channels", "1.5"], "strictly between 0 and 1"),
    (["--sparsity", "0"], "strictly between 0 and 1"),
    (["--channels", "0.5", "--epochs", "0"], "channel removal needs the framework model"),
])
def test_cli_prune_bad_input_is_one_line(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    onnx_path = _tiny_onnx(tmp_path)
    rc = main(["prune", str(onnx_path), *args, "-o", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()


def test_prune_refuses_what_it_cannot_prune(tmp_path: Path) -> None:
    import edgepack as ep

    bogus = tmp_path / "m.tflite"
    bogus.write_bytes(b"x")
    with pytest.raises(PruningError, match="prune its source"):
        ep.prune(bogus, channels=0.5, epochs=0, measure=False)
    with pytest.raises(ConfigError, match="channels=R or sparsity=R"):
        ep.prune(_tiny_onnx(tmp_path), epochs=0, measure=False)


def _tiny_onnx(folder: Path) -> Path:
    """A real two-layer MLP as ONNX (onnx.helper), 64 -> 256 -> 10, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(64, 256)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(256, 10)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "mlp.onnx"
    onnx.save(model, path)
    return path


def test_prune_torch_module_channels_measured_in_onnx_runtime(fashion_train, fashion_test) -> None:
    """ep.prune on a PyTorch module: torch-pruning, fine-tuning, both exported to ONNX and timed in ORT."""
    import torch

    import edgepack as ep
    from edgepack.examples.mobilenet import mobilenet_torch

    torch.set_num_threads(1)
    module = mobilenet_torch(width=0.5)
    x, y = fashion_train
    xt, yt = fashion_test
    result = ep.prune(module, (x[:400], y[:400]), channels=0.5, epochs=1, recipe="fp32", eval_data=(xt[:200], yt[:200]),
                      example_input=torch.zeros(1, 1, 28, 28), progress=False)
    pr, m = result.report["pruning"], result.report["measured"]
    assert pr["framework"] == "torch" and pr["params_after"] < 0.5 * pr["params_before"]
    assert m["format"] == "onnx" and m["model_bytes_after"] < m["model_bytes_before"]
    assert m["latency_p50_ms_after"] > 0 and m["eval_samples"] == 200
    assert sum(p.numel() for p in module.parameters()) == pr["params_before"]  # the user's module is untouched


def test_prune_torch_sparsity_survives_fine_tuning(fashion_train) -> None:
    import torch

    import edgepack as ep
    from edgepack.converters.pruning.torch_sparsity import weight_sparsity
    from edgepack.examples.mobilenet import mobilenet_torch

    torch.set_num_threads(1)
    x, _ = fashion_train
    result = ep.prune(mobilenet_torch(width=0.5), x[:300], sparsity=0.6, epochs=1, measure=False,
                      example_input=torch.zeros(1, 1, 28, 28), progress=False)
    assert result.report["pruning"]["fine_tune_mode"] == "distill"
    # pruned again after training: the zeros are where they were claimed
    assert abs(weight_sparsity(result.model)["sparsity"] - 0.6) < 0.02


def test_cli_prune_plain_image_folder_distils(fashion_model_path: Path, labelled, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for k, image in enumerate(labelled[0][:40]):
        Image.fromarray(image).save(folder / f"{k:03d}.png")
    out = tmp_path / "p.keras"
    rc = main(["prune", str(fashion_model_path), "--channels", "0.5", "--epochs", "1", "--data", str(folder),
               "--recipe", "fp32", "--force", "-o", str(out)])
    assert rc == 0 and out.is_file()
    report = json.loads(out.with_name("p.prune.json").read_text())
    assert report["pruning"]["fine_tune_mode"] == "distill" and report["data"]["labels"] is False
    assert report["measured"]["accuracy_metric"].startswith("top-1 agreement")
