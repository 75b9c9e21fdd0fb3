"""Real inputs for the zoo models (:mod:`edgepack.examples.zoo`), all from Debian packages that ship offline.

- photos and text images: ``opencv-doc`` (``/usr/share/doc/opencv-doc/examples/data``) and scikit-image's pages,
  through :mod:`edgepack.examples.documents`;
- read speech: ``pocketsphinx-testdata`` (LibriVox "Sense and Sensibility", 16 kHz mono, BSD-2).

:func:`real_data` gives, for a model, its calibration data as its users would pass it (BGR images for models
converted with pre-processing flags, or model-ready arrays) and disjoint model-ready evaluation samples (one list
of arrays per sample, in the model's input order), so a bundle and the raw runtime see the very same tensors.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.examples.documents import (
    OPENCV_DOC_DATA,
    document_crops,
    document_images,
    rotation_set,
    split_documents,
)
from edgepack.examples.zoo import ZooModel, ZooModelMissingError, zoo_path
from edgepack.runtimes.images import read_image
from edgepack.runtimes.manifest import Layout, Preprocessing
from edgepack.runtimes.preprocess import preprocess

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
#: Face boxes (y0, y1, x0, x1) in opencv-doc photos: a player's face, and two rendered heads.
#: None: a centred square of 3/4 of the height.
FACES: dict[str, tuple[int, int, int, int] | None] = {"messi5.jpg": (55, 140, 195, 280), "Blender_Suzanne1.jpg": None,
                                                      "Blender_Suzanne2.jpg": None}
PEOPLE = ("messi5.jpg", "basketball1.png", "basketball2.png")
PNET_PREPROCESSING = Preprocessing(size=(120, 192), scale=1.0, mean=(127.5,), std=(128.0,), layout=Layout.NCHW)
SILERO_CONTEXT, SILERO_CHUNK = 64, 512


@dataclass(frozen=True)
class RealData:
    """Calibration as a user passes it (``images`` BGR uint8, or ``arrays`` by input name, axis 0 = sample) and
    model-ready evaluation samples, none of them in the calibration set."""

    evaluation: list[list[np.ndarray]]
    images: list[np.ndarray] | None = None
    arrays: dict[str, np.ndarray] | None = None
    note: str = ""


def _need(path: Path, package: str) -> Path:
    if not path.exists():
        raise ZooModelMissingError(f"{path} is missing: install Debian's {package} (`make models` does).")
    return path


def face_crops() -> list[np.ndarray]:
    """Jittered crops (BGR) around the faces in opencv-doc photos: shifts, scales and mirror images."""
    out = []
    for name, box in FACES.items():
        image = read_image(_need(OPENCV_DOC_DATA / name, "opencv-doc"))
        h, w = image.shape[:2]
        y0, y1, x0, x1 = box or (h // 8, h * 7 // 8, (w - h * 3 // 4) // 2, (w + h * 3 // 4) // 2)
        side = max(y1 - y0, x1 - x0)
        jitters = [(dy, dx, grow) for dy in (-0.1, 0.0, 0.1) for dx in (-0.1, 0.1) for grow in (1.0, 1.3)]
        for k, (dy, dx, grow) in enumerate(jitters):
            s = int(side * grow)
            cy, cx = (y0 + y1) // 2 + int(dy * side), (x0 + x1) // 2 + int(dx * side)
            top, left = max(0, cy - s // 2), max(0, cx - s // 2)
            crop = image[top : top + s, left : left + s]
            out.append(crop[:, ::-1] if k % 3 == 0 else crop)
    return out


def text_lines(images: list[tuple[str, np.ndarray]], *, min_height: int = 8) -> list[np.ndarray]:
    """Crops of the printed lines in page images (BGR), found by the rows that hold ink."""
    import cv2

    lines = []
    for _, page in images:
        gray = cv2.cvtColor(page, cv2.COLOR_BGR2GRAY)
        ink = (gray < min(128, int(gray.mean()) - 30)).mean(axis=1) > 0.01
        edges = np.flatnonzero(np.diff(np.r_[0, ink.astype(np.int8), 0]))
        for top, bottom in zip(edges[0::2], edges[1::2]):
            if bottom - top >= min_height:
                pad = (bottom - top) // 4
                cols = np.flatnonzero((gray[top:bottom] < 128).any(axis=0))
                if cols.size > 4 * (bottom - top):
                    lines.append(page[max(0, top - pad) : bottom + pad, max(0, cols[0] - pad) : cols[-1] + pad])
    return lines


def read_speech(limit_s: float = 30.0) -> np.ndarray:
    """LibriVox read speech from pocketsphinx-testdata, 16 kHz mono float32 in [-1, 1], files concatenated."""
    files = sorted(_need(LIBRIVOX, "pocketsphinx-testdata").glob("*.wav"))
    parts = []
    for f in files:
        with wave.open(str(f)) as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768)
    return np.concatenate(parts)[: int(limit_s * 16000)]


def _silero_sequence(speech: np.ndarray) -> list[list[np.ndarray]]:
    """Silero VAD inputs over a stream: each chunk with its 64-sample context and the state the raw model carried."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(zoo_path("silero_vad_onnx")), providers=["CPUExecutionProvider"])
    state, context, out = np.zeros((2, 1, 128), np.float32), np.zeros((1, SILERO_CONTEXT), np.float32), []
    sr = np.array(16000, np.int64)
    for i in range(0, len(speech) - SILERO_CHUNK + 1, SILERO_CHUNK):
        chunk = speech[None, i : i + SILERO_CHUNK]
        sample = [np.concatenate([context, chunk], axis=1), state, sr]
        out.append(sample)
        _, state = session.run(None, {"input": sample[0], "state": state, "sr": sr})
        context = chunk[:, -SILERO_CONTEXT:]
    return out


def log_mel_int8(speech: np.ndarray, *, bins: int = 40, stride: int = 3) -> list[list[np.ndarray]]:
    """microWakeWord-style features: 40 log-mel bins every 10 ms (30 ms windows), int8, ``stride`` frames a step.

    An approximation of the micro-frontend (no PCAN): the values are real speech features in the model's int8
    range, in stream order.
    """
    win, hop, n_fft = 480, 160, 512
    frames = np.stack([speech[i : i + win] * np.hanning(win) for i in range(0, len(speech) - win, hop)])
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(125), mel(7500), bins + 2) / 2595) - 1) / 8000 * (n_fft // 2)
    k = np.arange(n_fft // 2 + 1)[None, :]
    fb = np.clip(np.minimum((k - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
                            (edges[2:, None] - k) / (edges[2:, None] - edges[1:-1, None])), 0, None)
    feats = np.log(power @ fb.T + 1e-6)
    q = np.clip(np.round((feats - feats.min()) / np.ptp(feats) * 255 - 128), -128, 127).astype(np.int8)
    return [[q[None, i : i + stride]] for i in range(0, len(q) - stride + 1, stride)]


def _images(model: ZooModel, calib: list[np.ndarray], evaluation: list[np.ndarray], note: str) -> RealData:
    spec = model.preprocessing
    if spec is None:
        raise ZooModelMissingError(f"{model.id} has image data but no pre-processing in the zoo table")
    return RealData(evaluation=[[preprocess(img, spec)] for img in evaluation], images=calib, note=note)


def real_data(model: ZooModel, *, limit: int = 64) -> RealData:
    """Calibration and evaluation data for ``model`` (at most ``limit`` of each).

    Raises:
        ZooModelMissingError: a Debian data package is not installed.
    """
    kind = model.data
    if kind == "faces":
        crops = face_crops()
        return _images(model, crops[0::2], crops[1::2], f"{len(crops)} face crops of opencv-doc photos")
    if kind in ("pages", "pages_turned"):
        if kind == "pages_turned":
            docs = rotation_set("documents")
            return _images(model, docs.calibration[:limit], docs.evaluation[:limit], docs.note)
        calib, evaluation = split_documents(document_crops(document_images(), per_image=4))
        return _images(model, [i for _, i in calib][:limit], [i for _, i in evaluation][: limit // 8],
                       "square crops of real pages (scikit-image, opencv-doc), pages disjoint")
    if kind in ("text_lines", "text_lines_turned"):
        calib, evaluation = (text_lines(half) for half in split_documents(document_images()))
        if kind == "text_lines_turned":
            calib, evaluation = (x + [line[::-1, ::-1] for line in x] for x in (calib, evaluation))
        return _images(model, calib[:limit], evaluation[:limit], "printed lines cut from real pages (+180 degrees)")
    if kind == "people":
        photos = [read_image(_need(OPENCV_DOC_DATA / n, "opencv-doc")) for n in PEOPLE]
        crops = [c for p in photos for c in (p, p[:, : p.shape[1] * 3 // 4], p[:, p.shape[1] // 4 :])]
        crops += [c[:, ::-1] for c in crops]
        return _images(model, crops[0::2], crops[1::2], "opencv-doc photos of people, crops and mirror images")
    if kind == "pnet_photos":
        photos = [read_image(_need(OPENCV_DOC_DATA / n, "opencv-doc")) for n in (*PEOPLE, "home.jpg")]
        samples = [preprocess(p[:, ::-1] if k else p, PNET_PREPROCESSING) for p in photos for k in (0, 1)]
        return RealData(evaluation=[[s] for s in samples[1::2]], arrays={"x": np.concatenate(samples[0::2])},
                        note="opencv-doc photos with people, RGB (x-127.5)/128")
    speech = read_speech()
    if kind == "speech_chunks":
        seq = _silero_sequence(speech)
        calib = seq[0::2][:limit]
        arrays = {"input": np.stack([s[0] for s in calib]), "state": np.stack([s[1] for s in calib]),
                  "sr": np.stack([s[2] for s in calib])}
        return RealData(evaluation=seq[1::2][:limit], arrays=arrays, note="LibriVox speech, 32 ms chunks in order")
    if kind == "wakeword_features":
        return RealData(evaluation=log_mel_int8(speech)[: 4 * limit], note="LibriVox speech, log-mel int8")
    if kind == "audio_22k":
        n = 43844
        x = np.interp(np.arange(0, len(speech), 16000 / 22050), np.arange(len(speech)), speech).astype(np.float32)
        clips = [x[None, i : i + n, None] for i in range(0, len(x) - n + 1, n // 2)]
        return RealData(evaluation=[[c] for c in clips[1::2]], arrays={"input_2": np.concatenate(clips[0::2])},
                        note="LibriVox speech resampled to 22.05 kHz, 2 s windows")
    raise ZooModelMissingError(f"no real-data loader {kind!r} for {model.id}")


def write_calibration(model: ZooModel, data: RealData, folder: Path) -> Path:
    """Write the calibration data where ``edgepack convert --calibration`` reads it: an image folder, a ``.npy``
    (one input) or a ``.npz`` (several inputs, by name)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    if data.images is not None:
        for k, image in enumerate(data.images):
            cv2.imwrite(str(folder / f"{k:04d}.png"), image)
        return folder
    arrays: dict[str, Any] = dict(data.arrays or {})
    if len(arrays) == 1:
        path = folder.with_suffix(".npy")
        np.save(path, next(iter(arrays.values())), allow_pickle=False)
        return path
    path = folder.with_suffix(".npz")
    np.savez(path, **arrays)
    return path
