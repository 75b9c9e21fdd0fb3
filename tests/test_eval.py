"""``edgepack.measure.evaluate`` on real bundles and real Fashion-MNIST data: statistics on known inputs, data loaders,
and every bad input the issue lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgepack as ep
from edgepack.cli import main
from edgepack.examples.datasets import FASHION_LABELS
from edgepack.measure.data import ArrayData, EvalDataError, ImageFolderData, LabelMismatchError
from edgepack.measure.evaluate import RunOptions, agreement_per_output, classification_metrics, evaluate, evaluate_many
from edgepack.runtimes import BackendUnavailableError, InputSpecError, load
from edgepack.runtimes.manifest import ColorOrder


@pytest.fixture(scope="module")
def test_set(fashion_test):
    x, y = fashion_test
    return ArrayData(x=x[:300], y=y[:300], class_names=FASHION_LABELS, color=ColorOrder.GRAY, name="fashion-300")


def test_classification_metrics_on_known_inputs() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 1, 2])
    acc = classification_metrics(scores, labels, names=["a", "b", "c"])
    assert acc.top1 == 0.5 and acc.top5 is None  # 3 classes: top-5 is meaningless
    assert acc.confusion == ((1, 0, 0), (0, 1, 1), (1, 0, 0))
    assert [c.accuracy for c in acc.per_class] == [1.0, 0.5, 0.0]
    ten = np.eye(10)[[3, 3, 5]] + np.linspace(0, 0.5, 10)  # true 9 is 2nd best in row 3
    top = classification_metrics(ten, np.array([3, 9, 0]), names=[])
    assert top.top1 == pytest.approx(1 / 3) and top.top5 == pytest.approx(2 / 3)
    with pytest.raises(LabelMismatchError, match="label 12 but the model outputs 10"):
        classification_metrics(ten, np.array([1, 12, 0]), names=[])


def test_bundle_compared_with_itself_agrees_perfectly(bundle_factory, test_set) -> None:
    path = bundle_factory("fp32")
    result = evaluate(path, test_set, reference=path, progress=False)
    (a,) = result.agreement
    assert a.cosine == pytest.approx(1.0) and a.max_abs_error == 0.0 and a.snr_db == float("inf")
    assert a.top1_agreement == 1.0
    # accuracy equals a plain loop over Session.run
    session = load(path)
    manual = np.mean([np.argmax(session.run(session.preprocess(im, color=ColorOrder.GRAY))[0]) == lab
                      for im, lab in test_set])
    assert result.accuracy is not None and result.accuracy.top1 == pytest.approx(manual)
    assert sum(map(sum, result.accuracy.confusion)) == 300 and result.accuracy.top5 >= result.accuracy.top1


def test_shuffled_outputs_have_low_agreement(bundle_factory, test_set) -> None:
    session = load(bundle_factory("fp32"))
    out = np.concatenate([session.run(session.preprocess(im, color=ColorOrder.GRAY))[0] for im, _ in test_set])
    shuffled = out[np.random.default_rng(0).permutation(len(out))]
    (same,) = agreement_per_output([out], [out.copy()])
    (bad,) = agreement_per_output([out], [shuffled])
    assert same.cosine == pytest.approx(1.0) and same.top1_agreement == 1.0
    assert bad.top1_agreement < 0.4 and bad.cosine < 0.8 and bad.snr_db < 3


def test_quantized_bundles_against_fp32_and_source(bundle_factory, fashion_model_path, test_set) -> None:
    paths = [bundle_factory(r) for r in ("fp32", "full-int8")]
    fp32, int8 = evaluate_many(paths, test_set, reference=fashion_model_path, progress=False)
    assert fp32.agreement[0].cosine > 0.99999 and fp32.agreement[0].snr_db > 80
    assert 0.99 < int8.agreement[0].cosine < 1.0 and 25 < int8.agreement[0].snr_db < 80
    assert int8.agreement[0].top1_agreement > 0.95
    assert any("no pre-processing spec; used the bundle's" in n for n in int8.notes)
    assert abs(int8.accuracy.top1 - fp32.accuracy.top1) < 0.03  # type: ignore[union-attr]
    text = str(int8)
    assert "top-1" in text and "SNR" in text and "T-shirt/top" in text
    assert json.loads(json.dumps(int8.to_json()))["accuracy"]["confusion"][0][0] > 0


def test_image_folder_npz_and_unlabeled_data(bundle_factory, fashion_test, tmp_path: Path) -> None:
    import cv2

    x, y = fashion_test
    root = tmp_path / "images"
    for k in range(60):
        folder = root / FASHION_LABELS[y[k]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{k}.png"), x[k])
    path = bundle_factory("fp32")
    by_name = evaluate(path, root, progress=False)  # "T-shirt-top" matches the label "T-shirt/top"
    (root / "cat").mkdir()
    cv2.imwrite(str(root / "cat" / "x.png"), x[0])
    with pytest.raises(LabelMismatchError, match=r"classes \['cat'\] are not among the model's 10 labels"):
        evaluate(path, root, progress=False)
    numeric = tmp_path / "numeric"
    for k in range(60):
        (numeric / str(y[k])).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(numeric / str(y[k]) / f"{k}.png"), x[k])
    by_folder = evaluate(path, ImageFolderData(numeric), progress=False)
    np.savez(tmp_path / "d.npz", x=x[:60], y=y[:60])
    by_npz = evaluate(path, tmp_path / "d.npz", progress=False)
    assert by_folder.samples == by_npz.samples == by_name.samples == 60
    assert by_folder.accuracy.top1 == pytest.approx(by_npz.accuracy.top1)  # type: ignore[union-attr]
    assert by_name.accuracy.top1 == pytest.approx(by_npz.accuracy.top1)  # type: ignore[union-attr]
    unlabeled = evaluate(path, x[:20], reference=bundle_factory("fp16"), progress=False)
    assert unlabeled.accuracy is None and unlabeled.agreement[0].cosine > 0.9999


def test_bad_inputs_say_what_to_do(bundle_factory, fashion_test, tmp_path: Path) -> None:
    path = bundle_factory("fp32")
    x, y = fashion_test
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(EvalDataError, match="holds no labeled images"):
        evaluate(path, tmp_path / "empty", progress=False)
    with pytest.raises(LabelMismatchError, match="label 11 but the model outputs 10"):
        evaluate(path, (x[:10], np.array([0] * 9 + [11])), progress=False)
    # tensors shaped for another model cannot be resized; NCHW tensors are transposed (and noted)
    with pytest.raises(InputSpecError, match=r"expects input \[-1, 28, 28, 1\].*pass raw images"):
        evaluate(path, np.zeros((4, 32, 32, 1), np.float32), progress=False)
    nchw = (x[:8, None].astype(np.float32) / 255, y[:8])
    converted = evaluate(path, nchw, progress=False)
    assert any("transposed to NHWC" in n for n in converted.notes)
    with pytest.raises(BackendUnavailableError, match="tflite-runtime"):
        evaluate(path, (x[:4], y[:4]), options=RunOptions(backend="tflite-runtime"), progress=False)


def test_bundles_with_different_input_specs(bundle_factory, fashion_model_path, calibration, fashion_test,
                                            tmp_path: Path) -> None:
    """Images: each bundle applies its own spec (converted). Tensors for one spec: refused for another, with why."""
    from measure_helpers import orientation_onnx, orientation_preprocessing

    from edgepack.runtimes.manifest import Preprocessing, ResizeMode

    x, y = fashion_test
    crop = Preprocessing(size=(28, 28), resize=ResizeMode.CROP, color=ColorOrder.GRAY, scale=1 / 255)
    other = ep.convert(fashion_model_path, calibration, recipe="fp32", labels=FASHION_LABELS, preprocessing=crop,
                       progress=False).save(tmp_path / "crop.epk")
    wide = (np.pad(x[:100], ((0, 0), (0, 0), (6, 6))), y[:100])  # 28x40: stretch squeezes, crop cuts the pad away
    stretched, cropped = evaluate_many([bundle_factory("fp32"), other], wide, reference=other, progress=False)
    assert any("input specs differ" in n and "stretch" in n and "crop" in n for n in stretched.notes)
    assert cropped.agreement[0].cosine == pytest.approx(1.0) and not any("differ" in n for n in cropped.notes)
    assert stretched.agreement[0].cosine < 0.999  # the same images, really pre-processed differently
    assert cropped.accuracy.top1 > stretched.accuracy.top1  # type: ignore[union-attr]
    tensors = (x[:4, ..., None].astype(np.float32) / 255, y[:4])
    with pytest.raises(InputSpecError, match=r"expects input \[-1, 3, 224, 224\].*tensors cannot be resized"):
        evaluate(other, tensors, reference=orientation_onnx(), preprocessing=None, progress=False)
    with pytest.raises(EvalDataError, match="matches 0 reference outputs|cannot be compared"):
        evaluate(orientation_onnx(), x[:4], reference=other, preprocessing=orientation_preprocessing(), progress=False)


def test_source_model_and_cli(fashion_model_path, bundle_factory, tmp_path: Path, capsys) -> None:
    from edgepack.examples.fashion import FASHION_PREPROCESSING

    src = ep.evaluate(fashion_model_path, "fashion-mnist:test", limit=200, preprocessing=FASHION_PREPROCESSING,
                      progress=False)
    assert src.kind == "source (keras)" and src.accuracy is not None and src.accuracy.top1 > 0.7
    out = tmp_path / "eval.json"
    rc = main(["eval", str(bundle_factory("full-int8")), "--data", "fashion-mnist", "--limit", "200",
               "--reference", str(fashion_model_path), "--json", str(out), "--confusion"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "Ankle boot" in printed
    doc = json.loads(out.read_text())
    assert doc["samples"] == 200 and doc["accuracy"]["top1"] == pytest.approx(src.accuracy.top1, abs=0.05)
    assert main(["eval", str(bundle_factory("fp32")), "--data", str(tmp_path / "missing")]) == 2


def test_pretrained_onnx_on_rotated_pages() -> None:
    """A real pretrained ONNX classifier (no labels inside) on real page images with numeric class names."""
    from measure_helpers import orientation_onnx, orientation_preprocessing, page_images

    x, y = page_images(2)
    data = ArrayData(x=x, y=y, class_names=("0", "90", "180", "270"), color=ColorOrder.BGR, name="pages")
    result = evaluate(orientation_onnx(), data, preprocessing=orientation_preprocessing(), progress=False)
    assert result.kind == "onnx file" and result.samples == 8
    assert result.accuracy is not None and result.accuracy.top1 == 1.0 and result.accuracy.top5 is None
    assert [c.label for c in result.accuracy.per_class] == ["0", "90", "180", "270"]
