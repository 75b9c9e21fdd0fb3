"""The ``edgepack`` command: real conversions and runs; user errors are one line and exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import build_parser, main
from edgepack.cli import options as cli_args


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack.cli", *args], capture_output=True, text=True, timeout=300)


def test_convert_inspect_run_verify(fashion_model_path, calibration, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "calib.npy", calibration[:40])
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class{i}" for i in range(10)))
    out = tmp_path / "f.epk"
    rc = main(["convert", str(fashion_model_path), "-o", str(out), "--target", "rpi5", "--recipe", "full-int8",
               "--calibration", str(tmp_path / "calib.npy"), "--labels", str(labels), "--input-size", "28x28",
               "--color", "GRAY"])
    assert rc == 0 and out.is_file()
    assert "full_int8" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "target: rpi5" in text and "CONV_2D v" in text and "full_int8" in text
    import cv2

    cv2.imwrite(str(tmp_path / "img.png"), calibration[0])
    assert main(["run", str(out), str(tmp_path / "img.png"), "--top-k", "2"]) == 0
    assert "class" in capsys.readouterr().out
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28, 1), np.float32))
    assert main(["run", str(out), str(tmp_path / "x.npy")]) == 0
    assert main(["verify", str(out), "--delegates", "gpu,cpu"]) == 0
    text = capsys.readouterr().out
    assert "litert/gpu: load-failed" in text and "golden outputs match on litert/cpu" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "missing.epk"], "does not exist"),
        (["convert", "missing.keras"], "does not exist"),
        (["verify", "{bad}"], "not a valid bundle"),
        (["convert", "{model}", "--target", "toaster"], "unknown target"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, message, fashion_model_path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.epk"
    bad.write_bytes(b"not a zip")
    args = [a.format(bad=bad, model=fashion_model_path) for a in args]
    proc = _cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def _verbs(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _verbs(sub, f"{prefix}{name} ")


def test_runtime_options_are_defined_once() -> None:
    """Every verb that takes ``--backend/--delegates/--threads`` gets the same options from ``options.py``."""
    seen = {}
    for verb, parser in _verbs(build_parser()):
        opts = {o: a for a in parser._actions for o in a.option_strings}
        if "--delegates" in opts:
            seen[verb] = tuple((o, opts[o].type, opts[o].help) for o in ("--backend", "--delegates", "--threads")
                               if o in opts)
    assert set(seen) == {"run", "verify", "device-test", "eval", "bench", "store install", "store rollback",
                         "store recover"}
    assert all(spec[1][1] is cli_args.csv for spec in seen.values())
    assert len({spec[:2] for spec in seen.values()}) == 1 and len({spec for spec in seen.values()}) == 2
    assert [o for o, _, _ in seen["store recover"]] == ["--backend", "--delegates"]
