"""Steps that fill an arm64 rootfs directory from the host, without binfmt_misc or root.

Lower layer of :mod:`edgepack.device.emulation` (which caches, byte-compiles and runs the result): resolve
the minimal .deb closure of python3.11 with an isolated apt (host apt state untouched), unpack it with
``dpkg-deb --fsys-tarfile | tar -x``, install aarch64 wheels with the host pip, write the fake Raspberry
Pi ``/proc/cpuinfo`` and the re-entry script. Stdlib only, besides ``EdgepackError``.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from edgepack.runtimes.errors import EdgepackError

RELEASE = "bookworm"
PYTHON = "python3.11"
APT_ROOTS = ("python3.11", "libstdc++6")
# readline-common depends on dpkg (install-info trigger), which pulls tar, selinux, ...: nothing runs
# dpkg in the rootfs, so the resolver is told it is already installed.
APT_PRETEND_INSTALLED = ("dpkg",)
MAIN_REQUIREMENTS = ("numpy==2.4.6", "ai-edge-litert==2.3.0", "onnxruntime==1.32.0", "pytest==9.2.0")
LEGACY_REQUIREMENTS = ("tflite-runtime==2.14.0", "numpy==1.26.4", "pytest==9.2.0")
SITE_DIR = "opt/edgepack/site"
LEGACY_SITE_DIR = "opt/edgepack/site-legacy"
WRAPPER = f"usr/bin/{PYTHON}-qemu"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")
_NET_HINTS = ("Could not resolve", "Could not connect", "Unable to connect", "Temporary failure",
              "Failed to fetch", "Network is unreachable", "Connection refused", "timed out",
              "No matching distribution", "ConnectionError")
Progress = Callable[[str], None]


class EmulationError(EdgepackError):
    """Emulated arm64 problem (an :class:`~edgepack.runtimes.errors.EdgepackError`)."""


class QemuNotFoundError(EmulationError):
    """``qemu-aarch64-static`` is not on ``PATH``."""


class RootfsBuildError(EmulationError):
    """The arm64 userland could not be built (network, disk, apt or pip failure)."""


@dataclasses.dataclass(frozen=True)
class CpuProfile:
    """What a Raspberry Pi's ``/proc/cpuinfo`` says about its cores."""

    model: str
    revision: str
    part: str
    variant: str
    cpu_revision: int
    features: str
    bogomips: str = "108.00"
    hardware: str | None = "BCM2835"
    cores: int = 4


CPU_PROFILES: Mapping[str, CpuProfile] = {
    "cortex-a53": CpuProfile("Raspberry Pi 3 Model B Rev 1.2", "a02082", "0xd03", "0x0", 4,
                             "fp asimd evtstrm crc32 cpuid", bogomips="38.40"),
    "cortex-a72": CpuProfile("Raspberry Pi 4 Model B Rev 1.5", "d03115", "0xd08", "0x0", 3,
                             "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": CpuProfile("Raspberry Pi 5 Model B Rev 1.0", "d04170", "0xd0b", "0x4", 1,
                             "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                             "asimdrdm lrcpc dcpop asimddp", hardware=None),
}


def cpuinfo_text(cpu: str) -> str:
    """A Raspberry Pi ``/proc/cpuinfo`` for a qemu CPU model (onnxruntime crashes on the host's)."""
    try:
        prof = CPU_PROFILES[cpu]
    except KeyError:
        raise EmulationError(f"unknown cpu {cpu!r}; choose one of {sorted(CPU_PROFILES)}") from None
    cores = "".join(
        f"processor\t: {i}\nBogoMIPS\t: {prof.bogomips}\nFeatures\t: {prof.features}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {prof.variant}\n"
        f"CPU part\t: {prof.part}\nCPU revision\t: {prof.cpu_revision}\n\n"
        for i in range(prof.cores)
    )
    hardware = f"Hardware\t: {prof.hardware}\n" if prof.hardware else ""
    tail = f"Revision\t: {prof.revision}\nSerial\t\t: 10000000edc0ffee\nModel\t\t: {prof.model}\n"
    return f"{cores}{hardware}{tail}"


def manylinux_platforms(first: int = 17, last: int = 36, arch: str = "aarch64") -> list[str]:
    """Every ``manylinux_2_N`` tag bookworm's glibc 2.36 loads; pip needs each one listed."""
    return [f"manylinux_2_{minor}_{arch}" for minor in range(first, last + 1)]


def pip_target_args() -> list[str]:
    """pip options that select CPython 3.11 aarch64 wheels on any host."""
    args = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for platform in manylinux_platforms():
        args += ["--platform", platform]
    return args


@dataclasses.dataclass(frozen=True)
class AptSource:
    """One Debian repository entry (deb822 form)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None

    def deb822(self) -> str:
        """The entry as a ``.sources`` stanza restricted to arm64."""
        key = f"Signed-By: {self.signed_by}\n" if self.signed_by else ""
        return (f"Types: deb\nURIs: {self.uri}\nSuites: {' '.join(self.suites)}\n"
                f"Components: {' '.join(self.components)}\nArchitectures: arm64\n{key}")


def parse_apt_sources(text: str, *, deb822: bool) -> list[AptSource]:
    """Parses a ``sources.list`` (one-line) or ``.sources`` (deb822) file; ``deb-src`` is skipped."""
    found: list[AptSource] = []
    if not deb822:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "deb":
                continue
            opts: dict[str, str] = {}
            if words[1].startswith("["):
                end = next((i for i, w in enumerate(words) if w.endswith("]")), len(words) - 1)
                inner = " ".join(words[1 : end + 1]).strip("[]").split()
                opts = dict(o.split("=", 1) for o in inner if "=" in o)
                words = [words[0], *words[end + 1:]]
            found.append(AptSource(words[1], (words[2],), tuple(words[3:]), opts.get("signed-by")))
        return found
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        last = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and last:
                fields[last] += "\n" + line.strip()
            elif ":" in line:
                last, value = (s.strip() for s in line.split(":", 1))
                last = last.lower()
                fields[last] = value
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        key = fields.get("signed-by")
        key = key if key and not key.startswith("-----") and "\n" not in key else None
        for uri in fields.get("uris", "").split():
            found.append(AptSource(uri, tuple(fields.get("suites", "").split()),
                                   tuple(fields.get("components", "").split()), key))
    return found


def select_sources(sources: Iterable[AptSource], release: str = RELEASE) -> list[AptSource]:
    """Keeps the ``main`` component of ``release`` suites (``bookworm``, ``-updates``, ``-security``)."""
    keep = []
    for src in sources:
        suites = tuple(s for s in src.suites if s == release or s.startswith(f"{release}-"))
        if suites and "main" in src.components:
            keep.append(AptSource(src.uri, suites, ("main",), src.signed_by))
    return keep


def host_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """The bookworm ``main`` sources the host's apt is configured with."""
    found: list[AptSource] = []
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in files:
        if path.is_file() and path.suffix in (".list", ".sources"):
            found += parse_apt_sources(path.read_text(errors="replace"), deb822=path.suffix == ".sources")
    return select_sources(found)


def apt_options(work: Path) -> list[str]:
    """apt-get ``-o`` options for a private arm64 state/cache/sources tree under ``work``."""
    opts = {
        "Dir::State": work / "state", "Dir::State::status": work / "status", "Dir::Cache": work / "cache",
        "Dir::Cache::archives": work / "archives", "Dir::Etc::SourceList": work / "sources.list",
        "Dir::Etc::SourceParts": work / "sources.list.d", "Dir::Etc::Preferences": work / "preferences",
        "Dir::Etc::PreferencesParts": work / "preferences.d", "APT::Architecture": "arm64",
        "APT::Architectures": "arm64", "Debug::NoLocking": "1", "APT::Sandbox::User": "root",
        "Acquire::Languages": "none",
    }
    return [arg for key, value in opts.items() for arg in ("-o", f"{key}={value}")]


def _run(cmd: Sequence[str], what: str, *, timeout: float, net_hint: str = "slow network?") -> str:
    """Runs a host tool; a failure becomes a RootfsBuildError that says what to do."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RootfsBuildError(f"{what} did not finish within {timeout:g}s; {net_hint}") from exc
    if proc.returncode == 0:
        return proc.stdout
    out = f"{proc.stdout}\n{proc.stderr}"
    tail = "\n".join(line for line in out.splitlines()[-15:] if line.strip())
    if "No space left" in out:
        hint = "the disk is full: free space or pass a cache dir on a larger disk"
    elif "NO_PUBKEY" in out:
        hint = f"apt cannot verify the mirror: sudo apt-get install debian-archive-keyring ({DEBIAN_KEYRING})"
    elif any(h in out for h in _NET_HINTS):
        hint = net_hint
    else:
        hint = "its output ends"
    raise RootfsBuildError(f"{what} failed (exit {proc.returncode}); {hint}:\n{tail}")


def download_debs(work: Path, sources: Sequence[AptSource], progress: Progress) -> list[Path]:
    """Downloads the arm64 .deb closure of :data:`APT_ROOTS` with apt isolated under ``work``."""
    if not sources:
        raise RootfsBuildError(f"no Debian {RELEASE} 'main' source in /etc/apt/sources.list*; pass "
                               "mirror='http://deb.debian.org/debian' (CLI: --mirror)")
    for sub in ("state/lists/partial", "cache", "archives/partial", "sources.list.d", "preferences.d"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text("")
    (work / "sources.list.d" / "edgepack.sources").write_text("\n".join(s.deb822() for s in sources))
    (work / "status").write_text("".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: required\nArchitecture: arm64\n"
        f"Version: 9999\nDescription: provided by the host\n\n" for name in APT_PRETEND_INSTALLED))
    apt = ["apt-get", "-q", *apt_options(work)]
    uris = ", ".join(s.uri for s in sources)
    hint = f"cannot reach the Debian mirror {uris}: check the network/proxy, or pass mirror= (--mirror)"
    progress(f"apt: arm64 index from {uris}")
    _run([*apt, "update", "--error-on=any"], "apt-get update (arm64 index)", timeout=600, net_hint=hint)
    progress(f"apt: downloading the closure of {' '.join(APT_ROOTS)}")
    _run([*apt, "install", "-y", "--download-only", "--no-install-recommends", *APT_ROOTS],
         "apt-get install --download-only", timeout=1800, net_hint=hint)
    return sorted((work / "archives").glob("*.deb"))


def unpack_debs(debs: Iterable[Path], root: Path) -> None:
    """Unpacks .debs into ``root`` (``dpkg-deb --fsys-tarfile | tar -x``), no maintainer scripts."""
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as dpkg:
            tar = subprocess.run(["tar", "-x", "--no-same-owner", "-C", str(root)], stdin=dpkg.stdout,
                                 capture_output=True, text=True, check=False)
            dpkg_err = dpkg.stderr.read().decode(errors="replace") if dpkg.stderr else ""
        if dpkg.returncode or tar.returncode:
            hint = "the disk is full" if "No space left" in tar.stderr else "corrupt download?"
            raise RootfsBuildError(f"unpacking {deb.name} failed ({hint}): {dpkg_err}{tar.stderr}".strip())
    for sub in PRUNE:
        shutil.rmtree(root / sub, ignore_errors=True)


def relativize_symlinks(root: Path) -> int:
    """Rewrites absolute symlinks inside ``root`` as relative ones; returns how many.

    An absolute link (``/usr/lib/python3.11/sitecustomize.py -> /etc/python3.11/...``) would be
    followed by the host kernel to the *host's* file when reached through a host path.
    """
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            link = Path(dirpath, name)
            if link.is_symlink() and os.readlink(link).startswith("/"):
                target = root / os.readlink(link).lstrip("/")
                link.unlink()
                link.symlink_to(os.path.relpath(target, link.parent))
                count += 1
    return count


def install_wheels(root: Path, site: str, requirements: Sequence[str], wheels: Path,
                   progress: Progress) -> list[str]:
    """Downloads aarch64 wheels with the host pip and installs them into ``root/site``."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    progress(f"pip: aarch64 wheels for {' '.join(requirements)}")
    hint = "cannot reach the pip index (or it lacks these aarch64 wheels): check network/proxy/pip.conf"
    _run([*pip, "download", "-q", "-d", str(wheels), *pip_target_args(), *requirements],
         f"pip download (aarch64) {' '.join(requirements)}", timeout=1800, net_hint=hint)
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    _run([*pip, "install", "-q", "--no-deps", "--no-index", "--no-compile", "--target", str(root / site),
          *pip_target_args(), *files], f"pip install --target {site}", timeout=900)
    shutil.rmtree(root / site / "bin", ignore_errors=True)  # console scripts with the host's shebang
    return [Path(f).name for f in files]


def write_cpuinfo(root: Path, cpu: str) -> None:
    """Writes the fake ``/proc/cpuinfo``; qemu ``-L`` serves ``ROOTFS/proc/cpuinfo`` for it.

    Only that file exists under ``ROOTFS/proc``: every other ``/proc`` path falls through to the host,
    as does ``/sys`` (there is no ``ROOTFS/sys``). A ``proc`` symlink (debootstrap) is replaced first.
    """
    proc = root / "proc"
    if proc.is_symlink() or proc.is_file():
        proc.unlink()
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text(cpuinfo_text(cpu))


def write_wrapper(root: Path) -> None:
    """Writes the host-shell re-entry script that ``sys.executable`` points at (``qemu -0``)."""
    path = root / WRAPPER
    path.write_text(
        "#!/bin/sh\n# Emulated children (subprocess, multiprocessing) re-enter qemu through this script.\n"
        'root=$(cd "$(dirname "$0")/../.." && pwd)\n'
        f'exec "${{EDGEPACK_QEMU:-qemu-aarch64-static}}" -L "$root" -0 "$0" "$root/usr/bin/{PYTHON}" "$@"\n')
    path.chmod(0o755)


def populate(root: Path, work: Path, *, cpu: str, with_tflite_runtime: bool, mirror: str | None,
             progress: Progress) -> dict[str, object]:
    """Fills ``root`` with the arm64 userland and site dirs, using ``work`` for downloads.

    Returns:
        Manifest entries: .debs and wheels installed, seconds per step.
    """
    cpuinfo_text(cpu)  # unknown cpu fails before any download
    if mirror:
        key = DEBIAN_KEYRING if Path(DEBIAN_KEYRING).is_file() else None
        sources = [AptSource(mirror, (RELEASE, f"{RELEASE}-updates"), ("main",), key)]
    else:
        sources = host_apt_sources()
    seconds: dict[str, float] = {}
    start = time.monotonic()
    try:
        debs = download_debs(work / "apt", sources, progress)
        seconds["apt"] = time.monotonic() - start
        progress(f"unpacking {len(debs)} .debs")
        unpack_debs(debs, root)
        relativize_symlinks(root)
        seconds["unpack"] = time.monotonic() - start - sum(seconds.values())
        wheels = {"main": install_wheels(root, SITE_DIR, MAIN_REQUIREMENTS, work / "wheels-main", progress)}
        if with_tflite_runtime:
            wheels["legacy"] = install_wheels(root, LEGACY_SITE_DIR, LEGACY_REQUIREMENTS,
                                              work / "wheels-legacy", progress)
        seconds["pip"] = time.monotonic() - start - sum(seconds.values())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise RootfsBuildError(f"disk full while building in {root.parent}: free space") from exc
        raise
    write_cpuinfo(root, cpu)
    write_wrapper(root)
    return {"debs": [d.name for d in debs], "wheels": wheels,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "sources": [dataclasses.asdict(s) for s in sources]}
