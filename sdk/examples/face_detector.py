"""The MediaPipe BlazeFace short-range face detector as an edgepack bundle (for demos/detect_faces.py and tests).

``python -m edgepack.examples.face_detector --out face.epk`` (after ``make models``). The CLI equivalent:
``edgepack convert face_detection_short_range.tflite --target rpi4 --postprocess blazeface-short --input-size 128x128
--resize letterbox --color RGB --scale 0.00784313725490196 --mean 1 --labels face.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgepack.runtimes.detection import BLAZEFACE_SHORT
from edgepack.runtimes.manifest import ColorOrder, Preprocessing, ResizeMode

from .documents import DEFAULT_CACHE
from .mediapipe import mediapipe_model_path

#: What the model wants: 128x128 RGB in [-1, 1] (x / 127.5 - 1), the frame letterboxed (MediaPipe keeps the aspect
#: ratio; it pads with black, edgepack with grey 114).
BLAZEFACE_PREPROCESSING = Preprocessing(size=(128, 128), resize=ResizeMode.LETTERBOX, color=ColorOrder.RGB,
                                        scale=1 / 127.5, mean=(1.0,), std=(1.0,))


def face_bundle(out: Path, *, target: str = "rpi4", cache: Path = DEFAULT_CACHE) -> Path:
    """Convert ``face_detection_short_range.tflite`` (from the cached mediapipe wheel) into a bundle at ``out``.

    Raises:
        ExampleModelMissingError: the wheel is not cached (run ``make models``).
    """
    from edgepack.converters.convert import convert

    model = mediapipe_model_path("face_detection_short_range", cache)
    bundle = convert(model, target=target, labels=["face"], preprocessing=BLAZEFACE_PREPROCESSING,
                     postprocessing=BLAZEFACE_SHORT, name="face_detection_short_range", progress=False)
    bundle.save(out)
    return Path(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="build the BlazeFace short-range bundle")
    p.add_argument("--out", type=Path, default=Path("face.epk"))
    p.add_argument("--target", default="rpi4")
    a = p.parse_args()
    print(f"wrote {face_bundle(a.out, target=a.target)}")
