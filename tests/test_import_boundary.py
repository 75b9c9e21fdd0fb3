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


def test_import_layers_hold_and_a_violation_is_caught(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The import-linter contracts (pyproject.toml) hold on the tree, as `lint-imports` sees it from the checkout,
    and breaking one makes lint-imports fail."""
    import os
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    lint = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(root / "pyproject.toml"),
            "--no-cache", "--no-logo"]
    kept = subprocess.run(lint, cwd=root, capture_output=True, text=True, check=False)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    # sdk/ links the sub-package folders (sdk/converters -> ../converters ...): a copy is the installed tree
    tree = tmp_path / "tree"
    shutil.copytree(root / "sdk", tree / "edgepack", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "edgepack" / "converters" / "sneaky.py").write_text("import edgepack.api\n", encoding="utf-8")
    (tree / "edgepack" / "runtimes" / "heavy.py").write_text("import tensorflow\n", encoding="utf-8")
    done = subprocess.run(lint, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0
    assert "edgepack.converters.sneaky -> edgepack.api" in done.stdout
    assert "edgepack.runtimes.heavy -> tensorflow" in done.stdout
