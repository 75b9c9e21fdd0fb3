"""``edgepack device-test``: here, over ssh (a real sshd on loopback), and under emulated arm64 (slow)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgepack.cli import main
from edgepack.device.suite import DeviceTestError, SuiteOptions, run_ssh, ssh_commands

ROOT = Path(__file__).resolve().parents[1]


def test_device_test_runs_the_suite_here(bundle_factory, capfd) -> None:
    rc = main(["device-test", str(bundle_factory("full-int8")), "--stability-runs", "200", "--delegates",
               "gpu,xnnpack,cpu"])
    out = capfd.readouterr().out
    assert rc == 0, out
    assert "12 passed" in out and "platform.machine()" in out
    assert "dropped: gpu" in out  # the absent GPU delegate is explained


def test_device_test_fails_on_a_bundle_that_cannot_run(bundle_factory, tmp_path: Path, capfd) -> None:
    bad = tmp_path / "bad.epk"
    data = bytearray(bundle_factory("fp32").read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert main(["device-test", str(bad), "--stability-runs", "10"]) != 0
    assert main(["device-test", str(tmp_path / "missing.epk")]) == 2


def test_ssh_commands_are_bounded_and_quoted(tmp_path: Path) -> None:
    bundle = tmp_path / "my model.epk"
    setup, copy, run = ssh_commands("pi@raspberrypi.local", bundle, SuiteOptions(delegates=("xnnpack", "cpu")),
                                    port=2222)
    for cmd in (setup, copy, run):
        assert "BatchMode=yes" in cmd and "ConnectTimeout=10" in cmd
    assert copy[0] == "scp" and "-P" in copy and str(bundle) in copy
    assert "'/tmp/edgepack-device-test/my model.epk'" in run[-1] and "--delegates xnnpack,cpu" in run[-1]


def test_unreachable_ssh_target_fails_fast(bundle_factory) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DeviceTestError, match="ssh connect to nobody@127.0.0.1 failed"):
        run_ssh("nobody@127.0.0.1", bundle_factory("fp32"), SuiteOptions(), port=port)
    assert time.monotonic() - start < 30


@pytest.fixture()
def loopback_sshd(tmp_path: Path):
    """A real OpenSSH server on 127.0.0.1 with a throw-away host key and client key (needs openssh-server)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.fail("openssh-server is not installed: `make test` installs it (apt-get install openssh-server)")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "client.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield port, tmp_path / "client"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="a loopback sshd with its own config needs root here")
def test_ssh_path_against_a_real_sshd(bundle_factory, loopback_sshd, capfd, monkeypatch) -> None:
    port, key = loopback_sshd
    monkeypatch.setenv("HOME", str(key.parent))  # keep known_hosts out of the real home
    user = os.environ.get("USER", "root")
    rc = run_ssh(f"{user}@127.0.0.1", bundle_factory("full-int8"), SuiteOptions(stability_runs=100), port=port,
                 identity=str(key), python=sys.executable)
    out = capfd.readouterr().out
    assert rc == 0, out
    assert "12 passed" in out


@pytest.mark.slow
def test_emulated_arm64_litert_and_legacy_tflite_runtime(bundle_factory, capfd) -> None:
    cache = str(ROOT / ".cache" / "arm64")
    assert main(["device-test", str(bundle_factory("full-int8")), "--emulate", "arm64", "--cache", cache,
                 "--stability-runs", "100"]) == 0
    out = capfd.readouterr().out
    assert "platform.machine() = 'aarch64'" in out and "12 passed" in out
    assert main(["device-test", str(bundle_factory("fp32")), "--emulate", "arm64", "--cache", cache,
                 "--legacy-tflite", "--stability-runs", "100"]) == 0
    assert "tflite-runtime 2.14.0, numpy 1.26" in capfd.readouterr().out
    # A dynamic-range model needs FULLY_CONNECTED v12: refused before loading, with the reason.
    assert main(["device-test", str(bundle_factory("dynamic-int8")), "--emulate", "arm64", "--cache", cache,
                 "--legacy-tflite", "--stability-runs", "10"]) != 0
    assert "needs op versions that tflite-runtime does not have: FULLY_CONNECTED v12" in capfd.readouterr().out
