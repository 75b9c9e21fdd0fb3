"""Tests for the emulated arm64 userland (edgepack.device.emulation).

Fast tests cover the pure helpers; the ``slow`` ones build (or reuse) the rootfs at ``.cache/arm64``
and run models in it under qemu.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.device import emulation as em
from edgepack.device import rootfs
from edgepack.runtimes.errors import EdgepackError

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGEPACK_ARM64_CACHE", REPO / ".cache" / "arm64"))


def _fake_info(tmp_path: Path, *, legacy: bool = True) -> em.RootfsInfo:
    root = tmp_path / "rootfs"
    return em.RootfsInfo(root=root, qemu=Path("/usr/bin/qemu-aarch64-static"), cpu="cortex-a72",
                         site_dir=root / "opt/edgepack/site",
                         legacy_site_dir=root / "opt/edgepack/site-legacy" if legacy else None)


def test_manylinux_platforms_cover_2_17_to_2_36() -> None:
    tags = rootfs.manylinux_platforms()
    assert tags[0] == "manylinux_2_17_aarch64" and tags[-1] == "manylinux_2_36_aarch64"
    assert len(tags) == 20
    args = rootfs.pip_target_args()
    assert [args[i + 1] for i, a in enumerate(args) if a == "--platform"] == tags
    assert {"--only-binary=:all:", "cp311"} <= set(args)


@pytest.mark.parametrize(("cpu", "part", "model"), [("cortex-a72", "0xd08", "Raspberry Pi 4"),
                                                     ("cortex-a76", "0xd0b", "Raspberry Pi 5"),
                                                     ("cortex-a53", "0xd03", "Raspberry Pi 3")])
def test_cpuinfo_is_a_raspberry_pi(cpu: str, part: str, model: str) -> None:
    text = em.cpuinfo_text(cpu)
    assert text.count("processor\t:") == 4
    assert text.count(f"CPU part\t: {part}") == 4
    assert "CPU implementer\t: 0x41" in text and f"Model\t\t: {model}" in text
    assert "GenuineIntel" not in text and "flags" not in text


def test_unknown_cpu_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(em.EmulationError, match="cortex-a72"):
        em.cpuinfo_text("pentium")


def test_errors_are_edgepack_errors() -> None:
    assert issubclass(em.QemuNotFoundError, em.EmulationError)
    assert issubclass(em.RootfsBuildError, em.EmulationError)
    assert issubclass(em.EmulationError, EdgepackError)
    assert rootfs.EdgepackError is EdgepackError  # no stand-in root: the modules always import edgepack's


def test_runs_as_a_module() -> None:
    """The documented way: ``python -m edgepack.device.emulation build|run`` (no standalone script mode)."""
    proc = subprocess.run([sys.executable, "-m", "edgepack.device.emulation", "--help"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "{build,run}" in proc.stdout


def test_missing_qemu_names_the_apt_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(em.QemuNotFoundError, match=r"apt-get install -y qemu-user-static"):
        em.find_qemu(path=str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    cache = tmp_path / "cache"
    with pytest.raises(em.QemuNotFoundError):
        em.build_rootfs(cache)
    assert not cache.exists()  # nothing downloaded or created before the check
    assert em.main(["build", "--cache", str(cache)]) == 2


def test_cli_rejects_malformed_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        em.main(["run", "--env", "NOEQUALS", "--", "-c", "pass"])
    assert exc.value.code == 2 and "expected NAME=VALUE" in capsys.readouterr().err


def test_command_runs_the_rootfs_python_with_the_reentry_wrapper(tmp_path: Path) -> None:
    info = _fake_info(tmp_path)
    cmd = em.emulated_command(info, ["-m", "pytest", "x"])
    assert cmd[:3] == ["/usr/bin/qemu-aarch64-static", "-L", str(info.root)]
    assert cmd[3:5] == ["-0", str(info.root / "usr/bin/python3.11-qemu")]
    assert cmd[5:] == [str(info.root / "usr/bin/python3.11"), "-m", "pytest", "x"]


def test_env_puts_the_site_dir_first_and_drops_host_python_vars(tmp_path: Path) -> None:
    info = _fake_info(tmp_path)
    host = {"PATH": "/usr/bin", "HOME": "/h", "PYTHONHOME": "/x86", "VIRTUAL_ENV": "/venv",
            "PYTHONPATH": "/x86/site-packages", "LD_LIBRARY_PATH": "/x86/lib"}
    env = em.emulated_env(info, {"PYTHONPATH": "/src:/more", "FOO": "1"}, base=host)
    assert env["PYTHONPATH"] == os.pathsep.join([str(info.site_dir), "/src", "/more"])
    assert env["QEMU_CPU"] == "cortex-a72" and env["PYTHONNOUSERSITE"] == "1" and env["FOO"] == "1"
    assert env["EDGEPACK_QEMU"] == str(info.qemu) and env["PATH"] == "/usr/bin"
    assert not {"PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH"} & set(env)
    legacy = em.emulated_env(info, legacy_tflite=True, base=host)
    assert legacy["PYTHONPATH"] == str(info.legacy_site_dir)
    with pytest.raises(em.EmulationError, match="with_tflite_runtime"):
        em.emulated_env(_fake_info(tmp_path, legacy=False), legacy_tflite=True, base=host)


def test_rootfs_key_changes_with_cpu_and_legacy_dir() -> None:
    keys = {em.rootfs_key(c, legacy) for c in ("cortex-a72", "cortex-a76") for legacy in (True, False)}
    assert len(keys) == 4
    assert em.rootfs_key("cortex-a72", True) == em.rootfs_key("cortex-a72", True)


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_apt_sources_keep_bookworm_main_only() -> None:
    found = rootfs.select_sources(rootfs.parse_apt_sources(DEB822, deb822=True))
    assert [(s.uri, s.suites, s.components) for s in found] == [
        ("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"), ("main",)),
        ("http://deb.debian.org/debian-security", ("bookworm-security",), ("main",)),
    ]
    assert found[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert "Architectures: arm64" in found[0].deb822()
    one_line = ("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main non-free\n"
                "deb-src http://m/debian bookworm main\ndeb http://m/ubuntu jammy main\n")
    found = rootfs.select_sources(rootfs.parse_apt_sources(one_line, deb822=False))
    assert found == [rootfs.AptSource("http://m/debian", ("bookworm",), ("main",), "/k.gpg")]


def test_apt_options_isolate_state_and_force_arm64(tmp_path: Path) -> None:
    opts = rootfs.apt_options(tmp_path)
    values = dict(o.split("=", 1) for o in opts[1::2])
    assert values["APT::Architecture"] == "arm64" and values["APT::Architectures"] == "arm64"
    for key in ("Dir::State", "Dir::State::status", "Dir::Cache", "Dir::Etc::SourceList",
                "Dir::Etc::SourceParts"):
        assert values[key].startswith(str(tmp_path)), key


def test_absolute_symlinks_become_relative(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/python3.11").mkdir(parents=True)
    (root / "etc/python3.11/sitecustomize.py").write_text("X = 1\n")
    (root / "usr/lib/python3.11").mkdir(parents=True)
    link = root / "usr/lib/python3.11/sitecustomize.py"
    link.symlink_to("/etc/python3.11/sitecustomize.py")
    assert rootfs.relativize_symlinks(root) == 1
    assert not os.readlink(link).startswith("/")
    assert link.resolve() == (root / "etc/python3.11/sitecustomize.py").resolve()


def test_cpuinfo_replaces_a_proc_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "proc").symlink_to("/proc")
    rootfs.write_cpuinfo(root, "cortex-a76")
    assert not (root / "proc").is_symlink()
    assert "0xd0b" in (root / "proc/cpuinfo").read_text()
    assert "0xd0b" not in Path("/proc/cpuinfo").read_text()


def test_stale_temp_dirs_of_dead_builds_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".bookworm-x.tmp-999999999"
    mine = tmp_path / f".bookworm-y.tmp-{os.getpid()}"
    dead.mkdir()
    mine.mkdir()
    em._remove_stale(tmp_path)
    assert not dead.exists() and mine.exists()


def test_package_overlay_maps_package_dirs(tmp_path: Path) -> None:
    for rel, text in {"sdk/__init__.py": "", "sdk/api.py": "A = 1\n", "runtimes/__init__.py": "",
                      "runtimes/backends/__init__.py": "B = 2\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    overlay = em.package_overlay(tmp_path / "overlay", {"pkg": tmp_path / "sdk",
                                                        "pkg.runtimes": tmp_path / "runtimes"})
    (tmp_path / "runtimes/new.py").write_text("C = 3\n")  # appears without rebuilding the overlay
    code = "import pkg.api, pkg.runtimes.backends, pkg.runtimes.new; print(pkg.api.A + pkg.runtimes.new.C)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(overlay)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "4"


# --- slow: real rootfs under qemu ------------------------------------------------------------------

TFLITE_SCRIPT = """
import sys, numpy as np
legacy = sys.argv[1] == "legacy"
if legacy:
    from tflite_runtime.interpreter import Interpreter
else:
    from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[2])
it.allocate_tensors()
it.set_tensor(it.get_input_details()[0]["index"], np.load(sys.argv[3]))
it.invoke()
np.save(sys.argv[4], it.get_tensor(it.get_output_details()[0]["index"]))
"""

ONNX_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], s.run(None, {"x": np.load(sys.argv[2])})[0])
"""


@pytest.fixture(scope="module")
def info() -> em.RootfsInfo:
    try:
        em.find_qemu()
    except em.QemuNotFoundError as exc:
        pytest.skip(str(exc))
    if shutil.which("apt-get") is None and not CACHE.exists():
        pytest.skip("building the arm64 rootfs needs apt-get (Debian/Ubuntu host)")
    return em.build_rootfs(CACHE, progress=lambda msg: print(f"[emulation] {msg}"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny keras Dense model as .tflite and a tiny MatMul+Add+Relu .onnx, plus one input."""
    tf = pytest.importorskip("tensorflow")
    helper = pytest.importorskip("onnx.helper")
    import onnx
    from onnx import TensorProto, numpy_helper

    out = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    inp = tf.keras.Input((8,), batch_size=1)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(tf.keras.layers.Dense(16, activation="relu")(inp)))
    (out / "dense.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["a"]),
         helper.make_node("Relu", ["a"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B")])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    onnx.save(onnx_model, str(out / "tiny.onnx"))
    np.save(out / "x.npy", rng.standard_normal((1, 8)).astype(np.float32))
    for name, text in (("run_tflite.py", TFLITE_SCRIPT), ("run_onnx.py", ONNX_SCRIPT)):
        (out / name).write_text(text)
    return {"dir": out, "tflite": out / "dense.tflite", "onnx": out / "tiny.onnx", "x": out / "x.npy"}


def _run_ok(info: em.RootfsInfo, args: list[str], *, legacy_tflite: bool = False, cwd: Path | None = None) -> str:
    proc = em.run_emulated(info, args, timeout=600, env={"TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=cwd,
                           legacy_tflite=legacy_tflite)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_emulated_python_is_aarch64_and_runs_litert(info: em.RootfsInfo, models: dict[str, Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    assert _run_ok(info, ["-c", "import platform; print(platform.machine())"]).strip() == "aarch64"
    out = models["dir"] / "litert_emulated.npy"
    _run_ok(info, [str(models["dir"] / "run_tflite.py"), "litert", str(models["tflite"]), str(models["x"]),
                   str(out)])
    it = Interpreter(model_path=str(models["tflite"]))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], np.load(models["x"]))
    it.invoke()
    np.testing.assert_allclose(np.load(out), it.get_tensor(it.get_output_details()[0]["index"]), atol=1e-4)


@pytest.mark.slow
def test_emulated_onnxruntime_matches_the_host(info: em.RootfsInfo, models: dict[str, Path]) -> None:
    import onnxruntime as ort

    out = models["dir"] / "onnx_emulated.npy"
    _run_ok(info, [str(models["dir"] / "run_onnx.py"), str(models["onnx"]), str(models["x"]), str(out)])
    host = ort.InferenceSession(str(models["onnx"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(np.load(out), host.run(None, {"x": np.load(models["x"])})[0], atol=1e-4)


@pytest.mark.slow
def test_legacy_tflite_runtime_with_numpy_1(info: em.RootfsInfo, models: dict[str, Path]) -> None:
    if info.legacy_site_dir is None:
        pytest.skip("rootfs built without the tflite-runtime site dir")
    assert _run_ok(info, ["-c", "import numpy; print(numpy.__version__)"], legacy_tflite=True).startswith("1.")
    out = models["dir"] / "legacy_emulated.npy"
    _run_ok(info, [str(models["dir"] / "run_tflite.py"), "legacy", str(models["tflite"]), str(models["x"]),
                   str(out)], legacy_tflite=True)
    np.testing.assert_allclose(np.load(out), np.load(models["dir"] / "litert_emulated.npy"), atol=1e-4)


@pytest.mark.slow
def test_pytest_and_child_pythons_run_emulated(info: em.RootfsInfo, tmp_path: Path) -> None:
    (tmp_path / "test_inside.py").write_text(
        "import platform, subprocess, sys\n"
        "def test_machine():\n    assert platform.machine() == 'aarch64'\n"
        "def test_child_python_is_emulated():\n"
        "    out = subprocess.run([sys.executable, '-c', 'import platform; print(platform.machine())'],\n"
        "                         capture_output=True, text=True, check=True).stdout\n"
        "    assert out.strip() == 'aarch64'\n")
    out = _run_ok(info, ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], cwd=tmp_path)
    assert "2 passed" in out
