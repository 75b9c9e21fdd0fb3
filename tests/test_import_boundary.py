"""The on-device runtime must stay small: no TensorFlow, ONNX, Keras, torch or OpenCV on import."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "keras", "onnx", "torch", "cv2", "tf2onnx")


def _modules_after(code: str) -> set[str]:
    probe = f"import sys; {code}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_runtime_import_pulls_no_heavy_library() -> None:
    loaded = _modules_after("import edgepack.runtimes; from edgepack.runtimes import load, read_bundle")
    assert "edgepack.runtimes" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_sdk_package_import_is_lazy() -> None:
    loaded = _modules_after("import edgepack")
    assert not loaded & set(HEAVY)


def test_loading_a_bundle_needs_no_tensorflow(bundle_factory) -> None:
    path = bundle_factory("full-int8")
    code = f"from edgepack.runtimes import load; s = load({str(path)!r}); s.run(s.bundle.golden_inputs())"
    loaded = _modules_after(code)
    assert "ai_edge_litert" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
