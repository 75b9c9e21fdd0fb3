"""Face detection on a camera or a video with a MediaPipe BlazeFace bundle (imports only edgepack.runtimes + cv2).

    python demos/detect_faces.py --bundle face.epk --source 0                       # a window
    python demos/detect_faces.py --bundle face.epk --source video.avi --headless --out annotated.mp4 \
        --json results.jsonl

Make the bundle with ``make demo-camera`` or ``edgepack convert face_detection_short_range.tflite --target rpi4
--postprocess blazeface-short --input-size 128x128 --resize letterbox --scale 0.00784313725490196 --mean 1``.
The last line printed is the run's summary: ``frames N, fps F, bottleneck STAGE Y ms, service S ms,
glass-to-result p50 B ms p95 C ms, dropped D``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

import numpy as np

from edgepack.runtimes import Session, load
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.errors import EdgepackError
from edgepack.runtimes.manifest import Manifest, PostprocessKind
from edgepack.runtimes.pipeline import JsonLinesSink, Pipeline, Sink, VideoFileSink, WindowSink, open_source
from edgepack.runtimes.session import Prediction
from edgepack.runtimes.tracking import IouTracker


def fail(message: str) -> None:
    """One line on stderr, exit status 2 (bad input)."""
    print(message, file=sys.stderr)
    sys.exit(2)


def check_detector(manifest: Manifest) -> None:
    """Refuse a bundle this demo cannot draw: its post-processing must be detection with a box decoder.

    Raises:
        SystemExit: code 2, after one line on stderr.
    """
    post = manifest.postprocessing
    if post.kind is not PostprocessKind.DETECTION or (post.ssd is None and post.yolo is None):
        fail(f"error: bundle post-processing is {post.kind.value!r} without a box decoder; this demo needs a "
             "detection bundle (edgepack convert ... --postprocess blazeface-short).")


class TrackedSession:
    """A session whose ``predict`` also gives each detection a stable ``track_id`` (:class:`IouTracker`).

    It keeps ``preprocess`` and ``run`` separate so the pipeline still times pre-process, inference and
    post-process one by one.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.manifest = session.manifest
        self.labels = session.labels
        self.tracker = IouTracker()

    def preprocess(self, image: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.session.preprocess(image, **kwargs)

    def run(self, inputs: Any, **kwargs: Any) -> list[np.ndarray]:
        return self.session.run(inputs, **kwargs)

    def predict(self, image: np.ndarray, **kwargs: Any) -> Prediction:
        pred = Session.predict(self, image, **kwargs)  # type: ignore[arg-type]  # pre → run → decode, via self
        return dataclasses.replace(pred, detections=self.tracker.update(pred.detections))


def main(argv: list[str] | None = None) -> int:
    """Run the detector over a source; exit 2 with one line on bad input."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="a detection bundle (.epk)")
    p.add_argument("--source", default="0", help="camera index, video file or URL")
    p.add_argument("--headless", action="store_true", help="no window")
    p.add_argument("--out", help="annotated video file (.mp4/.avi)")
    p.add_argument("--json", help="results as JSON lines")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--pace", action="store_true", help="play a video file at its own frame rate, like a camera")
    args = p.parse_args(argv)
    try:
        bundle = read_bundle(args.bundle)
        check_detector(bundle.manifest)  # before any model loads: the refusal is the only line
        session = load(bundle, num_threads=args.threads)
    except EdgepackError as exc:
        fail(f"error: {exc}")
    try:
        source = open_source(args.source, pace=args.pace)
    except EdgepackError as exc:
        session.close()
        fail(f"error: {exc}")
    sinks: list[Sink] = []
    if args.out:
        sinks.append(VideoFileSink(args.out, fps=getattr(source, "fps", None) or 25.0))
    if args.json:
        sinks.append(JsonLinesSink(args.json))
    if not args.headless:
        sinks.append(WindowSink("edgepack faces"))
    pipe = Pipeline(TrackedSession(session), source, sinks=sinks, overlay=True)
    try:
        for _ in pipe.run(max_frames=args.max_frames):
            pass
    finally:
        session.close()
    print(pipe.stats.summary_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
