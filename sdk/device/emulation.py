"""Emulated arm64 (Raspberry Pi 64-bit) userland for running device tests under qemu-user.

Needs no binfmt_misc, chroot or root: a Debian bookworm arm64 userland is built from .debs unpacked
with ``dpkg-deb`` plus aarch64 wheels installed by the host pip (:mod:`edgepack.device.rootfs`),
and the emulated python runs as ``qemu-aarch64-static -L ROOTFS ROOTFS/usr/bin/python3.11``.
Stdlib only, besides ``edgepack.runtimes.errors``. See ``docs/emulation.md``.

Example::

    info = build_rootfs(Path(".cache/arm64"))
    proc = run_emulated(info, ["-m", "pytest", "device_tests"], timeout=1800)

CLI (with edgepack installed, e.g. ``pip install -e .``)::

    python -m edgepack.device.emulation build --cache .cache/arm64
    python -m edgepack.device.emulation run --cache .cache/arm64 -- -c "import platform; print(platform.machine())"
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from edgepack.device import rootfs as _rootfs

CPU_PROFILES = _rootfs.CPU_PROFILES
EmulationError = _rootfs.EmulationError
QemuNotFoundError = _rootfs.QemuNotFoundError
RootfsBuildError = _rootfs.RootfsBuildError
Progress = _rootfs.Progress
cpuinfo_text = _rootfs.cpuinfo_text

__all__ = [
    "CPU_PROFILES",
    "EmulationError",
    "QemuNotFoundError",
    "RootfsBuildError",
    "RootfsInfo",
    "build_rootfs",
    "cpuinfo_text",
    "emulated_command",
    "emulated_env",
    "find_qemu",
    "package_overlay",
    "run_emulated",
]

FORMAT = 1
MANIFEST = "edgepack-rootfs.json"
MIN_FREE_BYTES = 1 << 30
QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
QEMU_INSTALL = "sudo apt-get install -y qemu-user-static"
HOST_TOOLS = ("apt-get", "dpkg-deb", "tar")
_SMOKE = (
    "import json, platform, time\nt = {}\nfor m in MODULES:\n    s = time.perf_counter()\n"
    "    __import__(m)\n    t[m] = round(time.perf_counter() - s, 2)\n"
    "print(json.dumps({'machine': platform.machine(), 'import_seconds': t}))\n"
)
_SMOKE_MODULES = ("numpy", "ai_edge_litert.interpreter", "onnxruntime")
_SMOKE_LEGACY_MODULES = ("numpy", "tflite_runtime.interpreter")


@dataclasses.dataclass(frozen=True)
class RootfsInfo:
    """A built arm64 userland.

    Attributes:
        root: Host path of the rootfs (what ``qemu -L`` gets).
        qemu: The qemu-aarch64 binary that runs it.
        cpu: qemu CPU model (``QEMU_CPU``), matching the fake ``/proc/cpuinfo``.
        site_dir: numpy 2 + ai-edge-litert + onnxruntime + pytest.
        legacy_site_dir: numpy 1.26 + tflite-runtime 2.14 + pytest, or None when not built.
    """

    root: Path
    qemu: Path
    cpu: str
    site_dir: Path
    legacy_site_dir: Path | None

    @property
    def python(self) -> Path:
        """The arm64 interpreter (a host path inside the rootfs)."""
        return self.root / "usr" / "bin" / _rootfs.PYTHON

    def manifest(self) -> dict[str, object]:
        """What was installed, build seconds, smoke-test import times."""
        data: dict[str, object] = json.loads((self.root / MANIFEST).read_text())
        return data


def find_qemu(path: str | None = None) -> Path:
    """Locates qemu-aarch64 on ``path`` (default ``$PATH``).

    Raises:
        QemuNotFoundError: Naming the apt-get command that installs it.
    """
    for name in QEMU_NAMES:
        found = shutil.which(name, path=path)
        if found:
            return Path(found).resolve()
    raise QemuNotFoundError(f"qemu-aarch64-static not found on PATH; install it with: {QEMU_INSTALL}")


def emulated_command(info: RootfsInfo, args: Sequence[str]) -> list[str]:
    """The host argv that runs the emulated python with ``args``.

    ``-0`` makes ``sys.executable`` the rootfs's host-shell re-entry script, so a child python
    (subprocess, multiprocessing spawn) is emulated too: qemu-user cannot exec arm64 binaries itself.
    """
    wrapper = info.root / _rootfs.WRAPPER
    return [str(info.qemu), "-L", str(info.root), "-0", str(wrapper), str(info.python), *args]


def emulated_env(info: RootfsInfo, env: Mapping[str, str] | None = None, *, legacy_tflite: bool = False,
                 base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an emulated run: a few host basics (no PYTHON*, no venv), then ``env``.

    The site dir comes first on ``PYTHONPATH``, then the entries ``env`` gives.

    Raises:
        EmulationError: ``legacy_tflite`` on a rootfs built without the tflite-runtime site dir.
    """
    site = info.legacy_site_dir if legacy_tflite else info.site_dir
    if site is None:
        raise EmulationError("this rootfs has no tflite-runtime site dir: build it with_tflite_runtime=True")
    base = os.environ if base is None else base
    out = {k: base[k] for k in ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR") if k in base}
    out.update(QEMU_CPU=info.cpu, EDGEPACK_QEMU=str(info.qemu), PYTHONNOUSERSITE="1",
               PYTHONDONTWRITEBYTECODE="1")
    extra = dict(env or {})
    paths = [str(site), *filter(None, extra.pop("PYTHONPATH", "").split(os.pathsep))]
    out.update(extra)
    out["PYTHONPATH"] = os.pathsep.join(paths)
    return out


def run_emulated(info: RootfsInfo, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, timeout: float, legacy_tflite: bool = False,
                 capture_output: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs the emulated arm64 python with ``args``; host paths outside the rootfs stay visible.

    Args:
        info: From :func:`build_rootfs`.
        args: Python arguments, e.g. ``["-m", "pytest", "device_tests"]``.
        env: Extra variables; its ``PYTHONPATH`` entries go after the site dir.
        cwd: Working directory (a host path).
        timeout: Seconds; emulated imports are ~5x slower than native, kernels ~100x.
        legacy_tflite: Use the numpy 1.26 + tflite-runtime site dir instead of the main one.
        capture_output: Capture stdout/stderr as text (else they go to this process's streams).

    Returns:
        The completed process; a non-zero return code is not raised.

    Raises:
        EmulationError: On timeout, or ``legacy_tflite`` without the legacy site dir.
    """
    full_env = emulated_env(info, env, legacy_tflite=legacy_tflite)
    try:
        return subprocess.run(emulated_command(info, args), env=full_env, cwd=cwd, timeout=timeout,
                              capture_output=capture_output, text=True, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EmulationError(f"emulated python still running after {timeout:g}s: {list(args)}; "
                             "raise the timeout or use a smaller model") from exc


def package_overlay(dest: Path, package_dirs: Mapping[str, str | os.PathLike[str]], *,
                    copies: Collection[str] = ()) -> Path:
    """Makes ``dest`` a tree of symlinks laying out packages as setuptools' ``package-dir`` does.

    Put ``dest`` on the emulated ``PYTHONPATH`` to import a working tree whose packages live in other
    dirs (``{"edgepack": "sdk", "edgepack.runtimes": "runtimes"}``) or an installed edgepack without the
    rest of the host's site-packages (x86 numpy...). A package with no mapped sub-package is one symlink,
    so new files show up at once; one named in ``copies`` is copied instead (a pytest suite: pytest puts the
    first folder above a test package that has no ``__init__.py`` on ``sys.path``, and through a symlink
    that could be the host's site-packages).
    """
    shutil.rmtree(dest, ignore_errors=True)
    for name in sorted(package_dirs, key=lambda n: -n.count(".")):  # sub-packages first
        src, target = Path(package_dirs[name]).resolve(), dest.joinpath(*name.split("."))
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in copies:
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            continue
        if not any(other.startswith(f"{name}.") for other in package_dirs):
            target.symlink_to(src, target_is_directory=True)
            continue
        target.mkdir(exist_ok=True)
        for entry in src.iterdir():
            if entry.name != "__pycache__" and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)
    return dest


def rootfs_key(cpu: str, with_tflite_runtime: bool, mirror: str | None = None) -> str:
    """Cache directory name: one rootfs per cpu, legacy site dir and pin set."""
    spec = [FORMAT, _rootfs.RELEASE, cpu, _rootfs.APT_ROOTS, mirror, _rootfs.MAIN_REQUIREMENTS,
            _rootfs.LEGACY_REQUIREMENTS if with_tflite_runtime else None]
    digest = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:10]
    return f"{_rootfs.RELEASE}-arm64-{cpu}{'-tflrt' if with_tflite_runtime else ''}-{digest}"


def _info(final: Path, qemu: Path, cpu: str, with_legacy: bool) -> RootfsInfo:
    root = final / "rootfs"
    return RootfsInfo(root=root, qemu=qemu, cpu=cpu, site_dir=root / _rootfs.SITE_DIR,
                      legacy_site_dir=root / _rootfs.LEGACY_SITE_DIR if with_legacy else None)


def _check_host(cache_dir: Path) -> None:
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        raise RootfsBuildError(f"{', '.join(missing)} not found: building the arm64 rootfs needs a "
                               "Debian/Ubuntu host with apt-get, dpkg-deb and tar")
    if importlib.util.find_spec("pip") is None:
        raise RootfsBuildError(f"pip is not installed for {sys.executable}; run with the project venv")
    free = shutil.disk_usage(cache_dir).free
    if free < MIN_FREE_BYTES:
        raise RootfsBuildError(f"{free / 2**20:.0f} MiB free under {cache_dir}; the build needs "
                               f"{MIN_FREE_BYTES / 2**30:.0f} GiB: free space or choose another cache dir")


def _remove_stale(cache_dir: Path) -> None:
    """Deletes temp dirs of builds whose process is gone (killed builds)."""
    for tmp in cache_dir.glob(".*.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _byte_compile(info: RootfsInfo, progress: Progress) -> None:
    """Writes .pyc files once (the host may set PYTHONDONTWRITEBYTECODE); same magic in any 3.11."""
    stdlib = info.root / "usr" / "lib" / _rootfs.PYTHON
    dirs = [str(p) for p in (stdlib, info.site_dir, info.legacy_site_dir) if p]
    args = ["-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "timestamp", *dirs]
    if sys.version_info[:2] == (3, 11):
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    else:
        proc = run_emulated(info, args, timeout=3600)
    if proc.returncode:
        progress(f"warning: some files did not byte-compile:\n{proc.stdout[-2000:]}")


def _smoke(info: RootfsInfo, legacy: bool) -> dict[str, object]:
    mods = _SMOKE_LEGACY_MODULES if legacy else _SMOKE_MODULES
    proc = run_emulated(info, ["-c", f"MODULES = {mods!r}\n{_SMOKE}"], timeout=600, legacy_tflite=legacy)
    if proc.returncode:
        raise RootfsBuildError(f"the built rootfs fails its smoke test (exit {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def build_rootfs(cache_dir: Path, *, cpu: str = "cortex-a72", with_tflite_runtime: bool = True,
                 mirror: str | None = None, progress: Progress | None = None) -> RootfsInfo:
    """Builds the arm64 userland once under ``cache_dir`` and returns it; later calls reuse it.

    The build goes to a temp dir renamed into place at the end, so a killed build leaves no
    half-made cache. Needs network to the Debian mirror and the pip index, 1 GiB free, qemu,
    apt-get, dpkg-deb and tar; not binfmt_misc, not root.

    Args:
        cache_dir: Where rootfs builds live (e.g. ``.cache/arm64``).
        cpu: qemu CPU model: ``cortex-a72`` (Pi 4), ``cortex-a76`` (Pi 5), ``cortex-a53`` (Pi 3).
        with_tflite_runtime: Also build the numpy 1.26 + tflite-runtime 2.14 site dir.
        mirror: Debian archive URL; default: the bookworm sources the host's apt is configured with.
        progress: Called with one line per step.

    Raises:
        QemuNotFoundError: qemu-user-static is missing.
        RootfsBuildError: A host tool, the network or the disk failed; the message says which.
        EmulationError: Unknown ``cpu``.
    """
    say = progress or (lambda _msg: None)
    cpuinfo_text(cpu)
    qemu = find_qemu()
    cache_dir = Path(cache_dir).resolve()
    final = cache_dir / rootfs_key(cpu, with_tflite_runtime, mirror)
    if (final / "rootfs" / MANIFEST).is_file():
        return _info(final, qemu, cpu, with_tflite_runtime)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _check_host(cache_dir)
    _remove_stale(cache_dir)
    tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.monotonic()
    try:
        info = _info(tmp, qemu, cpu, with_tflite_runtime)
        manifest = _rootfs.populate(info.root, tmp / "work", cpu=cpu, mirror=mirror, progress=say,
                                    with_tflite_runtime=with_tflite_runtime)
        shutil.rmtree(tmp / "work")
        say("byte-compiling the stdlib and site dirs")
        _byte_compile(info, say)
        say("smoke test: emulated imports")
        smoke = {"main": _smoke(info, legacy=False)}
        if with_tflite_runtime:
            smoke["legacy"] = _smoke(info, legacy=True)
        size = sum(p.stat().st_size for p in info.root.rglob("*") if p.is_file() and not p.is_symlink())
        manifest.update(format=FORMAT, cpu=cpu, main=_rootfs.MAIN_REQUIREMENTS, smoke=smoke, bytes=size,
                        legacy=_rootfs.LEGACY_REQUIREMENTS if with_tflite_runtime else None,
                        build_seconds=round(time.monotonic() - start, 1))
        (info.root / MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "rootfs" / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp)  # a concurrent build finished first: use it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"rootfs ready: {final / 'rootfs'} ({size / 2**20:.0f} MiB, {time.monotonic() - start:.0f} s)")
    return _info(final, qemu, cpu, with_tflite_runtime)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not (key and sep):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``build`` the rootfs, or ``run`` the emulated python (building it first when missing)."""
    parser = argparse.ArgumentParser(prog="edgepack.device.emulation", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--cache", type=Path, default=Path(".cache/arm64"), help="rootfs cache dir")
        cmd.add_argument("--cpu", default="cortex-a72", choices=sorted(CPU_PROFILES))
        cmd.add_argument("--no-tflite-runtime", action="store_true", help="skip the legacy site dir")
        cmd.add_argument("--mirror", help="Debian archive URL (default: from the host's apt sources)")
    run = sub.choices["run"]
    run.add_argument("--legacy-tflite", action="store_true", help="numpy 1.26 + tflite-runtime site dir")
    run.add_argument("--timeout", type=float, default=3600.0)
    run.add_argument("--env", action="append", default=[], type=_pair, metavar="KEY=VALUE", help="repeatable")
    run.add_argument("--package-dir", action="append", default=[], type=_pair, metavar="PACKAGE=DIR",
                     help="import PACKAGE from DIR (setuptools package-dir style); repeatable")
    run.add_argument("args", nargs=argparse.REMAINDER, help="after --: arguments for python3.11")
    ns = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(f"[emulation] {msg}", file=sys.stderr, flush=True)

    try:
        info = build_rootfs(ns.cache, cpu=ns.cpu, with_tflite_runtime=not ns.no_tflite_runtime,
                            mirror=ns.mirror, progress=say)
        if ns.command == "build":
            print(info.root)
            return 0
        env = dict(ns.env)
        with tempfile.TemporaryDirectory(prefix="edgepack-overlay-") as tmp:
            if ns.package_dir:
                overlay = package_overlay(Path(tmp) / "o", dict(ns.package_dir))
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(overlay), env.get("PYTHONPATH")]))
            args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
            proc = run_emulated(info, args, env=env, timeout=ns.timeout, legacy_tflite=ns.legacy_tflite,
                                capture_output=False)
        return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # killed by a signal
    except EmulationError as exc:
        say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
