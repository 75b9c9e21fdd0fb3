"""Issue 11 findings 2, 5 (runtime), 6 and 7: bad input to a Session is a typed error, never a broken session,
a traceback or a silent wrong answer; big frames are resized before they become floats. Real bundles, real
LiteRT and ONNX Runtime."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.runtimes import load, read_bundle
from edgepack.runtimes.bundle import sha256_bytes, write_bundle
from edgepack.runtimes.errors import BundleCorruptError, BundleSchemaError, ConfigError, InputSpecError
from edgepack.runtimes.manifest import ColorOrder, Manifest, Postprocessing, Preprocessing, ResizeMode
from edgepack.runtimes.preprocess import fit, preprocess, to_color

BACKENDS = {"litert": "fp32", "onnxruntime": "onnx-fp32"}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def session(request, bundle_factory):  # type: ignore[no-untyped-def]
    with load(bundle_factory(BACKENDS[request.param]), backend=request.param) as s:
        yield s


def _images(n: int = 3) -> np.ndarray:
    from edgepack.examples.datasets import load_fashion_mnist

    return load_fashion_mnist("test", limit=n)[0]


def _batch(n: int) -> np.ndarray:
    return (_images(max(n, 1))[:n, :, :, None] / np.float32(255)).astype(np.float32)


# ---- 2. one empty batch breaks a Session for good ----------------------------------------------------------------

def test_one_empty_batch_does_not_break_a_session(session) -> None:  # type: ignore[no-untyped-def]
    x1, x3 = _batch(1), _batch(3)
    want1, want3 = session.run(x1)[0], session.run(x3)[0]
    with pytest.raises(InputSpecError, match="empty"):
        session.run(np.zeros((0, 28, 28, 1), np.float32))
    np.testing.assert_array_equal(session.run(x1)[0], want1)  # batch 1 (the hot path) still works
    np.testing.assert_array_equal(session.run(x3)[0], want3)
    assert session.predict(_images(1)[0]).top_k


def test_a_failed_resize_restores_the_previous_shapes(bundle_factory) -> None:  # type: ignore[no-untyped-def]
    """Below the Session's checks: XNNPACK cannot prepare a batch of 0; the engine puts the old shapes back."""
    with load(bundle_factory("fp32"), backend="litert", delegates=("xnnpack",)) as session:
        engine, x = session.raw_engine(), _batch(1)
        want = engine.run([x])[0].copy()
        with pytest.raises(InputSpecError, match="still runs at"):
            engine.run([np.zeros((0, 28, 28, 1), np.float32)])
        np.testing.assert_array_equal(engine.run([x])[0], want)
        assert engine.run([_batch(2)])[0].shape == (2, 10)


# ---- 5. tracebacks instead of one line ---------------------------------------------------------------------------

def _relabel(src: Path, dst: Path, labels: bytes) -> Path:
    bundle = read_bundle(src)
    files = {n: bundle.read(n) for n in bundle.names()}
    name = bundle.manifest.labels
    assert name is not None
    files[name] = labels
    manifest = dataclasses.replace(bundle.manifest, files={**bundle.manifest.files, name: sha256_bytes(labels)})
    return write_bundle(dst, manifest, files)


def test_non_utf8_labels_inside_a_bundle_are_a_typed_error_naming_the_file(bundle_factory, tmp_path, capsys):  # type: ignore[no-untyped-def]
    bad = _relabel(bundle_factory("fp32"), tmp_path / "latin1.epk", "T-shirt\nPullover\nRobe d'\xe9t\xe9\n".encode(
        "latin-1"))
    with pytest.raises(BundleCorruptError, match="labels.txt.*not UTF-8"):
        load(bad)
    np.save(tmp_path / "x.npy", _batch(1))
    capsys.readouterr()
    assert main(["run", str(bad), str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not UTF-8" in err[0], err


def _npy_cases(tmp: Path) -> dict[str, Path]:
    cases = {
        "object dtype": lambda p: np.save(p, np.array([1, "a", None], dtype=object), allow_pickle=True),
        "garbage": lambda p: p.write_bytes(b"this is not a numpy file at all"),
        "bad header": lambda p: p.write_bytes(b"\x93NUMPY\x01\x00garbage"),
        "truncated": lambda p: p.write_bytes(_npy_bytes(tmp)[:150]),
        "strings": lambda p: np.save(p, np.array(["a", "b"])),
        "empty batch": lambda p: np.save(p, np.zeros((0, 28, 28, 1), np.float32)),
        "nan": lambda p: np.save(p, np.full((1, 28, 28, 1), np.nan, np.float32)),
    }
    out = {}
    for k, (name, write) in enumerate(cases.items()):
        out[name] = tmp / f"case{k}.npy"
        write(out[name])
    return out


def _npy_bytes(tmp: Path) -> bytes:
    np.save(tmp / "ok.npy", _batch(1))
    return (tmp / "ok.npy").read_bytes()


def test_bad_npy_given_to_edgepack_run_is_one_line_exit_2(bundle_factory, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = str(bundle_factory("fp32"))
    for name, npy in _npy_cases(tmp_path).items():
        capsys.readouterr()
        assert main(["run", path, str(npy)]) == 2, name
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (name, out, err)
    assert main(["run", path, str(tmp_path / "ok.npy")]) == 0


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 0), (0, 12, 3), (12, 0)])
def test_a_0x0_image_in_predict_is_an_input_spec_error(session, shape) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputSpecError, match="empty"):
        session.predict(np.zeros(shape, np.uint8))


# ---- 6. silent wrong answers -------------------------------------------------------------------------------------

def test_uint16_and_float_images_are_read_by_dtype_not_scaled_by_1_255(session) -> None:  # type: ignore[no-untyped-def]
    img = _images(1)[0]
    want = session.preprocess(img)
    as16 = session.preprocess(img.astype(np.uint16) * 257)  # 0..65535
    as_float = session.preprocess(img.astype(np.float32) / 255)  # 0..1, scikit-image's convention
    np.testing.assert_allclose(as16, want, atol=1.01 / 255)  # the same picture within a grey level
    np.testing.assert_allclose(as_float, want, atol=1.01 / 255)
    assert session.predict(img.astype(np.float64) / 255).top_k[0].index == session.predict(img).top_k[0].index


@pytest.mark.parametrize("image, message", [
    (np.full((28, 28), 200.0, np.float32), "within 0..1"),  # a 0..255 float image
    (np.full((28, 28), -0.5, np.float32), "within 0..1"),  # an already normalised tensor
    (np.full((28, 28), 7, np.int32), "not supported"),
    (np.ones((28, 28), bool), "not supported"),
])
def test_ambiguous_image_dtypes_and_ranges_are_refused(session, image, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputSpecError, match=message):
        session.predict(image)


def test_nan_and_inf_inputs_are_refused_naming_the_input(session) -> None:  # type: ignore[no-untyped-def]
    name = session.inputs[0].name
    for bad in (np.nan, np.inf, -np.inf):
        x = _batch(1)
        x[0, 3, 4, 0] = bad
        with pytest.raises(InputSpecError, match=f"{name!r} holds 1 NaN/inf"):
            session.run(x)  # the hot path
        with pytest.raises(InputSpecError, match=f"{name!r} holds 1 NaN/inf"):
            session.run([x])  # the hot path, the array in a list
        x3 = _batch(3)
        x3[2, 0, 0, 0] = bad
        with pytest.raises(InputSpecError, match="NaN/inf"):
            session.run({name: x3.astype(np.float64)})
        image = np.full((28, 28), 0.5, np.float32)
        image[1, 1] = bad
        with pytest.raises(InputSpecError, match="finite"):
            session.predict(image)
    with np.errstate(over="ignore"):  # finite values whose sum overflows: accepted
        session.run(np.full((1, 28, 28, 1), 3e38, np.float32))


def test_std_0_is_refused_when_preprocessing_is_built_or_loaded(bundle_factory) -> None:  # type: ignore[no-untyped-def]
    for std in ((0.0,), (1.0, 0.0, 1.0), (float("nan"),), (float("inf"),)):
        with pytest.raises(ConfigError, match="std"):
            Preprocessing(size=(28, 28), std=std)
    with pytest.raises(ConfigError, match="finite"):
        Preprocessing(size=(28, 28), mean=(float("nan"),))
    raw = json.loads(read_bundle(bundle_factory("fp32")).manifest.to_bytes())
    raw["preprocessing"]["std"] = [0.0]
    with pytest.raises(BundleSchemaError, match="std"):
        Manifest.from_bytes(json.dumps(raw).encode())


def test_top_k_of_0_or_below_is_a_config_error(session, bundle_factory, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    for k in (0, -1):
        with pytest.raises(ConfigError, match="top_k"):
            Postprocessing(top_k=k)
        with pytest.raises(ConfigError, match="top_k"):
            session.predict(_images(1)[0], top_k=k)
    assert len(session.predict(_images(1)[0], top_k=1).top_k) == 1
    raw = json.loads(read_bundle(bundle_factory("fp32")).manifest.to_bytes())
    raw["postprocessing"]["top_k"] = 0
    with pytest.raises(BundleSchemaError, match="top_k"):
        Manifest.from_bytes(json.dumps(raw).encode())
    np.save(tmp_path / "x.npy", _batch(1))
    capsys.readouterr()
    assert main(["run", str(bundle_factory("fp32")), str(tmp_path / "x.npy"), "--top-k", "0"]) == 2
    assert "--top-k" in capsys.readouterr().err


# ---- 7. memory on big frames -------------------------------------------------------------------------------------

_PEAK = textwrap.dedent("""
    import json, sys
    if sys.argv[2] == "numpy":
        sys.modules["cv2"] = None  # the device path without OpenCV
    import numpy as np
    from edgepack.runtimes import load

    def hwm():
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))

    session = load(sys.argv[1], backend="litert")
    session.predict(np.zeros((64, 64, 3), np.uint8))  # warm every code path on a small frame
    frame = np.random.default_rng(0).integers(0, 256, (6000, 6000, 3), dtype=np.uint8)
    before = hwm()
    top = session.predict(frame).top_k[0].index
    print(json.dumps({"frame": frame.nbytes, "growth": hwm() - before, "top": top}))
""")


@pytest.mark.parametrize("resizer", ["opencv", "numpy"])
def test_a_big_frame_is_resized_before_it_becomes_float(bundle_factory, resizer) -> None:  # type: ignore[no-untyped-def]
    """6000x6000x3 uint8 (108 MB) into a 28x28 GRAY model: the peak grows by less than the frame's size + 32 MiB
    (converting the frame to float32 first cost 5.3x the frame)."""
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(bundle_factory("fp32")), resizer], capture_output=True,
                          text=True, timeout=300, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["growth"] < got["frame"] + (32 << 20), got


def _old_preprocess(image: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The order before issue 11: colour-convert the whole frame, then resize (uint8 only)."""
    small = fit(to_color(image, source=ColorOrder.BGR, want=spec.color), spec.size[0], spec.size[1], spec.resize)
    x = small.astype(np.float32) * np.float32(spec.scale)
    return (x[:, :, None] if x.ndim == 2 else x)[None]


@pytest.mark.parametrize("spec", [
    Preprocessing(size=(28, 28), color=ColorOrder.GRAY),
    Preprocessing(size=(224, 224), resize=ResizeMode.LETTERBOX),
    Preprocessing(size=(96, 160), resize=ResizeMode.CROP, color=ColorOrder.BGR),
], ids=["gray-stretch", "rgb-letterbox", "bgr-crop"])
def test_a_big_frame_resized_first_matches_the_old_path_within_a_grey_level(spec) -> None:
    from skimage import data

    photo = np.tile(data.astronaut()[:, :, ::-1], (4, 3, 1))  # a real photo, 2048x1536, BGR
    np.testing.assert_allclose(preprocess(photo, spec), _old_preprocess(photo, spec), atol=1.01 / 255)
