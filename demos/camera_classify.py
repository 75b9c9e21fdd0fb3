"""Camera classification demo on the edgepack pipeline: live frames (webcam) or headless on a video file.

    python demos/camera_classify.py fashion_cnn.epk --source 0                       # webcam, window
    python demos/camera_classify.py fashion_cnn.epk --source video.avi --headless --max-frames 200
    python demos/camera_classify.py fashion_cnn.epk --source video.avi --headless --pace --out labelled.mp4

Capture runs in its own thread (latest frame wins on a camera or a paced file), inference in this loop, overlay
and sinks in a third thread; the last line is the pipeline's summary (fps, bottleneck stage, service time,
glass-to-result latency, dropped frames). Imports only edgepack.runtimes, numpy and OpenCV
(``pip install 'edgepack[litert,camera]'``).
"""

from __future__ import annotations

import argparse
import sys

from edgepack.runtimes import load
from edgepack.runtimes.errors import EdgepackError
from edgepack.runtimes.pipeline import JsonLinesSink, Pipeline, Sink, VideoFileSink, WindowSink, open_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--source", default="0", help="camera index, /dev/videoN, video file, URL or image folder")
    parser.add_argument("--headless", action="store_true", help="no window: print results and timings")
    parser.add_argument("--pace", action="store_true", help="play a file at its own frame rate, like a camera")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: until the end)")
    parser.add_argument("--out", help="write the annotated video here")
    parser.add_argument("--json", help="write one JSON line per frame here")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    sinks: list[Sink] = []
    try:
        session = load(args.bundle, num_threads=args.threads)
        source = open_source(int(args.source) if args.source.isdigit() else args.source, pace=args.pace)
        if not args.headless:
            sinks.append(WindowSink("edgepack"))
        if args.out:
            sinks.append(VideoFileSink(args.out))
        if args.json:
            sinks.append(JsonLinesSink(args.json))
    except EdgepackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model runs on {session.explain()}")
    pipe = Pipeline(session, source, sinks=sinks, overlay=bool(sinks))
    for frames, result in enumerate(pipe.run(max_frames=args.max_frames or None), start=1):
        top = result.prediction.top_k[0] if result.prediction.top_k else None
        if args.headless and top is not None and frames % 25 == 1:
            print(f"frame {frames:5d}: {top.label} ({top.score:.2f})")
    stats = pipe.stats
    if stats.frames == 0:
        print(f"error: no frames read from {args.source} ({stats.ended})", file=sys.stderr)
        return 1
    print(f"{stats.frames} frames ({stats.ended}): service {stats.service_ms:.2f} ms, {stats.fps:.0f} fps")
    print(f"pipeline: {stats.summary_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
