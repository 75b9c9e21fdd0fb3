"""``edgepack targets | formats``, ``--target NAME|FILE.json``, and recipes resolved with ``--format``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import build_parser, main
from edgepack.cli.convert import recipes_from
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.target import Budgets, Target, get_target, register_target, registered_targets, unregister_target

BOARD = Target(name="test-board", arch="aarch64", cores=2, runtimes=("onnxruntime",), delegates=("cpu",),
               precisions=("full_int8", "fp32"), budgets=Budgets(model_bytes=8_000_000, latency_ms=250.0),
               description="a board only this test knows")


@pytest.fixture
def board_file(tmp_path: Path) -> Path:
    path = tmp_path / "board.json"
    path.write_text(json.dumps(BOARD.to_json()), encoding="utf-8")
    return path


def _rows(text: str) -> dict[str, list[str]]:
    """Plain-table rows by their first column."""
    return {line.split()[0]: line.split() for line in text.splitlines() if line and not line.startswith(" ")}


def test_targets_lists_every_registered_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["name"][:6] == ["name", "arch", "cores", "runtimes", "delegates", "precisions"]
    for name, t in registered_targets().items():
        assert rows[name][:6] == [name, t.arch, str(t.cores), ",".join(t.runtimes), ",".join(t.delegates),
                                  ",".join(t.precisions)]
    assert rows["rpi4"][6:] == ["50", "MB", "1", "GB", "100", "ms"] and rows["x86"][6:] == ["-", "-", "-"]


def test_targets_json_is_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "--json"]) == 0
    listed = [Target.from_json(d) for d in json.loads(capsys.readouterr().out)]
    assert listed == list(registered_targets().values())


def test_formats_lists_every_registered_format(capsys: pytest.CaptureFixture[str]) -> None:
    from edgepack.converters.formats import registered_formats

    formats = registered_formats()
    assert {"tflite", "onnx"} <= set(formats)
    assert main(["formats"]) == 0
    rows = _rows(capsys.readouterr().out)
    for name, cls in formats.items():
        assert rows[name][1] == f".{cls.extension}"
    assert main(["formats", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["extension"], d["description"]) for d in doc] == [
        (n, f".{c.extension}", c.description) for n, c in formats.items()]


def test_a_target_file_is_accepted_and_listed(board_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert get_target(str(board_file)) == BOARD == get_target(board_file)
    assert main(["targets", str(board_file), "rpi4"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert set(rows) == {"name", "test-board", "rpi4"} and rows["test-board"][1:3] == ["aarch64", "2"]
    register_target(get_target(board_file))
    try:
        assert main(["targets"]) == 0
        assert "test-board" in _rows(capsys.readouterr().out)
        assert main(["targets", "--json"]) == 0
        assert BOARD.to_json() in json.loads(capsys.readouterr().out)
    finally:
        unregister_target(BOARD.name)
    assert BOARD.name not in registered_targets()


def test_convert_takes_a_target_file_and_every_recipe_gets_the_format(
    board_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edgepack.api

    seen: dict[str, object] = {}

    def fake_convert(model: object, calibration: object = None, **kwargs: object) -> None:
        seen.update(kwargs, model=model)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(edgepack.api, "convert", fake_convert)
    assert main(["convert", "m.keras", "--target", str(board_file), "--recipe", "fp32,full-int8",
                 "--format", "onnx"]) == 2
    assert seen["target"] == BOARD
    assert [(r.name, r.format) for r in seen["recipe"]] == [("onnx_fp32", "onnx"), ("qdq_int8", "onnx")]
    assert capsys.readouterr().err.strip() == "error: stopped by the test"


@pytest.mark.parametrize("argv", [["convert", "m.keras", "--target", "toaster"], ["targets", "toaster"]])
def test_unknown_target_is_one_line_listing_the_known_ones(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown target 'toaster'")
    assert all(name in err[0] for name in registered_targets())


def _recipes(*argv: str) -> list[tuple[str, str]]:
    args = build_parser().parse_args(["convert", *argv])
    return [(r.name, r.format) for r in recipes_from(args)]


def test_format_applies_to_every_recipe_of_a_list() -> None:
    assert _recipes("m.keras", "--recipe", "fp32,full-int8", "--format", "onnx") == [("onnx_fp32", "onnx"),
                                                                                   ("qdq_int8", "onnx")]
    assert _recipes("m.keras", "--recipe", "full-int8", "--format", "onnx") == [("qdq_int8", "onnx")]
    assert _recipes("m.onnx", "--recipe", "fp32,full-int8") == [("onnx_fp32", "onnx"), ("qdq_int8", "onnx")]
    assert _recipes("m.keras", "--recipe", "full-int8,qdq-int8") == [("full_int8", "tflite"), ("qdq_int8", "onnx")]
    assert _recipes("m.keras", "--recipe", "fp32,full-int8", "--format", "tflite") == [("fp32", "tflite"),
                                                                                     ("full_int8", "tflite")]
    with pytest.raises(ConfigError, match="makes onnx models, not tflite"):
        _recipes("m.keras", "--recipe", "fp32,qdq-int8", "--format", "tflite")
    with pytest.raises(ConfigError, match="--recipe is empty"):
        _recipes("m.keras", "--recipe", ",")


def test_onnx_options_go_to_the_onnx_recipes_only() -> None:
    args = build_parser().parse_args(["convert", "m.keras", "--recipe", "full-int8,qdq-int8", "--limit", "50",
                                      "--calibration-method", "percentile", "--exclude", "Conv_0"])
    tfl, qdq = recipes_from(args)
    assert (tfl.format, tfl.onnx, tfl.exclude, tfl.calibration_samples) == ("tflite", None, (), 50)
    assert (qdq.options.calibration_method.value, qdq.exclude, qdq.calibration_samples) == ("percentile",
                                                                                              ("Conv_0",), 50)
    with pytest.raises(ConfigError, match="for ONNX recipes"):
        recipes_from(build_parser().parse_args(["convert", "m.keras", "--recipe", "fp32,full-int8",
                                                "--float-first-layers", "1"]))


def test_console_script_lists_targets() -> None:
    exe = Path(sys.executable).with_name("edgepack")
    exe_path = str(exe) if exe.is_file() else shutil.which("edgepack")
    assert exe_path, "the `edgepack` console script is not installed (pip install -e .)"
    proc = subprocess.run([exe_path, "targets"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert set(registered_targets()) <= set(_rows(proc.stdout))


def test_multi_variant_bundle_from_a_target_file(fashion_model_path: Path, calibration: np.ndarray, board_file: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One real conversion: ``--format onnx`` reaches every recipe, the target file is used, inspect shows each."""
    from edgepack.runtimes import read_bundle

    np.save(tmp_path / "calib.npy", calibration[:40])
    out = tmp_path / "multi.epk"
    assert main(["convert", str(fashion_model_path), "-o", str(out), "--target", str(board_file), "--recipe",
                 "fp32,full-int8", "--format", "onnx", "--calibration", str(tmp_path / "calib.npy"),
                 "--input-size", "28x28", "--color", "GRAY"]) == 0
    manifest = read_bundle(out).manifest
    assert manifest.target == BOARD
    assert [(m.format, m.recipe.name) for m in manifest.models] == [("onnx", "onnx_fp32"), ("onnx", "qdq_int8")]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "target: test-board" in text and "recipe None" not in text
    assert "recipe onnx_fp32 (onnx, fp32)" in text and "recipe qdq_int8 (onnx, full_int8)" in text


def test_exclude_goes_to_tflite_full_int8_when_no_onnx_recipe_is_named() -> None:
    args = build_parser().parse_args(["convert", "m.keras", "--recipe", "fp32,full-int8", "--exclude", "dense_1"])
    fp32, int8 = recipes_from(args)
    assert (fp32.exclude, int8.exclude) == ((), ("dense_1",))
    with pytest.raises(ConfigError, match="makes none"):
        recipes_from(build_parser().parse_args(["convert", "m.keras", "--recipe", "fp32", "--exclude", "dense_1"]))
