"""PyTorch pruning: torch-pruning channel removal, torch.nn.utils.prune sparsity, fine-tuning (labels / distilled).

Tiny real models (a small CNN trained on a Fashion-MNIST subset, the MobileNet-style example at half width, a
two-head detector); pruned models go through the real ONNX export and ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.converters.convert import convert
from edgepack.converters.errors import PruningError
from edgepack.converters.pruning.torch_channels import output_layers, remove_channels_torch, torch_params_macs
from edgepack.converters.pruning.torch_finetune import finetune_torch
from edgepack.converters.pruning.torch_sparsity import sparsify_torch
from edgepack.examples.datasets import load_fashion_mnist
from edgepack.examples.mobilenet import mobilenet_torch, train_torch
from edgepack.runtimes import load
from edgepack.runtimes.recipe import Importance

X1 = torch.zeros(1, 1, 28, 28)


class SmallCNN(nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 32, 3, 2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 32, 3, 2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 10)

    def forward(self, x: Any) -> Any:
        return self.head(self.features(x))


class TwoHeadDetector(nn.Module):  # type: ignore[misc]
    """SSD-style: a conv backbone, a class head (3 anchors x 4 classes) and a box head (3 anchors x 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                                      nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                                      nn.Conv2d(32, 48, 1), nn.ReLU())
        self.cls_head = nn.Conv2d(48, 12, 3, padding=1)
        self.box_head = nn.Conv2d(48, 12, 3, padding=1)

    def forward(self, x: Any) -> Any:
        f = self.backbone(x)
        n = x.shape[0]
        return (self.cls_head(f).permute(0, 2, 3, 1).reshape(n, -1, 4),
                self.box_head(f).permute(0, 2, 3, 1).reshape(n, -1, 4))


class OwnParameter(nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3)
        self.scale = nn.Parameter(torch.ones(1, 16, 1, 1) * 2)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x: Any) -> Any:
        return self.out(self.conv(x) * self.scale)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """One intra-op thread: on a small shared CPU, torch's thread pool spinning costs more than it gives."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_fashion_mnist("train", limit=2500)
    xt, yt = load_fashion_mnist("test", limit=500)
    return (x[:, None].astype(np.float32) / 255.0, y.astype(np.int64),
            xt[:, None].astype(np.float32) / 255.0, yt.astype(np.int64))


@pytest.fixture(scope="module")
def trained(fashion: tuple[np.ndarray, ...]) -> Any:
    torch.manual_seed(0)
    x, y = fashion[0], fashion[1]
    return train_torch(SmallCNN(), x, y, epochs=3, batch_size=64, learning_rate=1e-2)


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def test_channels_as_claimed_and_rounded() -> None:
    model = SmallCNN()
    pruned, plan = remove_channels_torch(model, X1, ratio=0.5, round_to=4)
    assert plan["features.0"] == (32, 16) and plan["features.3"] == (32, 16)
    assert plan["head"] == (10, 10)  # the output layer is found and kept
    assert pruned.features[0].out_channels == 16 and pruned.features[1].num_features == 16
    assert pruned.head.in_features == 16 and pruned.head.out_features == 10
    assert model.features[0].out_channels == 32  # the input model is untouched
    assert _predict(pruned, np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    # round_to rounds the channels kept down to its multiple: 32 * 0.7 = 22.4 → 22 → 20 (4) or 16 (8)
    assert remove_channels_torch(model, X1, ratio=0.3, round_to=4)[1]["features.0"] == (32, 20)
    assert remove_channels_torch(model, X1, ratio=0.3, round_to=8)[1]["features.0"] == (32, 16)
    assert remove_channels_torch(model, X1, ratio=0.3, round_to=1)[1]["features.0"] == (32, 22)
    params, macs = torch_params_macs(model, X1)
    p_params, p_macs = torch_params_macs(pruned, X1)
    assert p_params < 0.5 * params and p_macs < 0.5 * macs


def test_protect_keeps_a_layer() -> None:
    _, plan = remove_channels_torch(SmallCNN(), X1, ratio=0.5, protect=["features.3"])
    assert plan["features.3"] == (32, 32) and plan["features.0"] == (32, 16)


def test_residual_and_depthwise_pruned_consistently() -> None:
    model = mobilenet_torch(width=0.5).eval()
    x = torch.randn(2, 1, 32, 32)
    pruned, plan = remove_channels_torch(model, x[:1], ratio=0.5, round_to=4)
    assert plan["classifier"] == (10, 10)
    assert sum(a for _, a in plan.values()) < 0.6 * sum(b for b, _ in plan.values())
    for block in pruned.features[1:6]:
        expand, dw, project = (seq[0] for seq in block.block)
        assert dw.groups == dw.in_channels == dw.out_channels == expand.out_channels  # depthwise stays depthwise
        assert project.in_channels == dw.out_channels
        if block.use_res:  # the residual add keeps both sides the same width
            assert project.out_channels == expand.in_channels
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)


def test_two_head_detector_keeps_both_heads() -> None:
    model = TwoHeadDetector().eval()
    x = torch.randn(1, 3, 32, 32)
    assert sorted(output_layers(model, x)) == ["box_head", "cls_head"]
    pruned, plan = remove_channels_torch(model, x, ratio=0.5)
    assert plan["cls_head"] == (12, 12) and plan["box_head"] == (12, 12)
    assert plan["backbone.5"] == (48, 24) and plan["backbone.0"] == (32, 16)
    with torch.no_grad():
        before, after = model(x), pruned(x)
    assert [t.shape for t in after] == [t.shape for t in before] == [(1, 768, 4)] * 2


def test_activation_importance_needs_and_uses_data(fashion: tuple[np.ndarray, ...]) -> None:
    with pytest.raises(PruningError, match="data="):
        remove_channels_torch(SmallCNN(), X1, ratio=0.5, importance=Importance.ACTIVATION)
    pruned, plan = remove_channels_torch(SmallCNN(), X1, ratio=0.5, importance=Importance.ACTIVATION,
                                         data=fashion[0][:64])
    assert plan["features.3"] == (32, 16)
    assert not any(hasattr(m, "_importance") for m in pruned.modules())


@pytest.mark.parametrize("global_sparsity", [True, False])
def test_sparsity_reached_and_permanent(global_sparsity: bool) -> None:
    model = mobilenet_torch(width=0.5)
    sparse, report = sparsify_torch(model, sparsity=0.5, global_sparsity=global_sparsity)
    assert abs(report["sparsity"] - 0.5) <= 0.01
    if not global_sparsity:
        assert all(abs(s - 0.5) <= 0.01 for name, s in report["layers"].items()
                   if sparse.get_submodule(name).weight.numel() >= 100)
    names = [n for n, _ in sparse.named_parameters()] + [n for n, _ in sparse.named_buffers()]
    assert not any(n.endswith(("_orig", "_mask")) for n in names)
    assert not any(getattr(m, "_forward_pre_hooks", None) for m in sparse.modules())
    assert float((sparse.features[0][0].weight == 0).float().mean()) > 0
    assert float((model.features[0][0].weight == 0).float().mean()) == 0  # the input model is untouched


def test_pruned_model_exports_to_onnx_and_runs_in_ort(trained: Any, fashion: tuple[np.ndarray, ...],
                                                       tmp_path: Path) -> None:
    x, y, xt, _ = fashion
    pruned, _ = remove_channels_torch(trained, X1, ratio=0.5)
    info = finetune_torch(pruned, x[:1500], y[:1500], epochs=1, progress=False)
    assert info["mode"] == "labels" and info["epochs_run"] == 1
    bundle = convert(pruned, xt[:120], recipe="fp32", format="onnx", example_input=X1, progress=False)
    path = bundle.save(tmp_path / "pruned.epk")
    session = load(path)
    got = session.run(xt[:8])[0]
    np.testing.assert_allclose(got, _predict(pruned, xt[:8]), atol=1e-4)
    qdq = convert(pruned, xt[:200], recipe="qdq-int8", format="onnx", example_input=X1, progress=False)
    agree = (load(qdq.save(tmp_path / "q.epk")).run(xt[:100])[0].argmax(1) == _predict(pruned, xt[:100]).argmax(1))
    assert agree.mean() >= 0.9


def test_distillation_without_labels_improves_agreement(trained: Any, fashion: tuple[np.ndarray, ...]) -> None:
    x, _, xt, _ = fashion
    student, _ = remove_channels_torch(trained, X1, ratio=0.5)
    teacher_top1 = _predict(trained, xt).argmax(1)
    before = (_predict(student, xt).argmax(1) == teacher_top1).mean()
    info = finetune_torch(student, x[:2000], teacher=trained, epochs=2, learning_rate=3e-3, progress=False)
    after = (_predict(student, xt).argmax(1) == teacher_top1).mean()
    assert info["mode"] == "distill" and len(info["val_loss"]) == info["epochs_run"]
    assert after > before + 0.2 and after >= 0.7


def test_early_stop_restores_best(fashion: tuple[np.ndarray, ...]) -> None:
    x, y = fashion[0][:200], fashion[1][:200]
    torch.manual_seed(0)
    info = finetune_torch(SmallCNN(), x, y, epochs=30, batch_size=16, learning_rate=0.5, validation_split=0.5,
                          progress=False)  # far too high a rate: the validation loss soon stops improving
    assert info["stopped_early"] and info["epochs_run"] < 30 and len(info["val_loss"]) == info["epochs_run"]
    assert info["best_epoch"] == int(np.argmin(info["val_loss"])) + 1 < info["epochs_run"]


def test_bad_input_raises_pruning_error(trained: Any, fashion: tuple[np.ndarray, ...]) -> None:
    x, y = fashion[0][:64], fashion[1][:64]
    for ratio in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(PruningError, match="between 0 and 1"):
            remove_channels_torch(SmallCNN(), X1, ratio=ratio)
    with pytest.raises(PruningError, match="nothing to prune"):
        remove_channels_torch(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), X1, ratio=0.5)
    with pytest.raises(PruningError, match="not submodules"):
        remove_channels_torch(SmallCNN(), X1, ratio=0.5, protect=["no.such.layer"])
    with pytest.raises(PruningError, match="'scale'"):
        remove_channels_torch(OwnParameter(), X1, ratio=0.5)
    with pytest.raises(PruningError, match="does not run"):
        remove_channels_torch(SmallCNN(), torch.zeros(1, 3, 28, 28), ratio=0.5)
    with pytest.raises(PruningError, match="between 0 and 1"):
        sparsify_torch(SmallCNN(), sparsity=1.0)
    with pytest.raises(PruningError, match="nothing to sparsify"):
        sparsify_torch(nn.ReLU(), sparsity=0.5)
    with pytest.raises(PruningError, match="teacher="):
        finetune_torch(SmallCNN(), x)
    with pytest.raises(PruningError, match="65 labels for 64"):
        finetune_torch(SmallCNN(), x, np.zeros(65, np.int64), progress=False)
    with pytest.raises(PruningError, match="10 classes"):
        finetune_torch(SmallCNN(), x, y + 5, progress=False)
    with pytest.raises(PruningError, match="does not fit"):
        finetune_torch(SmallCNN(), np.zeros((8, 3, 28, 28), np.float32), y[:8], progress=False)
    with pytest.raises(PruningError, match="float"):
        finetune_torch(SmallCNN(), (x * 255).astype(np.uint8), y, progress=False)
    with pytest.raises(PruningError, match="differ"):
        finetune_torch(SmallCNN(), x, teacher=nn.Sequential(nn.Flatten(), nn.Linear(784, 7)), progress=False)
