"""Camera classification demo: a bundle on live frames (webcam) or headless on a video file.

    python demos/camera_classify.py fashion_cnn.epk --source 0                 # webcam, window
    python demos/camera_classify.py fashion_cnn.epk --source video.avi --headless --max-frames 200

Imports only edgepack.runtimes, numpy and OpenCV (``pip install 'edgepack[litert,camera]'``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import cv2

from edgepack.runtimes import load
from edgepack.runtimes.postprocess import classify


def open_source(source: str) -> cv2.VideoCapture:
    """A camera index (``0``) or a video file / stream URL."""
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise SystemExit(f"error: cannot open video source {source!r} (camera index or video file)")
    return cap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--source", default="0", help="camera index or video file")
    parser.add_argument("--headless", action="store_true", help="no window: print results and timings")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: until the end)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    session = load(args.bundle, num_threads=args.threads)
    print(f"model runs on {session.explain()}")
    cap = open_source(args.source)
    frames, pre_t, run_t = 0, [], []
    try:
        while args.max_frames <= 0 or frames < args.max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            tensor = session.preprocess(frame)
            t1 = time.perf_counter()
            outputs = session.run(tensor)
            t2 = time.perf_counter()
            pre_t.append(t1 - t0)
            run_t.append(t2 - t1)
            frames += 1
            top = classify(outputs[0], session.manifest.postprocessing, session.labels, top_k=1)[0]
            if args.headless:
                if frames % 25 == 1:
                    print(f"frame {frames:5d}: {top.label} ({top.score:.2f})")
                continue
            cv2.putText(frame, f"{top.label} {top.score:.2f}  {1 / max(t2 - t0, 1e-6):.0f} fps", (10, 30),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2)
            cv2.imshow("edgepack", frame)
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                break
    finally:
        cap.release()
        if not args.headless:
            cv2.destroyAllWindows()
    if frames == 0:
        print("error: no frames read", file=sys.stderr)
        return 1
    total = [a + b for a, b in zip(pre_t, run_t)]
    print(f"{frames} frames: pre-process median {statistics.median(pre_t) * 1e3:.2f} ms, "
          f"inference median {statistics.median(run_t) * 1e3:.2f} ms, "
          f"end-to-end {1 / statistics.median(total):.0f} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
