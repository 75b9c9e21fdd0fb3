"""The seams of layout v2: a new output format is one plug-in class (+ one backend), a new target one registered
object. A test-only format ("linear": a weight matrix, y = x @ W, run by a numpy backend) and a test-only target
are registered at run time; ``convert``, the CLI listings and the bundle round trip pick them up untouched."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import edgepack as ep
from edgepack.cli import main
from edgepack.converters.errors import ConversionError
from edgepack.converters.formats import (
    Description,
    InputInfo,
    ModelFormatPlugin,
    Source,
    get_format,
    register_format,
    registered_formats,
    unregister_format,
)
from edgepack.runtimes import load, read_bundle
from edgepack.runtimes.backends import Backend, Engine, register_backend, unregister_backend
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.manifest import TensorSpec
from edgepack.runtimes.recipe import Precision, Recipe
from edgepack.runtimes.target import Target, register_target, unregister_target


class LinearEngine(Engine):
    """y = x @ W in numpy (float64 accumulation for the reference kernels)."""

    delegated_partitions = 0

    def __init__(self, weights: np.ndarray, *, delegate: str, exact: bool) -> None:
        self.weights, self.delegate, self.exact = weights, delegate, exact

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", (-1, self.weights.shape[0]), "float32"),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("y", (-1, self.weights.shape[1]), "float32"),)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        w = self.weights.astype(np.float64 if self.exact else np.float32)
        return [(np.asarray(inputs[0], w.dtype) @ w).astype(np.float32)]


class NumpyLinearBackend(Backend):
    name = "numpy-linear"
    formats = ("linear",)
    module = "numpy"
    delegates = ("cpu",)

    def version(self) -> str:
        return np.__version__

    def open(self, model: bytes, *, delegate: str, num_threads: int | None) -> Engine:
        if delegate != "cpu":
            raise RuntimeError(f"no {delegate} delegate")
        return LinearEngine(np.load(io.BytesIO(model), allow_pickle=False), delegate=delegate, exact=False)


class LinearSource:
    """A ``.linear.npy`` weight matrix as a source model."""

    kind = "linear"

    def __init__(self, path: Path) -> None:
        self.weights = np.load(path, allow_pickle=False)
        self.name, self.file_name, self.sha256 = path.name.split(".")[0], path.name, "test"
        self.inputs = [InputInfo("x", (-1, self.weights.shape[0]), "float32")]

    def predict(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs[0].astype(np.float64) @ self.weights}

    def close(self) -> None:
        pass


class LinearFormat(ModelFormatPlugin):
    name = "linear"
    extension = "npy"
    description = "test-only: y = x @ W"
    dtypes: ClassVar[dict[Precision, str]] = {Precision.FP32: "float32", Precision.FP16: "float16"}

    @classmethod
    def claims(cls, model: Any) -> bool:
        return str(model).endswith(".linear.npy")

    def load_source(self, model: Any, *, example_input: Any = None) -> Source:
        return LinearSource(Path(model))

    def export(self, source: Source, recipe: Recipe, *, calibration: Sequence[Sequence[np.ndarray]]
               ) -> tuple[bytes, dict[str, Any]]:
        if recipe.precision not in self.dtypes:
            raise ConfigError(f"linear models are fp32 or fp16, not {recipe.precision.value}")
        buf = io.BytesIO()
        np.save(buf, source.weights.astype(self.dtypes[recipe.precision]))  # type: ignore[attr-defined]
        return buf.getvalue(), {"calibration_seen": len(calibration)}

    def open(self, data: bytes, *, reference: bool = False, num_threads: int | None = None) -> Engine:
        return LinearEngine(np.load(io.BytesIO(data), allow_pickle=False), delegate="cpu", exact=reference)

    def describe(self, data: bytes, engine: Engine) -> Description:
        dtype = np.load(io.BytesIO(data), allow_pickle=False).dtype
        return Description(precision="fp16" if dtype == np.float16 else "fp32", requires={"runtime": "numpy-linear"})


BOARD = Target(name="test-board", arch="riscv64", cores=1, runtimes=("numpy-linear",), delegates=("cpu",),
               precisions=(Precision.FP32, Precision.FP16), description="test-only board")


@pytest.fixture
def plugins() -> Iterator[None]:
    register_format(LinearFormat)
    register_backend(NumpyLinearBackend)
    register_target(BOARD)
    yield
    unregister_format("linear")
    unregister_backend("numpy-linear")
    unregister_target("test-board")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "proj.linear.npy"
    np.save(path, np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32))
    return path


def test_convert_and_the_runtime_pick_up_a_registered_format_and_target(plugins: None, model: Path,
                                                                          tmp_path: Path) -> None:
    calib = np.random.default_rng(1).random((30, 6)).astype(np.float32)
    bundle = ep.convert(model, calib, target="test-board", recipe=["fp32", "fp16"], progress=False)
    path = bundle.save(tmp_path / "proj.epk")
    manifest = read_bundle(path).manifest
    assert manifest.target == BOARD
    assert [(m.format, m.precision, m.file) for m in manifest.models] == [
        ("linear", "fp32", "models/proj_fp32.npy"), ("linear", "fp16", "models/proj_fp16.npy")]
    assert [m.recipe.format for m in manifest.models] == ["linear", "linear"]  # type: ignore[union-attr]
    report = bundle.report["models"][0]
    assert report["format"] == "linear" and report["calibration_seen"] == 27  # 3 of 30 held back
    assert report["validation"]["outputs"][0]["cosine"] > 0.9999
    session = load(path)
    assert session.backend == "numpy-linear" and session.delegate == "cpu"
    x = calib[:1]
    np.testing.assert_allclose(session.run(x)[0], x @ np.load(model), rtol=1e-5)


def test_target_precisions_are_enforced(plugins: None, model: Path) -> None:
    with pytest.raises(ConfigError, match=r"test-board does not run int16x8 .*fp32, fp16"):
        ep.convert(model, target="test-board", recipe="int16x8", progress=False)


def test_a_recipe_the_format_did_not_apply_is_refused(plugins: None, model: Path) -> None:
    """The silero-vad case, for any format: the recipe asked for fp16/int8 and the exported model is still fp32."""

    class ForgetfulLinear(LinearFormat):
        dtypes: ClassVar[dict[Precision, str]] = {Precision.FP32: "float32", Precision.FP16: "float32"}

    register_format(ForgetfulLinear)
    calib = np.random.default_rng(3).random((10, 6)).astype(np.float32)
    with pytest.raises(ConversionError, match="fp16 recipe quantized nothing: the linear model came out fp32"):
        ep.convert(model, calib, target="test-board", recipe="fp16", progress=False)
    assert ep.convert(model, calib, target="test-board", recipe="fp32", progress=False).manifest.models


def test_failed_lookups_list_what_is_registered(plugins: None) -> None:
    assert "linear" in registered_formats()
    with pytest.raises(ConfigError, match=r"known formats: tflite, onnx, linear"):
        get_format("lineaer")
    with pytest.raises(ConfigError, match="test-board"):
        ep.targets.get_target("test-bord")


def test_cli_lists_and_converts_with_the_registered_plugins(plugins: None, model: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats"]) == 0
    assert "linear" in capsys.readouterr().out
    assert main(["targets"]) == 0
    assert "test-board" in capsys.readouterr().out
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(2).random((10, 1, 6)).astype(np.float32))
    out = tmp_path / "cli.epk"
    assert main(["convert", str(model), "--target", "test-board", "--calibration", str(calib), "-o", str(out)]) == 0
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "linear" in shown and "test-board" in shown
    assert main(["verify", str(out)]) == 0
    assert main(["convert", str(model), "--format", "lineer", "-o", str(tmp_path / "x.epk")]) == 2
    assert "known formats: tflite, onnx, linear" in capsys.readouterr().err


def test_unregistered_again_after_the_test(model: Path) -> None:
    assert "linear" not in registered_formats()
    with pytest.raises(ConfigError, match="unknown target"):
        ep.convert(model, target="test-board", progress=False)
