"""Latency and peak RSS of the candidates, on the target's runtime: here when the target is this machine's kind
(interleaved in one process, RSS in a fresh process each), or on a device over ssh (``--device user@host``, the
device-test transport). Never from emulation: emulated timings say nothing about a device's speed."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.device.suite import DeviceTestError, ssh_prefixes
from edgepack.runtimes.benchmark import LatencyStats, golden_call, interleaved
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.target import Target

REMOTE_DIR = "/tmp/edgepack-auto"
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


class DeviceError(DeviceTestError):
    """The device given with ``--device`` cannot be reached or cannot run the benchmark."""


@dataclass(frozen=True)
class Device:
    """A device reached over ssh (``user@host``) that has ``edgepack[litert]`` (or ``[onnxruntime]``) installed."""

    address: str
    port: int | None = None
    identity: str | None = None
    python: str = "python3"

    @classmethod
    def parse(cls, device: str | Device) -> Device:
        """``user@host`` (or a :class:`Device`).

        Raises:
            ConfigError: not ``user@host``.
        """
        if isinstance(device, Device):
            return device
        user, at, host = str(device).partition("@")
        if not at or not user or not host or " " in device:
            raise ConfigError(f"--device {device!r}: write user@host (e.g. pi@raspberrypi.local); add --port and "
                              "--identity when needed.")
        return cls(str(device))


def normal_arch(arch: str) -> str:
    """``amd64`` → ``x86_64``, ``arm64`` → ``aarch64``."""
    a = arch.lower()
    return _ARCH_ALIASES.get(a, a)


def is_host_target(target: Target) -> bool:
    """True when this machine has the target's CPU architecture (its latency can be measured here)."""
    return normal_arch(target.arch) == normal_arch(platform.machine())


def p95(stats: LatencyStats) -> float | None:
    """The 95th percentile from the kept samples (None when they were not kept)."""
    return float(np.percentile(stats.samples_ms, 95)) if stats.samples_ms else None


def measure_host(paths: dict[str, str], *, threads: int, seconds: float = 6.0,
                 slow_factor: float = 4.0) -> dict[str, dict[str, Any]]:
    """p50/p95 latency of every bundle, interleaved in this process (``threads`` each), and the peak RSS of each in a
    fresh process (:func:`~edgepack.runtimes.bench_process.benchmark_isolated`).

    A short screen of every bundle sizes the runs to about ``seconds`` of timing; a bundle over ``slow_factor`` × the
    fastest screened is timed alone (5 runs) instead of slowing every block down.
    """
    import time

    from edgepack.runtimes import load
    from edgepack.runtimes.bench_process import benchmark_isolated

    fns, sessions = {}, []
    for key, path in paths.items():
        session = load(path, num_threads=threads)
        sessions.append(session)
        fns[key] = golden_call(session)
    screen: dict[str, list[float]] = {}
    for key, fn in fns.items():
        fn()
        screen[key] = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            screen[key].append(time.perf_counter() - t)
    fastest = min(min(v) for v in screen.values())
    fast = {k: fn for k, fn in fns.items() if min(screen[k]) <= slow_factor * fastest}
    per_round = sum(min(screen[k]) for k in fast)
    blocks = 10
    per_block = int(max(1, min(200, seconds / max(per_round, 1e-6) / blocks)))
    stats = interleaved(fast, blocks=blocks, per_block=per_block, warmup=min(10, per_block))
    out: dict[str, dict[str, Any]] = {}
    for key, path in paths.items():
        if key in stats:
            s = stats[key]
            out[key] = {"p50_ms": s.p50_ms, "p95_ms": p95(s), "runs": s.runs, "measured_on": "host, interleaved"}
        else:
            alone = [*screen[key]]
            for _ in range(2):
                t = time.perf_counter()
                fns[key]()
                alone.append(time.perf_counter() - t)
            ms = np.asarray(alone) * 1e3
            out[key] = {"p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "runs": len(ms),
                        "measured_on": f"host, alone (over {slow_factor:g}x the fastest)"}
        runs = int(max(5, min(100, 1.0 / max(min(screen[key]), 1e-6))))
        res = benchmark_isolated(path, warmup=3, runs=runs, threads=threads, timeout=600)
        out[key]["rss_bytes"] = res.memory.peak_rss_bytes
    for session in sessions:
        session.close()
    return out


def ssh_base(device: Device) -> tuple[list[str], list[str]]:
    """The ``ssh`` and ``scp`` command prefixes: the device-test transport's (batch mode, 10 s connect timeout)."""
    return ssh_prefixes(device.address, port=device.port, identity=device.identity)


def _step(cmd: list[str], what: str, device: Device, *, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"--device {device.address}: {what} timed out after {timeout:.0f} s; check the address, "
                          "the network and that the device is on.") from exc
    except FileNotFoundError as exc:
        raise DeviceError(f"{cmd[0]} is not installed here; install openssh-client.") from exc
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise DeviceError(f"--device {device.address}: {what} failed ({reason}); check the host, the user, the "
                          "port and the key (--identity).")
    return proc


def check_device(device: Device) -> str:
    """Before any conversion: the device answers over ssh and has edgepack; returns its ``uname -m``.

    Raises:
        DeviceError: unreachable (within ~25 s: ssh's ConnectTimeout is 10 s), or no edgepack for ``device.python``.
    """
    ssh, _ = ssh_base(device)
    py = shlex.quote(device.python)
    proc = _step([*ssh, f"uname -m && {py} -m edgepack --version 2>&1 || echo edgepack-missing"], "connect", device,
                 timeout=25)
    if "edgepack-missing" in proc.stdout:
        raise DeviceError(f"--device {device.address}: `{device.python} -m edgepack` does not run there; "
                          "`pip install edgepack[litert]` on the device (and [onnxruntime] for ONNX candidates).")
    return (proc.stdout.split() or ["?"])[0]


def measure_ssh(paths: dict[str, str], device: Device, *, threads: int, runs: int = 100,
                timeout: float = 1800) -> dict[str, dict[str, Any]]:
    """Copy the bundles to the device and run ``python3 -m edgepack bench --json`` there, one fresh process per
    bundle (latency p50/p95 and peak RSS); the device needs ``edgepack[litert]`` (and ``[onnxruntime]`` for ONNX).

    Raises:
        DeviceError: unreachable (fails within ~25 s: ssh's ConnectTimeout is 10 s), copy failed, or edgepack
            missing on the device.
    """
    ssh, scp = ssh_base(device)
    _step([*ssh, f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR} && uname -m"], "connect", device, timeout=25)
    names = {key: f"{k}.epk" for k, key in enumerate(paths)}
    with tempfile.TemporaryDirectory(prefix="edgepack-auto-") as tmp:
        staged = []
        for key, path in paths.items():
            link = Path(tmp) / names[key]
            link.write_bytes(Path(path).read_bytes())
            staged.append(str(link))
        _step([*scp, *staged, f"{device.address}:{REMOTE_DIR}/"], "copy", device, timeout=300)
        py = shlex.quote(device.python)
        loop = " ; ".join(
            f"{py} -m edgepack bench {n} --json {n}.json --runs {runs} --warmup 10 --threads {threads} "
            f">{n}.log 2>&1 || echo {n} >> failed.txt" for n in names.values())
        script = f"cd {REMOTE_DIR} && touch failed.txt && {loop} ; cat failed.txt"
        proc = _step([*ssh, script], "benchmark", device, timeout=timeout)
        failed = set(proc.stdout.split())
        got = [f"{device.address}:{REMOTE_DIR}/{n}.json" for n in names.values() if n not in failed]
        if got:
            _step([*scp, *got, tmp], "copy back", device, timeout=120)
        out: dict[str, dict[str, Any]] = {}
        for key, n in names.items():
            if n in failed:
                log = _step([*ssh, f"tail -n 3 {REMOTE_DIR}/{n}.log"], "read log", device, timeout=30).stdout
                if "No module named edgepack" in log:
                    raise DeviceError(f"--device {device.address}: edgepack is not installed for {device.python} "
                                      "there; `pip install edgepack[litert]` on the device.")
                out[key] = {"error": (log.strip().splitlines() or ["failed"])[-1][:300]}
                continue
            doc = json.loads((Path(tmp) / f"{n}.json").read_text())
            inv = doc["invoke"]
            samples = inv.get("samples_ms") or []
            out[key] = {"p50_ms": inv["p50_ms"], "p95_ms": float(np.percentile(samples, 95)) if samples else None,
                        "runs": inv["runs"], "rss_bytes": doc["memory"]["peak_rss_bytes"],
                        "measured_on": f"device {device.address} ({doc['environment']['machine']})"}
    return out

