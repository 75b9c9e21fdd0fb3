"""The device install (`pip install 'edgepack[litert]'`: numpy + ai-edge-litert + Pillow) and CLI polish.

Fast tests block OpenCV / host-only modules in a subprocess (``sys.modules[name] = None``, what Python does for
a module that is not installed) and check pre-processing without OpenCV against OpenCV on a real photo, the
one-line errors naming the pip extra, ``--version``, ``python -m edgepack``, a closed stdout pipe and the model
file names. The slow tests build the wheel, install it with only ``[litert]`` into a fresh venv and use the CLI
there, including ``device-test --emulate arm64`` from the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import EXIT_BROKEN_PIPE, main
from edgepack.runtimes.errors import EXTRA_FOR_MODULE, MissingDependencyError, OpenCVMissingError
from edgepack.runtimes.versions import EDGEPACK_VERSION

ROOT = Path(__file__).resolve().parents[1]
HOST_ONLY = ("tensorflow", "keras", "onnx", "tf2onnx", "torch", "matplotlib", "pytest", "cv2", "skimage")
_BLOCKED_RUN = """
import sys, json
for name in {blocked!r}:
    sys.modules[name] = None
from edgepack.cli import main
code = main({argv!r})
sys.stdout.flush()
print("LOADED=" + json.dumps(sorted(m for m in {watch!r} if sys.modules.get(m) is not None)), file=sys.stderr)
sys.exit(code)
"""


def _cli_without(blocked: tuple[str, ...], argv: list[str], *, cwd: Path | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    """Run ``edgepack argv`` in a fresh python where the ``blocked`` modules cannot be imported."""
    code = _BLOCKED_RUN.format(blocked=blocked, argv=argv, watch=HOST_ONLY)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd,
                          check=False)


def _loaded(stderr: str) -> list[str]:
    line = [ln for ln in stderr.splitlines() if ln.startswith("LOADED=")]
    return json.loads(line[-1].removeprefix("LOADED=")) if line else ["<no report>"]


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith(("error:", "Traceback"))]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real colour photo (scikit-image's astronaut, 512x512) saved as a JPEG."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=90)
    return path


# ---- 1. images without OpenCV ---------------------------------------------------------------------------------

_PREPROCESS = """
import sys, numpy as np
if {block}:
    sys.modules["cv2"] = None
from edgepack.runtimes.images import image_decoder, read_image
from edgepack.runtimes.manifest import ColorOrder, Preprocessing, ResizeMode
from edgepack.runtimes.preprocess import preprocess
specs = [Preprocessing(size=(28, 28), color=ColorOrder.GRAY, scale=1 / 255),
         Preprocessing(size=(224, 224), color=ColorOrder.RGB, resize=ResizeMode.LETTERBOX, scale=1 / 255),
         Preprocessing(size=(96, 160), color=ColorOrder.RGB, resize=ResizeMode.CROP, scale=1 / 255),
         Preprocessing(size=(600, 300), color=ColorOrder.BGR, scale=1 / 255)]
image = read_image(sys.argv[1])
np.savez(sys.argv[2], image=image, *[preprocess(image, s) for s in specs])
print(image_decoder(), "cv2" in sys.modules and sys.modules["cv2"] is not None)
"""


def test_a_photo_preprocessed_without_opencv_matches_opencv(photo: Path, tmp_path: Path) -> None:
    out = {}
    for block in (False, True):
        dest = tmp_path / f"block_{block}.npz"
        proc = subprocess.run([sys.executable, "-c", _PREPROCESS.format(block=block), str(photo), str(dest)],
                              capture_output=True, text=True, timeout=120, check=True)
        assert proc.stdout.split() == (["pillow", "False"] if block else ["opencv", "True"])
        out[block] = dict(np.load(dest))
    with_cv2, without = out[False], out[True]
    decoded = np.abs(with_cv2["image"].astype(int) - without["image"])
    assert with_cv2["image"].shape == without["image"].shape == (512, 512, 3)
    assert decoded.mean() < 1.0 and decoded.max() <= 16  # libjpeg builds may differ by a rounding here and there
    for k in range(4):
        a, b = with_cv2[f"arr_{k}"], without[f"arr_{k}"]
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
        assert np.abs(a - b).mean() < 1.5 / 255, k  # ~a grey level on average
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999, k


@pytest.mark.parametrize(("src", "dst"), [((342, 548), (28, 28)), ((342, 548), (224, 224)), ((40, 60), (224, 224)),
                                          ((342, 548), (100, 700)), ((342, 548), (500, 60)), ((17, 9), (17, 30))])
def test_numpy_resize_matches_opencv(src: tuple[int, int], dst: tuple[int, int]) -> None:
    import cv2

    from edgepack.runtimes.preprocess import resize_numpy

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*src, 3), dtype=np.uint8), (5, 5), 0)
    shrink = dst[0] < src[0] or dst[1] < src[1]
    ref = cv2.resize(image, dst[::-1], interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    got = resize_numpy(image, *dst)
    assert got.shape == ref.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref).max() <= 1


def test_no_decoder_at_all_names_the_extra(photo: Path) -> None:
    code = ("import sys; sys.modules['cv2'] = None; sys.modules['PIL'] = None\n"
            "from edgepack.runtimes.images import read_image\n"
            f"read_image({str(photo)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert "OpenCVMissingError" in proc.stderr and "pip install 'edgepack[litert]'" in proc.stderr
    assert issubclass(OpenCVMissingError, MissingDependencyError)


def test_run_and_bench_without_opencv(bundle_factory, photo: Path, tmp_path: Path) -> None:
    bundle = bundle_factory("full-int8")
    proc = _cli_without(("cv2",), ["run", str(bundle), str(photo), "--top-k", "3"])
    assert proc.returncode == 0, proc.stderr
    scores = [float(line.split()[0]) for line in proc.stdout.splitlines()[1:]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert "cv2" not in _loaded(proc.stderr)
    (tmp_path / "photos" / "any").mkdir(parents=True)
    shutil.copy(photo, tmp_path / "photos" / "any" / photo.name)
    proc = _cli_without(("cv2",), ["bench", str(bundle), "--images", str(tmp_path / "photos"), "--runs", "5",
                                   "--warmup", "1"])
    assert proc.returncode == 0, proc.stderr
    assert "end-to-end" in proc.stdout and "cv2" not in _loaded(proc.stderr)


# ---- 2. a missing host-only library: one line naming the extra ----------------------------------------------------


@pytest.mark.parametrize(("blocked", "extra"), [("tensorflow", "convert"), ("onnx", "convert")])
def test_convert_without_the_host_stack_is_one_line(bundle_factory, fashion_model_path: Path, blocked: str,
                                                    extra: str, tmp_path: Path) -> None:
    model = fashion_model_path
    if blocked == "onnx":  # a real ONNX source: the model of a qdq-int8 bundle
        with zipfile.ZipFile(bundle_factory("qdq-int8")) as z:
            model = tmp_path / "fashion.onnx"
            model.write_bytes(z.read(next(n for n in z.namelist() if n.endswith(".onnx"))))
    proc = _cli_without((blocked,), ["convert", str(model), "-o", str(tmp_path / "x.epk")], cwd=tmp_path)
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and f"pip install 'edgepack[{extra}]'" in errors[0], proc.stderr
    assert not (tmp_path / "x.epk").exists()


def test_device_test_without_pytest_names_dev(bundle_factory) -> None:
    proc = _cli_without(("pytest",), ["device-test", str(bundle_factory("fp32"))])
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "pip install 'edgepack[dev]'" in errors[0], proc.stderr


def test_every_host_only_module_has_an_extra() -> None:
    assert {m for m in HOST_ONLY if m != "cv2"} <= set(EXTRA_FOR_MODULE)
    err = MissingDependencyError.for_module("tensorflow.lite", purpose="x")
    assert err.module == "tensorflow" and "edgepack[convert]" in str(err)


# ---- 3. --version, python -m edgepack, a closed pipe, model file names ------------------------------------------


def test_version_and_python_m(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"edgepack {EDGEPACK_VERSION}"
    proc = subprocess.run([sys.executable, "-m", "edgepack", "--help"], capture_output=True, text=True, timeout=60,
                          check=True)
    assert "usage: edgepack" in proc.stdout and "device-test" in proc.stdout


def test_a_closed_stdout_pipe_exits_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader went away (`edgepack targets | head -0`)
    try:
        proc = subprocess.run([sys.executable, "-m", "edgepack", "targets"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)
    finally:
        os.close(write)
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert proc.stderr == ""


def test_a_source_named_after_its_precision_is_not_named_twice(bundle_factory, tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle_factory("full-int8")) as z:
        name = next(n for n in z.namelist() if n.endswith(".tflite"))
        source = tmp_path / "fashion_full_int8.tflite"
        source.write_bytes(z.read(name))
    assert main(["convert", str(source), "-o", str(tmp_path / "b.epk")]) == 0
    with zipfile.ZipFile(tmp_path / "b.epk") as z:
        models = [n for n in z.namelist() if n.startswith("models/")]
    assert models == ["models/fashion_full_int8.tflite"]


def test_model_stem_strips_one_precision_suffix() -> None:
    from edgepack.converters.package import model_stem

    assert model_stem("x_full_int8") == model_stem("x-full-int8") == model_stem("x_FP16") == "x"
    assert model_stem("fp32") == "fp32" and model_stem("mobilenet_v2") == "mobilenet_v2"


# ---- 4. the emulated suite sees only edgepack's own packages -----------------------------------------------------


def test_emulated_overlay_copies_the_suite_and_holds_only_edgepack(tmp_path: Path) -> None:
    from edgepack.device.suite import emulated_overlay

    overlay = emulated_overlay(tmp_path / "overlay")
    assert sorted(p.name for p in overlay.iterdir()) == ["edgepack"]
    suite = overlay / "edgepack" / "device_tests"
    assert suite.is_dir() and not suite.is_symlink() and (suite / "conftest.py").is_file()
    assert not (suite / "conftest.py").is_symlink()


# ---- 5. slow: the wheel, installed with only [litert] into a fresh venv -----------------------------------------


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the edgepack wheel built from this tree, installed with only ``[litert]``."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "sdk", "converters", "runtimes", "device_tests"):
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(item, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(work / "dist"), str(src)], check=True, timeout=600)
    wheel = next((work / "dist").glob("edgepack-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[litert]"], check=True,
                   timeout=600)
    return venv


def _in_venv(venv: Path, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=900,
                          cwd=cwd, check=False)


@pytest.mark.slow
def test_the_litert_install_runs_the_cli(device_venv: Path, bundle_factory, fashion_model_path: Path, photo: Path,
                                        tmp_path: Path) -> None:
    probe = _in_venv(device_venv, "python", "-c", "import importlib.util as u, json; print(json.dumps("
                     f"[m for m in {HOST_ONLY!r} if u.find_spec(m)]))")
    assert json.loads(probe.stdout) == []  # a device install: none of the host stack
    bundle = bundle_factory("full-int8")
    run = _in_venv(device_venv, "edgepack", "run", str(bundle), str(photo), "--top-k", "3")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 4
    verify = _in_venv(device_venv, "edgepack", "verify", str(bundle))
    assert verify.returncode == 0 and "golden outputs match" in verify.stdout, verify.stderr
    (tmp_path / "photos" / "any").mkdir(parents=True)
    shutil.copy(photo, tmp_path / "photos" / "any" / photo.name)
    bench = _in_venv(device_venv, "edgepack", "bench", str(bundle), "--images", str(tmp_path / "photos"),
                     "--runs", "10", "--warmup", "2")
    assert bench.returncode == 0 and "end-to-end" in bench.stdout, bench.stderr
    version = _in_venv(device_venv, "edgepack", "--version")
    assert version.stdout.strip() == f"edgepack {EDGEPACK_VERSION}"
    help_ = _in_venv(device_venv, "python", "-m", "edgepack", "--help")
    assert help_.returncode == 0 and "usage: edgepack" in help_.stdout
    convert = _in_venv(device_venv, "edgepack", "convert", str(fashion_model_path), cwd=tmp_path)
    errors = _error_lines(convert.stderr)
    assert convert.returncode == 2 and len(errors) == 1 and "pip install 'edgepack[convert]'" in errors[0], \
        convert.stderr


@pytest.mark.slow
def test_the_installed_wheel_runs_the_emulated_suite(device_venv: Path, bundle_factory, tmp_path: Path) -> None:
    cache = str(ROOT / ".cache" / "arm64")
    proc = _in_venv(device_venv, "edgepack", "device-test", str(bundle_factory("full-int8")), "--emulate", "arm64",
                    "--cache", cache, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "site-packages" not in proc.stdout.split("pytest", 1)[1].splitlines()[0]  # the suite runs from the overlay
    assert "machine: aarch64" in proc.stdout
