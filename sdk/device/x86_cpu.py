"""Run this host's own x86-64 Python under qemu-user as an x86 CPU of another generation.

int8 kernels differ by CPU (XNNPACK and ONNX Runtime pick SSE4.1, AVX2, AVX-512 or VNNI code at run time), so a
bundle's golden check must hold on CPUs other than the one that made it. ``qemu-x86_64-static -cpu MODEL`` runs
the very same venv (no userland to build) with only that model's instruction set visible to CPUID, so the
runtimes pick the kernels they would pick there. qemu's TCG has no AVX-512 (7.2–9.x): an AVX-512 model
(``Skylake-Server``, ``Cooperlake``) is run with its AVX2 subset; AVX-512/VNNI is checked natively on a host that
has it. See ``docs/emulation.md``.

CLI::

    python -m edgepack.device.x86_cpu features --cpu Nehalem
    python -m edgepack.device.x86_cpu check fashion.epk --cpu Nehalem      # golden errors per model and kernels
    python -m edgepack.device.x86_cpu suite fashion.epk --cpu Nehalem --stability-runs 50   # device_tests
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgepack.device.rootfs import EmulationError, QemuNotFoundError
from edgepack.device.suite import SuiteOptions, suite_dir
from edgepack.runtimes.backends.base import get_backend
from edgepack.runtimes.backends.onnxruntime import GraphOptimization, OrtOptions
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.ladder import compare, run_golden

QEMU_NAMES = ("qemu-x86_64-static", "qemu-x86_64")
QEMU_INSTALL = "sudo apt-get install -y qemu-user-static"
#: The emulated CPUs `make device-test-x86-other` runs, with what their kernels lack compared with the host.
X86_CPUS: dict[str, str] = {
    "Nehalem": "SSE4.2 only: no AVX, AVX2, FMA or AVX-512 (x86-64-v2)",
    "Haswell": "AVX2 + FMA, no AVX-512 or VNNI (x86-64-v3)",
}
DEFAULT_CPUS = tuple(X86_CPUS)
#: CPU features (as numpy detects them) reported by ``features``.
FEATURES = ("SSE41", "SSE42", "AVX", "FMA3", "AVX2", "AVX512F", "AVX512_SKX", "AVX512VNNI", "AVX512_SPR")
#: Kernel variants per backend: (label, delegate, ORT graph optimization or None).
_VARIANTS: dict[str, tuple[tuple[str, str, GraphOptimization | None], ...]] = {
    "litert": (("xnnpack", "xnnpack", None), ("reference", "cpu", None)),
    "onnxruntime": (("optimized", "cpu", GraphOptimization.ALL), ("reference", "cpu", GraphOptimization.DISABLE)),
}
_BACKEND_OF = {"tflite": "litert", "onnx": "onnxruntime"}


def find_qemu_x86() -> str:
    """Path of the x86-64 qemu-user binary.

    Raises:
        QemuNotFoundError: none on ``PATH``; the message says what to install.
    """
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise QemuNotFoundError(f"no {' or '.join(QEMU_NAMES)} on PATH; install it ({QEMU_INSTALL}) or `make qemu`.")


def known_cpus(qemu: str | None = None) -> list[str]:
    """CPU model names this qemu emulates (``qemu-x86_64-static -cpu help``)."""
    out = subprocess.run([qemu or find_qemu_x86(), "-cpu", "help"], capture_output=True, text=True, timeout=60,
                         check=False).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("x86 ") and len(line.split()) > 1]


def x86_command(args: Sequence[str], *, cpu: str, qemu: str | None = None, python: str | None = None) -> list[str]:
    """The command that runs ``python ARGS`` (default: this interpreter) as CPU model ``cpu``.

    Raises:
        QemuNotFoundError, EmulationError: no qemu, or ``cpu`` is not a model it knows (the message lists some).
    """
    qemu = qemu or find_qemu_x86()
    cpus = known_cpus(qemu)
    if cpu not in cpus:
        raise EmulationError(f"qemu does not know the x86 CPU {cpu!r}; try one of {', '.join(DEFAULT_CPUS)} "
                             f"(all: {qemu} -cpu help).")
    return [qemu, "-cpu", cpu, python or sys.executable, *args]


def run_x86(args: Sequence[str], *, cpu: str, env: Mapping[str, str] | None = None, timeout: float = 600,
            capture_output: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run this Python with ``args`` as CPU ``cpu``; qemu's 'TCG doesn't support' warnings are dropped.

    Raises:
        EmulationError: it did not finish within ``timeout`` seconds.
    """
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    cmd = x86_command(args, cpu=cpu)
    try:
        proc = subprocess.run(cmd, env=full_env, capture_output=capture_output, text=True, timeout=timeout,
                              cwd=cwd, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EmulationError(f"emulated {cpu} run did not finish in {timeout:g} s: {' '.join(cmd[3:])}") from exc
    if capture_output:
        proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if "TCG doesn't support" not in ln)
    return proc


def cpu_features() -> dict[str, bool]:
    """SIMD features this process's CPU reports (numpy's run-time detection)."""
    from numpy._core._multiarray_umath import __cpu_features__ as found

    return {name: bool(found.get(name, False)) for name in FEATURES}


def golden_errors(bundle: str | os.PathLike[str], *, num_threads: int = 1) -> list[dict[str, Any]]:
    """Run every model of ``bundle`` on the golden inputs with each kernel variant of its runtime here.

    Returns one row per (model, kernels): file, format, precision, backend, kernels, ``max_abs_error`` against the
    golden outputs, ``atol`` (the tightest output tolerance), ``ok`` (within tolerance), ``steps`` (error in output
    quantization steps, when the output is quantized).
    """
    b = read_bundle(bundle)
    inputs = b.golden_inputs()
    rows = []
    for entry in b.manifest.models:
        name = _BACKEND_OF.get(entry.format)
        if name is None:
            continue
        golden = b.golden_outputs(entry)
        for label, delegate, level in _VARIANTS[name]:
            backend = get_backend(name)
            if level is not None:
                backend.configure(OrtOptions(graph_optimization=level))
            engine = backend.open(b.model_bytes(entry), delegate=delegate, num_threads=num_threads)
            try:
                outs = run_golden(engine, inputs)
            finally:
                engine.close()
            ok, err, _ = compare(outs, golden, entry.golden.tolerance)
            scales = [s.quantization.scale for s in entry.outputs if s.quantization is not None]
            rows.append({"file": entry.file, "format": entry.format, "precision": entry.precision, "backend": name,
                         "kernels": label, "max_abs_error": err, "ok": ok,
                         "atol": min(t.atol for t in entry.golden.tolerance),
                         "steps": round(err / min(scales), 2) if scales else None})
    return rows


def emulated_golden_errors(bundle: str | os.PathLike[str], *, cpu: str, timeout: float = 600
                           ) -> dict[str, Any]:
    """:func:`golden_errors` run under emulated CPU ``cpu``: ``{"cpu", "features", "rows"}``.

    Raises:
        EmulationError: the emulated run failed (its last error line is quoted).
    """
    path = Path(bundle).resolve()
    if not path.is_file():
        raise EmulationError(f"bundle {path} does not exist; make one with `edgepack convert`.")
    proc = run_x86(["-m", "edgepack.device.x86_cpu", "check", str(path), "--json"], cpu=cpu, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise EmulationError(f"golden check under emulated {cpu} failed (exit {proc.returncode}): {last}")
    return {"cpu": cpu, **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_suite_x86(bundle: Path, options: SuiteOptions, *, cpu: str, timeout: float = 1800) -> int:
    """Run ``device_tests`` against ``bundle`` under emulated CPU ``cpu`` (output streams through)."""
    if not bundle.is_file():
        raise EmulationError(f"bundle {bundle} does not exist; make one with `edgepack convert`.")
    print(f"emulated x86 {cpu} ({X86_CPUS.get(cpu, 'qemu model')}): device_tests {bundle}", flush=True)
    args = ["-m", "pytest", str(suite_dir()), *options.args(str(bundle.resolve()))]
    return run_x86(args, cpu=cpu, timeout=timeout, capture_output=False).returncode


def _table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        steps = f" ({r['steps']} steps)" if r["steps"] is not None else ""
        lines.append(f"{r['file']:<28} {r['backend']:<12} {r['kernels']:<10} max|err| {r['max_abs_error']:.3g}"
                     f"{steps} atol {r['atol']:.3g} {'ok' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``features``, ``check BUNDLE`` (here or ``--cpu``), ``suite BUNDLE --cpu`` (device_tests)."""
    parser = argparse.ArgumentParser(prog="python -m edgepack.device.x86_cpu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    feat = sub.add_parser("features", help="SIMD features of this CPU (or --cpu, emulated)")
    check = sub.add_parser("check", help="golden errors of every model and kernel variant")
    suite = sub.add_parser("suite", help="device_tests under an emulated CPU")
    for p in (check, suite):
        p.add_argument("bundle", type=Path)
    for p in (feat, check, suite):
        p.add_argument("--cpu", default=None, help=f"emulated qemu CPU model, e.g. {', '.join(DEFAULT_CPUS)}")
    check.add_argument("--json", action="store_true", help="one JSON line")
    suite.add_argument("--stability-runs", type=int, default=50)
    args = parser.parse_args(argv)
    if args.cmd == "suite":
        return run_suite_x86(args.bundle, SuiteOptions(stability_runs=args.stability_runs),
                             cpu=args.cpu or DEFAULT_CPUS[0])
    if args.cpu:  # re-run this command emulated
        return run_x86(_strip_cpu(argv), cpu=args.cpu, capture_output=False).returncode
    if args.cmd == "features":
        print(json.dumps(cpu_features()))
        return 0
    rows = golden_errors(args.bundle)
    print(json.dumps({"features": cpu_features(), "rows": rows}) if args.json else _table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def _strip_cpu(argv: Sequence[str] | None) -> list[str]:
    """The command line without ``--cpu X`` (what the emulated process runs)."""
    args, out = list(argv if argv is not None else sys.argv[1:]), []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--cpu":
            skip = True
        elif not a.startswith("--cpu="):
            out.append(a)
    return ["-m", "edgepack.device.x86_cpu", *out]


if __name__ == "__main__":
    sys.exit(main())
