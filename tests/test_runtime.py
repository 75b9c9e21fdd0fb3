"""Runtime: Session I/O, pre/post-processing, and the verified delegate ladder in real LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.runtimes import (
    BackendNotFoundError,
    BackendUnavailableError,
    InputSpecError,
    NoUsableDelegateError,
    load,
)
from edgepack.runtimes.backends import get_backend
from edgepack.runtimes.backends.litert import LiteRTBackend
from edgepack.runtimes.backends.tflite_common import TFLiteEngine


def test_run_accepts_array_list_and_dict(bundle_factory) -> None:
    session = load(bundle_factory("fp32"))
    x = session.bundle.golden_inputs()[0]
    a = session.run(x)[0]
    b = session.run([x])[0]
    c = session.run({session.inputs[0].name: x})[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    golden = session.bundle.golden_outputs(session.model)[0]
    np.testing.assert_allclose(a, golden, atol=session.model.golden.tolerance[0].atol)


def test_batch_dimension_is_resized(bundle_factory) -> None:
    session = load(bundle_factory("fp32"))
    x = np.repeat(session.bundle.golden_inputs()[0], 4, axis=0)
    out = session.run(x)[0]
    assert out.shape == (4, 10)
    np.testing.assert_allclose(out[3], session.run(x[:1])[0][0], atol=1e-5)


def test_wrong_inputs_get_typed_errors(bundle_factory) -> None:
    session = load(bundle_factory("full-int8"))
    with pytest.raises(InputSpecError, match="expects shape"):
        session.run(np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(InputSpecError, match="expects shape"):
        session.run(np.zeros((28, 28), np.float32))
    with pytest.raises(InputSpecError, match="expects dtype float32.*x.astype"):
        session.run(np.zeros((1, 28, 28, 1), np.uint8))
    with pytest.raises(InputSpecError, match="takes 1 input"):
        session.run([np.zeros((1, 28, 28, 1), np.float32)] * 2)
    with pytest.raises(InputSpecError, match="unknown \\['bogus'\\]"):
        session.run({"bogus": np.zeros((1, 28, 28, 1), np.float32)})
    with pytest.raises(InputSpecError, match="not str"):
        session.run("image.png")  # type: ignore[arg-type]


def test_predict_classifies_a_real_image(bundle_factory, fashion_test) -> None:
    session = load(bundle_factory("full-int8"))
    x, y = fashion_test
    hits = 0
    for img, label in zip(x[:200], y[:200]):
        pred = session.predict(img, top_k=3)
        assert len(pred.top_k) == 3 and pred.top_k[0].score >= pred.top_k[1].score
        hits += pred.top_k[0].index == label
    assert hits / 200 > 0.75
    assert session.predict(x[0]).top_k[0].label in session.labels
    # A colour photo-sized BGR frame goes through the same spec (grayscale, resize).
    frame = np.repeat(np.kron(x[0], np.ones((8, 8), np.uint8))[:, :, None], 3, axis=2)
    assert session.predict(frame).top_k[0].index == session.predict(x[0]).top_k[0].index


def test_absent_gpu_and_nnapi_libraries_are_logged_for_real(bundle_factory) -> None:
    session = load(bundle_factory("fp32"), delegates=("gpu", "nnapi", "xnnpack", "cpu"))
    outcomes = {a.delegate: a for a in session.fallback_log}
    assert outcomes["gpu"].outcome == "load-failed" and "OSError" in outcomes["gpu"].reason
    assert "libtensorflowlite_gpu_delegate" in outcomes["gpu"].reason
    assert outcomes["nnapi"].outcome == "load-failed"
    assert session.delegate == "xnnpack" and session.delegated_partitions >= 1
    assert outcomes["xnnpack"].outcome == "selected"
    assert "cpu" not in outcomes  # the ladder stops at the first verified delegate


def test_xnnpack_without_kernels_falls_to_cpu(bundle_factory) -> None:
    session = load(bundle_factory("int16x8"), delegates=("xnnpack", "cpu"))
    xnn = session.fallback_log[0]
    assert xnn.outcome == "not-delegated" and xnn.partitions == 0
    assert session.delegate == "cpu"


class WrongNumbersEngine(TFLiteEngine):
    """A 'GPU' that loads and claims partitions but returns wrong numbers (hardware we can't have)."""

    def __init__(self, module, model, *, delegate, num_threads) -> None:
        super().__init__(module, model, delegate="cpu", num_threads=num_threads)
        self.delegate, self.delegated_partitions = "gpu", 1

    def run(self, inputs):
        return [o + np.float32(0.5) for o in super().run(inputs)]


def test_delegate_with_wrong_numbers_is_dropped(bundle_factory, monkeypatch) -> None:
    real_open = LiteRTBackend.open

    def open_with_fake_gpu(self, model, *, delegate, num_threads):
        if delegate == "gpu":
            import ai_edge_litert.interpreter as module

            return WrongNumbersEngine(module, model, delegate="gpu", num_threads=num_threads)
        return real_open(self, model, delegate=delegate, num_threads=num_threads)

    monkeypatch.setattr(LiteRTBackend, "open", open_with_fake_gpu)
    session = load(bundle_factory("fp32"), delegates=("gpu", "xnnpack"))
    gpu = session.fallback_log[0]
    assert gpu.outcome == "golden-mismatch" and gpu.max_abs_error == pytest.approx(0.5, abs=1e-3)
    assert session.delegate == "xnnpack"
    with pytest.raises(NoUsableDelegateError, match="golden-mismatch"):
        load(bundle_factory("fp32"), delegates=("gpu",))


def test_no_usable_delegate_lists_every_attempt(bundle_factory) -> None:
    with pytest.raises(NoUsableDelegateError, match="(?s)gpu: load-failed.*\n.*nnapi: load-failed.*add 'cpu'"):
        load(bundle_factory("fp32"), delegates=("gpu", "nnapi"))
    with pytest.raises(NoUsableDelegateError, match="has no 'tpu' delegate"):
        load(bundle_factory("fp32"), delegates=("tpu",))


def test_backend_lookup_errors() -> None:
    with pytest.raises(BackendNotFoundError, match="known backends: .*litert"):
        get_backend("coreml-magic")
    # tflite-runtime is a real backend whose library is not installed in this environment.
    with pytest.raises(BackendUnavailableError, match="edgepack\\[tflite-runtime\\]"):
        get_backend("tflite-runtime")


def test_tf_lite_last_resort_backend_matches_golden(bundle_factory) -> None:
    session = load(bundle_factory("fp32"), backend="tf-lite", delegates=("cpu",))
    assert session.backend == "tf-lite" and session.fallback_log[-1].outcome == "selected"


def test_two_sessions_in_two_threads_agree(bundle_factory) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = bundle_factory("full-int8")
    x = load(path).bundle.golden_inputs()[0]
    sessions = [load(path), load(path)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: [s.run(x)[0] for _ in range(50)], sessions))
    for outs in results:
        for o in outs:
            np.testing.assert_array_equal(o, results[0][0])
