"""The one contract every registered runtime backend passes, on a real trained model in each format.

Parametrized over ``registered_backends()``: an installed backend runs the whole suite on the Fashion-MNIST
CNN in its format(s); a backend whose library is not installed here must refuse with
BackendUnavailableError. A backend (or format) without a contract model fails ``test_backend_is_covered``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.converters.formats.onnx.pipeline import build_onnx, calibration_samples
from edgepack.converters.formats.onnx.source import load_onnx_source
from edgepack.converters.formats.tflite.pipeline import build_tflite
from edgepack.converters.formats.tflite.source import load_source
from edgepack.converters.package import assemble
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn
from edgepack.runtimes import load, read_bundle
from edgepack.runtimes.backends import DELEGATE_ERRORS, get_backend, registered_backends
from edgepack.runtimes.errors import (
    BackendUnavailableError,
    ConfigError,
    InputSpecError,
    ModelLoadError,
)
from edgepack.runtimes.ladder import compare, run_golden
from edgepack.runtimes.manifest import Postprocessing, PostprocessKind
from edgepack.runtimes.recipe import fp32, onnx_fp32
from edgepack.runtimes.target import get_target

MODEL = Path(".cache/fashion_cnn.keras")
#: Formats that have a contract model; every registered backend's formats must be here.
CONTRACT_FORMATS = ("tflite", "onnx")
BACKENDS = registered_backends()
INSTALLED = sorted(n for n, cls in BACKENDS.items() if cls.available())
CASES = [(n, f) for n in INSTALLED for f in BACKENDS[n].formats if f in CONTRACT_FORMATS]
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 bundles of the trained Fashion-MNIST CNN: one per format, plus one holding both variants."""
    train_fashion_cnn(MODEL, epochs=2, limit=20000)
    x, _ = load_fashion_mnist("test", limit=40)
    out = tmp_path_factory.mktemp("contract")
    onnx_src = load_onnx_source(MODEL)
    samples = calibration_samples(onnx_src, x, preprocessing=FASHION_PREPROCESSING, limit=40)
    golden, held = samples[0], samples[1:]
    tf_src = load_source(MODEL)
    try:
        tfl = build_tflite(tf_src, fp32(), calibration=[], held_back=held, golden_sample=golden)
        onx = build_onnx(onnx_src, onnx_fp32(), calibration=[], held_back=held, golden_sample=golden)
        paths = {}
        for key, source, recipe, arts in (("tflite", tf_src, fp32(), [tfl]), ("onnx", onnx_src, onnx_fp32(), [onx]),
                                          ("both", tf_src, fp32(), [tfl, onx])):
            bundle = assemble(name="fashion", source=source, target=get_target("x86"), recipe=recipe, artifacts=arts,
                              preprocessing=FASHION_PREPROCESSING,
                              postprocessing=Postprocessing(kind=PostprocessKind.CLASSIFICATION, softmax=True),
                              labels=FASHION_LABELS, provenance={}, report={"models": [a.report for a in arts]})
            paths[key] = bundle.save(out / f"{key}.epk")
    finally:
        tf_src.close()
        onnx_src.close()
    return paths


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_backend_is_covered(name: str) -> None:
    """Installed: every format it runs has a contract model. Not installed: it refuses clearly."""
    cls = BACKENDS[name]
    if cls.available():
        missing = [f for f in cls.formats if f not in CONTRACT_FORMATS]
        assert not missing, f"backend {name} runs {missing}, which has no contract model: add one to this suite"
        assert any(case[0] == name for case in CASES)
    else:
        with pytest.raises(BackendUnavailableError, match=r"pip install 'edgepack\["):
            get_backend(name)


def test_suite_runs_litert_and_onnxruntime() -> None:
    assert {("litert", "tflite"), ("onnxruntime", "onnx")} <= set(CASES)


@pytest.mark.parametrize(("name", "fmt"), CASES)
class TestContract:
    """The contract itself."""

    def test_metadata(self, name: str, fmt: str) -> None:
        backend = get_backend(name)
        assert backend.name == name and fmt in backend.formats
        assert "cpu" in backend.delegates
        assert isinstance(backend.version(), str) and backend.version()

    def test_open_cpu_matches_manifest_and_golden(self, name: str, fmt: str, bundles: dict[str, Path]) -> None:
        bundle = read_bundle(bundles[fmt])
        entry = bundle.manifest.model(fmt)
        engine = get_backend(name).open(bundle.model_bytes(entry), delegate="cpu", num_threads=1)
        try:
            assert engine.delegate == "cpu" and engine.delegated_partitions == 0
            assert [(s.name, s.dtype) for s in engine.inputs] == [(s.name, s.dtype) for s in entry.inputs]
            assert [s.shape for s in engine.outputs] == [s.shape for s in entry.outputs]
            ok, _err, why = compare(run_golden(engine, bundle.golden_inputs()), bundle.golden_outputs(entry),
                                   entry.golden.tolerance)
            assert ok, why
        finally:
            engine.close()
        engine.close()  # closing twice is harmless

    def test_batch_and_threads(self, name: str, fmt: str, bundles: dict[str, Path]) -> None:
        bundle = read_bundle(bundles[fmt])
        entry = bundle.manifest.model(fmt)
        x = bundle.golden_inputs()[0]
        pair = np.concatenate([x, x[:, ::-1]], axis=0)
        one = get_backend(name).open(bundle.model_bytes(entry), delegate="cpu", num_threads=1)
        two = get_backend(name).open(bundle.model_bytes(entry), delegate="cpu", num_threads=2)
        batched = one.run([pair])[0]
        assert batched.shape[0] == 2
        np.testing.assert_allclose(batched[:1], two.run([x])[0], atol=1e-4)
        np.testing.assert_allclose(batched[1:], two.run([np.ascontiguousarray(x[:, ::-1])])[0], atol=1e-4)

    def test_unknown_delegate_is_a_delegate_error(self, name: str, fmt: str, bundles: dict[str, Path]) -> None:
        bundle = read_bundle(bundles[fmt])
        with pytest.raises(DELEGATE_ERRORS):
            get_backend(name).open(bundle.model_bytes(bundle.manifest.model(fmt)), delegate="warp-drive",
                                   num_threads=None)

    def test_garbage_model_fails_typed(self, name: str, fmt: str) -> None:
        with pytest.raises((ModelLoadError, *DELEGATE_ERRORS)):
            get_backend(name).open(b"\x08\x07 this is not a model " * 8, delegate="cpu", num_threads=None)

    def test_ladder_logs_every_attempt(self, name: str, fmt: str, bundles: dict[str, Path]) -> None:
        session = load(bundles[fmt], backend=name, delegates=("gpu", "warp-drive", "cpu"))
        assert session.backend == name and session.delegate == "cpu"
        log = session.fallback_log
        assert [a.delegate for a in log] == ["gpu", "warp-drive", "cpu"]
        assert log[0].outcome in ("load-failed", "not-delegated", "absent") and log[0].reason
        assert log[1].outcome == "unsupported"
        assert log[-1].outcome == "selected"
        assert "dropped" in session.explain()

    def test_session_io(self, name: str, fmt: str, bundles: dict[str, Path]) -> None:
        session = load(bundles[fmt], backend=name, delegates=("cpu",))
        x, y = load_fashion_mnist("test", limit=8)
        hits = [session.predict(img).top_k[0].label == FASHION_LABELS[label] for img, label in zip(x, y)]
        assert sum(hits) >= 6  # a trained classifier, really running
        inp = session.inputs[0]
        assert session.run({inp.name: session.preprocess(x[0])})[0].shape == (1, 10)
        with pytest.raises(InputSpecError):
            session.run(np.zeros((1, 27, 28, 1), np.float32))
        with pytest.raises(InputSpecError):
            session.run({"nope": np.zeros((1, 28, 28, 1), np.float32)})

    def test_options(self, name: str, fmt: str) -> None:
        backend = get_backend(name)
        backend.configure(None)
        with pytest.raises(ConfigError):
            backend.configure(object())


def test_bundle_with_both_variants_runs_on_each(bundles: dict[str, Path]) -> None:
    """One bundle, a .tflite and an .onnx variant: the runtime picks by installed backends and target."""
    both = read_bundle(bundles["both"])
    assert sorted(m.format for m in both.manifest.models) == ["onnx", "tflite"]
    default = load(both)  # target x86 lists litert first
    assert default.backend == "litert" and default.model.format == "tflite"
    ort = load(both, backend="onnxruntime")
    assert ort.model.format == "onnx"
    x, _ = load_fashion_mnist("test", limit=4)
    for img in x:
        np.testing.assert_allclose(default.predict(img).outputs[0], ort.predict(img).outputs[0], atol=1e-3)
