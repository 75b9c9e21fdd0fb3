"""``--recipe auto``: budgets, real candidates converted and measured on this CPU, the estimate for another CPU,
the tflite-runtime rule, the ssh measurement path (a real sshd on loopback) and the errors people will hit."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_device_tests import loopback_sshd  # noqa: F401  (the real sshd fixture)

import edgepack as ep
from edgepack.auto.budgets import AutoBudgets, make_budgets, parse_accuracy_drop, parse_bytes, parse_latency_ms
from edgepack.auto.candidates import Candidate
from edgepack.auto.measure import Device, DeviceError, check_device, is_host_target, measure_ssh, normal_arch
from edgepack.auto.select import BudgetError, choose
from edgepack.cli import main
from edgepack.examples.datasets import FASHION_LABELS
from edgepack.examples.fashion import FASHION_PREPROCESSING
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.opcheck import unsupported_requirements
from edgepack.runtimes.recipe import Precision, get_recipe
from edgepack.runtimes.target import RPI4, X86, Budgets, Target, get_target

#: This machine's CPU, LiteRT only, three precisions: four candidates, so the test stays quick.
HOST = Target(name="auto-test-host", arch=normal_arch(os.uname().machine), cores=2, runtimes=("litert",),
              delegates=("xnnpack", "cpu"), precisions=(Precision.FP32, Precision.DYNAMIC_INT8, Precision.FULL_INT8))
KW = {"labels": FASHION_LABELS, "preprocessing": FASHION_PREPROCESSING, "progress": False}


def test_budgets_parse_what_people_write() -> None:
    assert parse_bytes("4MB", flag="x") == 4_000_000
    assert parse_bytes("4 MiB", flag="x") == 4 * 1024**2
    assert parse_bytes("4000000", flag="x") == 4_000_000 == parse_bytes(4_000_000, flag="x")
    assert parse_latency_ms("30ms") == parse_latency_ms("0.03s") == parse_latency_ms("30") == parse_latency_ms(30)
    assert parse_latency_ms("500us") == pytest.approx(0.5)
    assert parse_accuracy_drop("1.0") == parse_accuracy_drop("1%") == parse_accuracy_drop(1) == 1.0
    for bad, fn in (("four", parse_bytes), ("four", parse_latency_ms), ("four", parse_accuracy_drop),
                    ("30 parsecs", parse_latency_ms), ("-1", parse_accuracy_drop), ("0", parse_latency_ms)):
        with pytest.raises(ConfigError, match="write e.g."):
            fn(bad, flag="--max-x") if fn is parse_bytes else fn(bad)
    b = make_budgets(RPI4, max_size="4MB")
    assert b.max_size_bytes == 4_000_000 and b.max_latency_ms == RPI4.budgets.latency_ms
    assert dict(b.origin) == {"max_size_bytes": "given", "max_latency_ms": "target rpi4",
                              "max_ram_bytes": "target rpi4"}


def test_bad_auto_input_fails_before_converting(fashion_model_path: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="needs evaluation data"):
        ep.convert(fashion_model_path, recipe="auto", target=HOST, max_accuracy_drop=1.0)
    with pytest.raises(ConfigError, match="apply to recipe='auto'"):
        ep.convert(fashion_model_path, recipe="fp32", max_latency="30ms")
    if not is_host_target(RPI4):  # latency of another CPU: never from emulation
        with pytest.raises(ConfigError, match="never from emulation.*--device"):
            ep.convert(fashion_model_path, recipe="auto", target="rpi4", max_latency="30ms")
    with pytest.raises(ConfigError, match="user@host"):
        ep.convert(fashion_model_path, recipe="auto", target=HOST, device="raspberrypi")
    for argv, says in ((["--recipe", "auto", "--max-latency", "four"], "30ms"),
                       (["--recipe", "auto", "--max-size", "four"], "4MB"),
                       (["--recipe", "fp32", "--max-ram", "200MB"], "belong to --recipe auto"),
                       (["--recipe", "auto", "--io-dtype", "int8"], "tries every one"),
                       (["--recipe", "auto", "--target", "toaster"], "known targets")):
        assert main(["convert", str(fashion_model_path), "-o", str(tmp_path / "x.epk"), *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.epk").exists()


def test_custom_target_file_with_unknown_keys_is_refused(tmp_path: Path, capsys) -> None:
    assert main(["targets", "--json", "x86"]) == 0
    board = json.loads(capsys.readouterr().out)[0]
    good = tmp_path / "board.json"
    good.write_text(json.dumps({**board, "name": "my-board"}))
    assert get_target(good).name == "my-board"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**board, "npu_tops": 4}))
    with pytest.raises(ConfigError, match="npu_tops"):
        get_target(bad)


@pytest.fixture(scope="module")
def auto_bundle(fashion_model_path: Path, calibration: np.ndarray, fashion_test) -> ep.ConvertedBundle:
    x, y = fashion_test
    return ep.convert(fashion_model_path, calibration, target=HOST, recipe="auto", eval_data=(x[:400], y[:400]),
                      max_accuracy_drop=1.0, **KW)


def test_auto_picks_the_fastest_candidate_within_the_budgets(auto_bundle, tmp_path: Path) -> None:
    auto = auto_bundle.report["auto"]
    rows = {r["candidate"]: r for r in auto["candidates"]}
    assert set(rows) == {"tflite-fp32", "tflite-dynamic_int8", "tflite-full_int8", "tflite-full_int8-int8io"}
    assert auto["measured"] == "host" and auto["estimate"] is False and auto["threads"] == 1
    for r in rows.values():  # every candidate measured: size, accuracy, drop, p50/p95, RSS, and a reason
        assert r["bytes"] > 0 and 0 <= r["accuracy"] <= 1 and r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] * 0.5
        assert r["rss_bytes"] > 10e6 and r["reason"] and r["status"] in ("won", "lost")
    won = [r for r in rows.values() if r["status"] == "won"]
    assert len(won) == 1 and won[0]["candidate"] == auto["chosen"]
    within = [r for r in rows.values() if r["accuracy_drop"] <= 1.0]
    assert won[0]["p50_ms"] == min(r["p50_ms"] for r in within) and won[0]["accuracy_drop"] <= 1.0
    assert rows["tflite-fp32"]["bytes"] > 3 * rows["tflite-full_int8"]["bytes"]
    assert auto_bundle.manifest.target.name == HOST.name
    assert auto_bundle.manifest.models[0].precision == won[0]["precision"]
    path = auto_bundle.save(tmp_path / "auto.epk")
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("report.json"))["auto"]["chosen"] == auto["chosen"]
    assert ep.load(path).run(np.zeros((1, 28, 28, 1), np.float32))[0].shape == (1, 10)


def test_nothing_fits_lists_the_closest_and_what_each_missed(auto_bundle) -> None:
    auto = auto_bundle.report["auto"]
    cands = [Candidate(r["candidate"], get_recipe(r["precision"].replace("_", "-")), status="converted",
                       figures={k: r[k] for k in ("bytes", "accuracy_drop", "p50_ms", "rss_bytes")})
             for r in auto["candidates"]]
    with pytest.raises(BudgetError) as err:
        choose(cands, AutoBudgets(max_size_bytes=1000, max_latency_ms=1e-6, max_accuracy_drop=0.0), estimate=False)
    msg = str(err.value)
    assert "no candidate meets every budget (size <= 0.001 MB" in msg and "closest: tflite-" in msg
    assert "size" in msg and "latency" in msg and "relax a budget" in msg and "\n" not in msg


def test_nothing_fits_from_the_command_line(fashion_model_path: Path, calibration, tmp_path: Path, capsys) -> None:
    board = tmp_path / "tiny.json"
    board.write_text(json.dumps(replace(HOST, name="tiny", precisions=(Precision.FP32,)).to_json()))
    np.save(tmp_path / "calib.npy", calibration[:40])
    rc = main(["convert", str(fashion_model_path), "-o", str(tmp_path / "t.epk"), "--target", str(board),
               "--recipe", "auto", "--calibration", str(tmp_path / "calib.npy"), "--max-size", "100KB",
               "--input-size", "28x28", "--color", "GRAY"])
    err = capsys.readouterr().err
    assert rc == 2 and "no candidate meets every budget" in err and "tflite-fp32: size 1.69 MB > 0.1 MB" in err
    assert not (tmp_path / "t.epk").exists()


def test_another_cpu_without_a_device_is_an_estimate_and_respects_tflite_runtime(
        fashion_model_path: Path, calibration, capsys) -> None:
    """A Pi that may run tflite-runtime 2.14: dynamic-range int8 (FULLY_CONNECTED v12) must not be chosen, and the
    choice comes from the measured table, labelled an estimate."""
    if is_host_target(RPI4):
        pytest.fail("this test assumes an x86 host (the Pi target is then another CPU)")
    pi = replace(RPI4, runtimes=("litert", "tflite-runtime"), budgets=Budgets(),
                 precisions=(Precision.FP32, Precision.DYNAMIC_INT8, Precision.FULL_INT8))
    bundle = ep.convert(fashion_model_path, calibration, target=pi, recipe="auto", **KW)
    auto = bundle.report["auto"]
    rows = {r["candidate"]: r for r in auto["candidates"]}
    assert auto["estimate"] is True and auto["measured"] == "estimate" and "rpi4.json" in auto["where"]
    assert rows["tflite-dynamic_int8"]["status"] == "ineligible"
    assert "tflite-runtime" in rows["tflite-dynamic_int8"]["reason"]
    assert auto["chosen"].startswith("tflite-full_int8")  # XNNPACK int8 is the table's fastest on a Pi
    assert "DESIGN.md" in rows[auto["chosen"]]["estimate_source"] and "p50_ms" not in rows[auto["chosen"]]
    assert unsupported_requirements(bundle.manifest.models[0].requires, "tflite-runtime") == []
    assert any("estimate" in n for n in auto["notes"])
    from edgepack.auto.report import summary_lines

    assert "ESTIMATE" in summary_lines(auto)[0]


def test_unreachable_device_fails_fast(bundle_factory, fashion_model_path: Path, tmp_path: Path, capsys) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DeviceError, match="--device nobody@127.0.0.1: connect failed"):
        measure_ssh({"a": str(bundle_factory("fp32"))}, Device("nobody@127.0.0.1", port=port), threads=1)
    assert time.monotonic() - start < 30
    start = time.monotonic()  # the command line checks the device before converting anything
    assert main(["convert", str(fashion_model_path), "-o", str(tmp_path / "d.epk"), "--recipe", "auto",
                 "--target", "rpi4", "--device", "nobody@127.0.0.1", "--port", str(port)]) == 2
    assert "connect failed" in capsys.readouterr().err and time.monotonic() - start < 30
    assert not (tmp_path / "d.epk").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a loopback sshd with its own config needs root here")
def test_ssh_measurement_against_a_real_sshd(bundle_factory, loopback_sshd, monkeypatch) -> None:  # noqa: F811
    port, key = loopback_sshd
    monkeypatch.setenv("HOME", str(key.parent))  # keep known_hosts out of the real home
    device = Device(f"{os.environ.get('USER', 'root')}@127.0.0.1", port=port, identity=str(key),
                    python=sys.executable)
    assert check_device(device) == os.uname().machine
    got = measure_ssh({"fp32": str(bundle_factory("fp32")), "int8": str(bundle_factory("full-int8"))}, device,
                      threads=1, runs=30)
    for fig in got.values():
        assert fig["p50_ms"] > 0 and fig["p95_ms"] >= fig["p50_ms"] and fig["runs"] == 30
        assert fig["rss_bytes"] > 10e6 and fig["measured_on"].startswith(f"device {device.address}")


def test_x86_target_is_this_machine_here() -> None:
    assert is_host_target(X86) == (normal_arch(os.uname().machine) == "x86_64")


def test_report_plots_the_candidates(auto_bundle, tmp_path: Path) -> None:
    from edgepack.measure.report import build_report

    path = auto_bundle.save(tmp_path / "auto.epk")
    report = build_report([path], "fashion-mnist:test", limit=100, runs=10, warmup=2, progress=False)
    auto = report.entries[0].auto
    assert auto is not None and auto["chosen"] == auto_bundle.report["auto"]["chosen"]
    figs = report.figures()
    png = next(v for k, v in figs.items() if k.startswith("auto_"))
    assert png.startswith(b"\x89PNG")
    assert "--recipe auto candidates" in report.html(figs)


def test_prune_options_give_every_candidate_a_pruned_twin(fashion_model_path: Path) -> None:
    from edgepack.auto.candidates import enumerate_candidates
    from edgepack.runtimes.recipe import PruneOptions

    prune = PruneOptions(channels=0.5)
    cands = enumerate_candidates(fashion_model_path, X86, has_calibration=True, prune=prune)
    plain = [c for c in cands if c.recipe.prune is None]
    twins = [c for c in cands if c.recipe.prune == prune]
    assert plain and len(twins) == len(plain)
    assert {c.key for c in twins} == {f"{c.key}-pruned" for c in plain}
    cands = enumerate_candidates(fashion_model_path, X86, has_calibration=False, prune=prune)
    assert all(c.status == "skipped" for c in cands if c.recipe.prune is not None)
