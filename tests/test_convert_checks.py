"""Issue 11 findings on convert, each a test named after it: a pre-processing spec that cannot feed the model, a
non-UTF-8 labels file and an unwritable ``-o`` are one-line errors (exit 2) before anything is converted or written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgepack.cli import main
from edgepack.converters.preprocessing_check import check_preprocessing
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing


def _convert(capsys, model: Path, out: Path, *flags: str) -> str:
    """Run ``edgepack convert`` expecting exit 2; returns the one error line."""
    assert main(["convert", str(model), "-o", str(out), "--target", "rpi4", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(("flags", "words"), [
    (("--input-size", "0x0", "--color", "GRAY"), "must be positive"),
    (("--input-size", "28x28", "--color", "GRAY", "--mean", "1,2"), "--mean has 2 values"),
    (("--input-size", "28x28"), "--color RGB gives 3 channel(s) but the model's input"),  # the default RGB
    (("--input-size", "28x28", "--color", "GRAY", "--layout", "NCHW"), "pass --layout NHWC"),
    (("--input-size", "32x32", "--color", "GRAY"), "pass --input-size 28x28"),
], ids=["size-0x0", "mean-1,2-with-GRAY", "default-RGB-on-one-channel-model", "NCHW-on-NHWC", "size-vs-fixed"])
def test_convert_writes_bundles_that_crash_later__preprocessing_is_checked_first(
        fashion_model_path: Path, tmp_path: Path, capsys, flags: tuple[str, ...], words: str) -> None:
    out = tmp_path / "m.epk"
    err = _convert(capsys, fashion_model_path, out, *flags)
    assert words in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_convert_api_refuses_a_preprocessing_that_cannot_feed_the_model(fashion_model_path: Path) -> None:
    import edgepack as ep

    with pytest.raises(ConfigError, match="--std has 3 values"):
        ep.convert(fashion_model_path, target="rpi4", progress=False,
                   preprocessing=Preprocessing(size=(28, 28), color=ColorOrder.GRAY, std=(1.0, 1.0, 1.0)))


def test_preprocessing_check_accepts_what_fits() -> None:
    check_preprocessing(Preprocessing(size=(28, 28), color=ColorOrder.GRAY), [(-1, 28, 28, 1)])
    check_preprocessing(Preprocessing(size=(224, 224), mean=(0.5, 0.5, 0.5), layout=Layout.NCHW), [(1, 3, -1, -1)])
    check_preprocessing(Preprocessing(size=(64, 64)), [(1, 10), (1, 4)])  # several inputs: size/mean/std only
    with pytest.raises(ConfigError, match="pass --layout NCHW"):
        check_preprocessing(Preprocessing(size=(224, 224)), [(1, 3, 224, 224)])


def test_convert_non_utf8_labels_is_one_line(fashion_model_path: Path, tmp_path: Path, capsys) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_bytes("T-shirt\nTrouser\nPullover\n".encode("utf-16"))
    out = tmp_path / "m.epk"
    err = _convert(capsys, fashion_model_path, out, "--labels", str(labels))
    assert "not UTF-8" in err and "save it as UTF-8" in err and not out.exists()


@pytest.mark.parametrize("where", ["existing-directory", "missing-folder", "proc", "read-only-folder"])
def test_convert_unwritable_output_is_refused_before_converting(tmp_path: Path, capsys, where: str) -> None:
    folder = tmp_path / "ro"
    out = {"existing-directory": tmp_path, "missing-folder": tmp_path / "nope" / "m.epk",
           "proc": Path("/proc/m.epk"), "read-only-folder": folder / "m.epk"}[where]
    if where == "read-only-folder":
        if os.geteuid() == 0:  # root ignores permission bits; /sys refuses new entries even to root
            out = Path("/sys/m.epk")
        else:
            folder.mkdir()
            folder.chmod(0o500)
    # The model does not exist: had conversion started first, the error would be about the model.
    err = _convert(capsys, tmp_path / "no-such-model.keras", out)
    assert "-o" in err and "model" not in err.split("-o", 1)[0]
    assert ("is a directory" in err) if where == "existing-directory" else ("writable" in err or "exist" in err)
    if folder.exists():
        folder.chmod(0o700)
