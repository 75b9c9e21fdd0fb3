"""Run the on-device suite (``device_tests/``) here, in an emulated arm64 userland, or on a device over ssh."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.runtimes.errors import EdgepackError, MissingDependencyError

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10",
               "-o", "ServerAliveCountMax=3", "-o", "StrictHostKeyChecking=accept-new")
REMOTE_DIR = "/tmp/edgepack-device-test"


class DeviceTestError(EdgepackError):
    """The device test suite could not be started (no bundle, unreachable host, no emulator)."""


@dataclass(frozen=True)
class SuiteOptions:
    """What to pass to the suite besides the bundle."""

    delegates: tuple[str, ...] = ()
    backend: str | None = None
    threads: int | None = None
    stability_runs: int | None = None
    budget_from_target: bool = False
    enforce_budget: bool = False
    extra: tuple[str, ...] = ()

    def args(self, bundle: str) -> list[str]:
        """pytest arguments for this bundle path (as the device sees it)."""
        out = ["--bundle", bundle, "-p", "no:cacheprovider", "-q"]
        if self.delegates:
            out += ["--delegates", ",".join(self.delegates)]
        if self.backend:
            out += ["--backend", self.backend]
        if self.threads:
            out += ["--threads", str(self.threads)]
        if self.stability_runs is not None:
            out += ["--stability-runs", str(self.stability_runs)]
        if self.budget_from_target:
            out.append("--budget-from-target")
        if self.enforce_budget:
            out.append("--enforce-budget")
        return out + list(self.extra)


def suite_dir() -> Path:
    """Where ``edgepack.device_tests`` lives on this machine."""
    spec = importlib.util.find_spec("edgepack.device_tests")
    if spec is None or spec.origin is None:
        raise DeviceTestError("edgepack.device_tests is not installed; reinstall edgepack.")
    return Path(spec.origin).parent


def _check_bundle(bundle: Path) -> Path:
    if not bundle.is_file():
        raise DeviceTestError(f"bundle {bundle} does not exist; make one with `edgepack convert`.")
    return bundle.resolve()


def run_local(bundle: Path, options: SuiteOptions, *, timeout: float = 1800) -> int:
    """Run the suite with this Python (output streams through); returns pytest's exit code."""
    path = _check_bundle(bundle)
    if importlib.util.find_spec("pytest") is None:
        raise MissingDependencyError.for_module("pytest", purpose="`edgepack device-test` (the suite runs in pytest)")
    cmd = [sys.executable, "-m", "pytest", str(suite_dir()), *options.args(str(path))]
    return subprocess.run(cmd, timeout=timeout, check=False).returncode


def run_emulated_arm64(bundle: Path, options: SuiteOptions, *, cache: Path, cpu: str = "cortex-a72",
                       legacy_tflite: bool = False, timeout: float = 1800) -> int:
    """Run the suite under qemu in the cached arm64 userland (built on first use)."""
    from edgepack.device.emulation import build_rootfs, run_emulated

    path = _check_bundle(bundle)
    info = build_rootfs(cache, cpu=cpu, with_tflite_runtime=True, progress=lambda msg: print(msg, flush=True))
    with tempfile.TemporaryDirectory(prefix="edgepack-overlay-") as tmp:
        overlay = emulated_overlay(Path(tmp) / "overlay")
        suite = overlay / "edgepack" / "device_tests"
        args = ["-m", "pytest", str(suite), "--rootdir", str(overlay), *options.args(str(path))]
        env = {"PYTHONPATH": str(overlay), "TF_CPP_MIN_LOG_LEVEL": "3"}
        print(f"emulated arm64 ({cpu}{', tflite-runtime 2.14 + numpy<2' if legacy_tflite else ''}): "
              f"pytest {' '.join(args[2:])}", flush=True)
        proc = run_emulated(info, args, env=env, cwd=tmp, timeout=timeout, legacy_tflite=legacy_tflite,
                            capture_output=False)
    return proc.returncode


def emulated_overlay(dest: Path) -> Path:
    """Lay out edgepack's own packages (sdk, runtimes, a copy of the suite) under ``dest`` for the emulated python.

    Works for the editable checkout and an installed wheel alike: the emulated ``sys.path`` gets ``dest`` and the
    rootfs's aarch64 site dir, never the folder edgepack is installed in (the host's x86 site-packages).
    """
    from edgepack.device.emulation import package_overlay

    return package_overlay(dest, {
        "edgepack": _package_dir("edgepack"), "edgepack.runtimes": _package_dir("edgepack.runtimes"),
        "edgepack.device_tests": suite_dir(),
    }, copies=("edgepack.device_tests",))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise DeviceTestError(f"{name} is not installed; reinstall edgepack.")
    return Path(spec.origin).parent


def ssh_prefixes(target: str, *, port: int | None = None, identity: str | None = None) -> tuple[list[str], list[str]]:
    """The ``ssh`` (ending with ``target``) and ``scp -q -r`` command prefixes: batch mode, 10 s connect timeout."""
    common = list(SSH_OPTIONS) + (["-i", identity] if identity else [])
    ssh = ["ssh", *common, *(["-p", str(port)] if port else []), target]
    scp = ["scp", "-q", "-r", *common, *(["-P", str(port)] if port else [])]
    return ssh, scp


def ssh_commands(target: str, bundle: Path, options: SuiteOptions, *, port: int | None = None,
                 python: str = "python3", identity: str | None = None) -> list[list[str]]:
    """The commands that copy the bundle and suite to ``target`` and run it there (no shell on this side)."""
    ssh, scp = ssh_prefixes(target, port=port, identity=identity)
    remote_bundle = f"{REMOTE_DIR}/{bundle.name}"
    run = " ".join(shlex.quote(a) for a in [python, "-m", "pytest", f"{REMOTE_DIR}/device_tests",
                                           *options.args(remote_bundle)])
    return [
        [*ssh, f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR}"],
        [*scp, str(bundle), str(suite_dir()), f"{target}:{REMOTE_DIR}/"],
        [*ssh, f"cd {REMOTE_DIR} && {run}"],
    ]


def run_ssh(target: str, bundle: Path, options: SuiteOptions, *, port: int | None = None,
            identity: str | None = None, python: str = "python3", timeout: float = 1800) -> int:
    """Copy the bundle + suite to a device and run it there. The device needs ``edgepack[litert]`` + pytest."""
    path = _check_bundle(bundle)
    setup, copy, run = ssh_commands(target, path, options, port=port, python=python, identity=identity)
    for step, cmd in (("connect", setup), ("copy", copy)):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DeviceTestError(
                f"ssh {step} to {target} timed out after 60 s; check the address and network."
            ) from exc
        except FileNotFoundError as exc:
            raise DeviceTestError(f"{cmd[0]} is not installed here; install openssh-client.") from exc
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise DeviceTestError(f"ssh {step} to {target} failed ({reason}); check the host, the user and the key.")
    try:
        return subprocess.run(run, timeout=timeout, check=False).returncode
    except subprocess.TimeoutExpired as exc:
        raise DeviceTestError(f"device tests on {target} did not finish in {timeout:g} s.") from exc


