"""PyTorch sources: a small CNN trained on real Fashion-MNIST, exported with torch.onnx (dynamo), quantized."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepack.converters.errors import ExportError, SourceModelError
from edgepack.converters.formats.onnx.pipeline import build_onnx, calibration_samples
from edgepack.converters.formats.onnx.source import load_onnx_source
from edgepack.converters.package import assemble
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.runtimes import load
from edgepack.runtimes.manifest import ColorOrder, Layout, Postprocessing, PostprocessKind, Preprocessing
from edgepack.runtimes.recipe import onnx_fp32, onnx_qdq_int8
from edgepack.runtimes.target import get_target

torch = pytest.importorskip("torch")
nn = torch.nn
PRE = Preprocessing(size=(28, 28), color=ColorOrder.GRAY, layout=Layout.NCHW)


class SmallCNN(nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 10)

    def forward(self, x: Any) -> Any:
        return self.head(self.features(x))


class Untraceable(nn.Module):  # type: ignore[misc]
    def forward(self, x: Any) -> Any:
        if x.sum() > 0:  # data-dependent Python control flow: torch.export refuses it
            return x * 2
        return x


@pytest.fixture(scope="module")
def trained() -> Any:
    torch.manual_seed(0)
    x, y = load_fashion_mnist("train", limit=6000)
    data = torch.from_numpy(x[:, None].astype(np.float32) / 255.0)
    labels = torch.from_numpy(y.astype(np.int64))
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(2):
        for i in range(0, len(data), 128):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(data[i:i + 128]), labels[i:i + 128])
            loss.backward()
            opt.step()
    return model


def test_export_validate_quantize_and_run(trained: Any, tmp_path: Path) -> None:
    trained.train()  # the user's mode must survive the export
    source = load_onnx_source(trained, example_input=torch.zeros(1, 1, 28, 28))
    assert trained.training
    assert source.kind == "torch" and source.provenance["exporter"] == "torch.onnx.export(dynamo=True)"
    assert source.inputs[0].shape == (-1, 1, 28, 28)
    xs, ys = load_fashion_mnist("test", limit=260)
    samples = calibration_samples(source, xs, preprocessing=PRE, limit=260)
    calib, held = samples[:200], samples[200:]
    fp32 = build_onnx(source, onnx_fp32(), calibration=[], held_back=held[1:], golden_sample=held[0])
    assert fp32.validation is not None and not fp32.validation.failures
    assert fp32.validation.outputs[0].max_abs_error < 1e-4  # export matches torch itself
    assert fp32.requires["opset"][""] >= 18
    qdq = build_onnx(source, onnx_qdq_int8(), calibration=calib, held_back=held[1:], golden_sample=held[0])
    assert qdq.validation is not None and not qdq.validation.failures, qdq.validation.failures
    assert qdq.validation.outputs[0].top1_agreement >= 0.95
    assert len(qdq.data) < len(fp32.data)
    bundle = assemble(name="small_cnn", source=source, target=get_target("x86"), recipe=onnx_qdq_int8(),
                      artifacts=[qdq], preprocessing=PRE,
                      postprocessing=Postprocessing(kind=PostprocessKind.CLASSIFICATION, softmax=True),
                      labels=FASHION_LABELS, provenance=source.provenance,
                      report={"models": [qdq.report]}).save(tmp_path / "small.epk")
    source.close()
    session = load(bundle, delegates=("xnnpack", "cpu"))
    assert session.backend == "onnxruntime" and session.delegate == "cpu"
    with torch.no_grad():
        trained.eval()
        ref = trained(torch.from_numpy(xs[200:, None].astype(np.float32) / 255.0)).argmax(1).numpy()
    got = np.array([session.predict(img).top_k[0].index for img in xs[200:]])
    assert np.mean(got == ref) >= 0.95
    assert np.mean(got == ys[200:]) >= 0.5  # a real classifier (chance: 0.1), not noise


def test_export_failure_is_typed(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="torch.export") as info:
        load_onnx_source(Untraceable(), example_input=torch.ones(1, 4))
    assert "data-dependent" in str(info.value) or "control flow" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_example_input_is_required() -> None:
    with pytest.raises(SourceModelError, match="example_input"):
        load_onnx_source(SmallCNN())
    with pytest.raises(SourceModelError, match="example_input"):
        load_onnx_source(SmallCNN(), example_input="an image")


def test_several_inputs_and_outputs() -> None:
    class TwoInTwoOut(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(2, 3)

        def forward(self, x: Any, z: Any) -> Any:
            h = self.a(x) + self.b(z)
            return h, h.sigmoid()

    source = load_onnx_source(TwoInTwoOut(), example_input=(np.zeros((1, 4), np.float32), torch.zeros(1, 2)))
    assert [i.shape for i in source.inputs] == [(-1, 4), (-1, 2)] and len(source.output_names) == 2
    x, z = np.ones((3, 4), np.float32), np.ones((3, 2), np.float32)
    got = source._engine.run([x, z])  # the exported model in ORT ...
    ref = list(source.predict([x, z]).values())  # ... against torch itself
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-5)
    source.close()
