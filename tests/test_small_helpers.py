"""The one-of-each helpers: atomic writes, image files, the progress bar, shape fitting, the store's files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepack.converters.calibration import ImageFolder
from edgepack.converters.errors import CalibrationError
from edgepack.measure.data import EvalDataError, ImageFolderData
from edgepack.runtimes import store_state
from edgepack.runtimes.errors import EdgepackError, ImageReadError, OpenCVMissingError, StoreNotWritableError
from edgepack.runtimes.fileio import AtomicWriter, atomic_write_bytes, atomic_write_text
from edgepack.runtimes.images import IMAGE_EXTENSIONS, is_image_file, list_images, read_image
from edgepack.runtimes.progress import ProgressBar
from edgepack.runtimes.tensors import shape_fits


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# ---- atomic writes ---------------------------------------------------------------------------------------


def test_atomic_write_creates_and_replaces_keeping_the_old_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    steps: list[str] = []
    assert atomic_write_text(target, "one\n", phase=steps.append) == target
    assert target.read_text() == "one\n" and steps == ["write", "fsync", "rename", "dirsync"]
    assert _mode(target) == 0o666 & ~_umask()  # like any new file, not mkstemp's 0o600
    target.chmod(0o640)
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and _mode(target) == 0o640
    atomic_write_bytes(target, b"three", mode=0o600)
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "report.json"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", broken_fsync)
        with pytest.raises(OSError, match="Input/output"):
            atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]

    with pytest.raises(RuntimeError, match="half-way"), AtomicWriter(tmp_path, prefix=".x-") as w:
        w.file.write(b"partial")
        assert w.temp_path is not None and w.temp_path.name.startswith(".x-")
        raise RuntimeError("half-way")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]

    blocker = tmp_path / "blocker"  # os.replace of a file onto a non-empty directory fails
    (blocker / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        atomic_write_text(blocker, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "report.json"]
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "x.json", "x")


def test_atomic_writer_commits_onto_a_name_known_only_after_writing(tmp_path: Path) -> None:
    with AtomicWriter(tmp_path, prefix=".slot-") as w:
        w.file.write(b"abc")
        done = w.commit(tmp_path / "abc.bin")
    assert done.read_bytes() == b"abc" and [p.name for p in tmp_path.iterdir()] == ["abc.bin"]
    with pytest.raises(ValueError, match="with"):
        _ = AtomicWriter(tmp_path).file


def test_store_pointer_write_failure_keeps_the_old_pointer(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / store_state.SLOTS).mkdir()
    info = store_state.SlotInfo("a" * 64, "m", "1", "fp32", 3, "2024-01-01T00:00:00+00:00", "litert/cpu")
    store_state.slot_path(tmp_path, info.sha256).write_bytes(b"epk")
    first = store_state.StoreState(store_state.SCHEMA, info, None, 1, store_state.now())
    store_state.write_state(tmp_path, first)
    assert store_state.read_state(tmp_path) == first
    assert _mode(tmp_path / store_state.STATE) == store_state.SLOT_MODE
    before = (tmp_path / store_state.STATE).read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreNotWritableError, match="No space left"):
        store_state.write_state(tmp_path, store_state.StoreState(store_state.SCHEMA, info, None, 2, store_state.now()))
    assert (tmp_path / store_state.STATE).read_bytes() == before
    assert json.loads(before)["generation"] == 1 and not list(tmp_path.glob(".pointer-*"))


def test_store_names_stay_importable() -> None:
    from edgepack.runtimes.store import LOCK, SCHEMA, SLOTS, STATE, BundleStore, SlotInfo, StoreStatus

    assert (SCHEMA, STATE, SLOTS, LOCK) == ("edgepack.store/1", "state.json", "slots", ".lock")
    assert BundleStore and SlotInfo is store_state.SlotInfo and StoreStatus is store_state.StoreStatus
    for module in ("store.py", "store_state.py", "fileio.py", "images.py", "progress.py"):
        lines = (Path(store_state.__file__).parent / module).read_text().count("\n")
        assert lines <= 400, (module, lines)


# ---- image files -----------------------------------------------------------------------------------------


def _bgr(h: int = 6, w: int = 5) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 120, 250  # B, G, R
    image[0, 0] = (1, 2, 3)
    return image


def test_list_and_read_real_images(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    assert cv2.imwrite(str(tmp_path / "b" / "two.png"), _bgr())
    assert cv2.imwrite(str(tmp_path / "one.PNG"), _bgr(4, 4)[..., 0])  # grayscale, upper-case suffix
    (tmp_path / "notes.txt").write_text("not an image")
    found = list_images(tmp_path)
    assert found == sorted([tmp_path / "b" / "two.png", tmp_path / "one.PNG"])
    assert list_images(tmp_path, limit=1) == found[:1]
    assert is_image_file("x.JPEG") and not is_image_file("x.txt") and ".webp" in IMAGE_EXTENSIONS
    assert is_image_file("x.gif", extensions=(".gif",))
    color = read_image(tmp_path / "b" / "two.png")
    assert color.dtype == np.uint8 and color.shape == (6, 5, 3)
    np.testing.assert_array_equal(color, _bgr())  # PNG is lossless and OpenCV keeps BGR
    gray = read_image(str(tmp_path / "one.PNG"))
    assert gray.shape == (4, 4, 3)


def test_unreadable_images_are_typed_errors(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "cls" / "a.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageReadError, match="cannot read image .*a.jpg.*remove or replace"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="not a directory"):
        list_images(tmp_path / "missing")
    with pytest.raises(CalibrationError, match="cannot read image .*a.jpg"):  # wrapped where they are read
        list(ImageFolder(tmp_path))
    with pytest.raises(EvalDataError, match="cannot read image .*a.jpg"):
        list(ImageFolderData(tmp_path))
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed: Pillow decodes (same error)
    with pytest.raises(ImageReadError, match="cannot read image .*a.jpg"):
        read_image(bad)
    monkeypatch.setitem(sys.modules, "PIL", None)  # and no Pillow either
    with pytest.raises(OpenCVMissingError, match="pip install") as info:
        read_image(bad)
    assert isinstance(info.value, EdgepackError)


# ---- shapes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "expected", "fits"), [
    ((1, 28, 28, 1), (1, 28, 28, 1), True),
    ((4, 28, 28, 1), (-1, 28, 28, 1), True),
    ((4, 28, 28, 1), (None, 28, None, 1), True),
    ((28, 28, 1), (-1, 28, 28, 1), False),
    ((1, 28, 28, 3), (-1, 28, 28, 1), False),
    ((), (), True),
    ((3,), (), False),
])
def test_shape_fits(shape: tuple[int, ...], expected: tuple[int | None, ...], fits: bool) -> None:
    assert shape_fits(shape, expected) is fits
    assert shape_fits(np.zeros(shape).shape, list(expected)) is fits


# ---- progress --------------------------------------------------------------------------------------------


def test_progress_bar_disabled_enabled_and_without_rich(monkeypatch) -> None:
    with ProgressBar(3, "quiet", enabled=False) as bar:
        bar.advance()
        bar.describe("still quiet")
        bar.update(2, total=5, description="x")
        assert not bar.shown
    pytest.importorskip("rich")
    with ProgressBar(None, "counting") as bar:
        assert bar.shown
        bar.advance(2)
        bar.update(3, total=10, description="phase")
        task = bar._bar.tasks[0]
        assert (task.completed, task.total, task.description) == (3, 10, "phase")
        bar.describe("renamed")
        bar.advance()
        assert (task.completed, task.description) == (4, "renamed")
    assert not bar.shown
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rich" else real(name, *a))
    with ProgressBar(3, "no rich") as bar:
        bar.advance()
        assert not bar.shown


def test_helpers_import_no_rich_or_opencv() -> None:
    probe = ("import sys, edgepack.runtimes.progress, edgepack.runtimes.images, edgepack.runtimes.fileio; "
             "print(sorted(m for m in ('rich', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
