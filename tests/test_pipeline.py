"""The camera pipeline (runtimes/pipeline): real video (opencv-doc vtest.avi), real Fashion-MNIST bundle."""

from __future__ import annotations

import _thread
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepack.runtimes import EdgepackError, load
from edgepack.runtimes.pipeline import (
    FrameResult,
    ImageFolderSink,
    JsonLinesSink,
    MultiStream,
    Pipeline,
    Sink,
    Source,
    SourceError,
    VideoFileSink,
    open_source,
)
from edgepack.runtimes.pipeline.core import THREAD_PREFIX

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"  # 795 frames, 768x576, 10 fps (Debian opencv-doc)


@pytest.fixture(scope="module")
def session(bundle_factory):  # type: ignore[no-untyped-def]
    with load(bundle_factory("fp32")) as s:
        yield s


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]


class SlowSink(Sink):
    """A sink that takes ``delay`` seconds per frame (a slow display or disk)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        time.sleep(self.delay)
        self.frames += 1


class StopsAfter(Source):
    """The real video that fails after ``n`` frames, as an unplugged camera does (no such hardware here)."""

    def __init__(self, n: int) -> None:
        self._inner = open_source(VIDEO)
        self.name, self.n, self.live = "cam-that-unplugs", n, True

    def read(self) -> np.ndarray | None:
        if self.n == 0:
            raise SourceError("video source 'cam-that-unplugs' stopped (camera unplugged)")
        self.n -= 1
        return self._inner.read()

    def close(self) -> None:
        self._inner.close()


def test_pipeline_import_pulls_no_opencv() -> None:
    code = ("import sys, edgepack.runtimes, edgepack.runtimes.pipeline; "
            "print(sorted(m for m in ('cv2', 'tensorflow', 'picamera2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unpaced_file_processes_every_frame(session) -> None:  # type: ignore[no-untyped-def]
    pipe = Pipeline(session, open_source(VIDEO), overlay=False)
    results = list(pipe.run(max_frames=60))
    assert [r.frame_id for r in results] == list(range(60))
    assert all(r.frame.shape == (576, 768, 3) and r.prediction.top_k for r in results)
    for r in results:  # glass-to-result covers the service time of the frame
        assert {"wait", "pre", "infer", "post"} <= set(r.timings)
        assert r.glass_to_result_ms >= r.service_ms > 0
    stats = pipe.stats
    assert (stats.frames, stats.dropped, stats.ended) == (60, 0, "max frames")
    assert 0 < stats.g2r_p50_ms <= stats.g2r_p95_ms and stats.fps > 0
    line = stats.summary_line()
    assert line.startswith("frames 60, fps ") and ", glass-to-result p50 " in line and line.endswith("dropped 0")
    assert not _pipeline_threads()


def test_paced_file_drops_stale_frames_when_a_stage_is_slow(session) -> None:  # type: ignore[no-untyped-def]
    slow = SlowSink(0.04)  # 25 fps at best, fed at 100 fps
    pipe = Pipeline(session, open_source(VIDEO, pace=True, fps=100), sinks=[slow], overlay=False)
    ids = [r.frame_id for r in pipe.run(max_frames=25)]
    stats = pipe.stats
    assert ids == sorted(ids) and len(set(ids)) == 25
    assert stats.dropped > 10 and ids[-1] > 40  # newest frames taken, stale ones dropped and counted
    assert stats.stage_p50_ms["sink"] >= 35 and stats.bottleneck[0] == "sink"
    # no stale frames pile up: a result is never older than a couple of sink periods
    assert stats.g2r_p95_ms < 3 * 40 + stats.service_ms + 50
    assert slow.frames >= 24


def test_sinks_write_valid_json_lines_video_and_images(session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sinks = [JsonLinesSink(tmp_path / "r.jsonl"), VideoFileSink(tmp_path / "out.avi", fps=10),
             ImageFolderSink(tmp_path / "frames")]
    pipe = Pipeline(session, VIDEO, sinks=sinks, overlay=True)
    results = list(pipe.run(max_frames=20))
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [x["frame_id"] for x in lines] == list(range(20))
    labels = set(session.labels)
    for rec, res in zip(lines, results):
        assert rec["capture_ts"] == pytest.approx(res.capture_ts, abs=1e-5)
        assert rec["glass_to_result_ms"] > 0 and {"pre", "infer", "post"} <= set(rec["timings"])
        assert rec["results"]["top_k"][0]["label"] in labels
        assert rec["results"]["top_k"][0]["label"] == res.prediction.top_k[0].label
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 20 and frames[0].shape == (576, 768, 3)
    assert np.abs(frames[5].astype(int) - results[5].frame.astype(int)).mean() < 20  # the frame, plus overlay text
    assert len(list((tmp_path / "frames").glob("frame_*.jpg"))) == 20
    assert not list(tmp_path.rglob(".*partial*"))  # every file renamed into place on close


def test_close_from_another_thread_stops_every_thread(session) -> None:  # type: ignore[no-untyped-def]
    pipe = Pipeline(session, open_source(VIDEO, pace=True, fps=50), sinks=[SlowSink(0.001)])
    threading.Timer(0.4, pipe.close).start()
    t0 = time.monotonic()
    n = sum(1 for _ in pipe.run())
    assert time.monotonic() - t0 < 3 and 0 < n < 100
    assert pipe.stats.ended == "stopped" and not _pipeline_threads()


def test_ctrl_c_ends_cleanly(session) -> None:  # type: ignore[no-untyped-def]
    pipe = Pipeline(session, open_source(VIDEO, pace=True, fps=50), sinks=[SlowSink(0.001)])
    threading.Timer(0.4, _thread.interrupt_main).start()
    n = 0
    try:
        for _ in pipe.run():
            n += 1
    except KeyboardInterrupt:  # raised in the loop body rather than inside the pipeline: closing still cleans up
        pipe.close()
    assert 0 < n < 100 and pipe.stats.ended == "stopped"
    assert not _pipeline_threads()


def test_stream_that_stops_midway_ends_cleanly_and_says_so(session) -> None:  # type: ignore[no-untyped-def]
    pipe = Pipeline(session, StopsAfter(8), overlay=False, drop_stale=False)
    results = list(pipe.run())
    assert len(results) == 8
    assert pipe.stats.ended.startswith("source failed:") and "cam-that-unplugs" in pipe.stats.ended
    assert not _pipeline_threads()


def test_end_of_stream(session) -> None:  # type: ignore[no-untyped-def]
    src = open_source(VIDEO)
    for _ in range(785):  # skip to the last 10 frames
        src.read()
    pipe = Pipeline(session, src, overlay=False)
    assert len(list(pipe.run())) == 10 and pipe.stats.ended == "end of stream"


def test_frames_of_varying_size(session, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cap = cv2.VideoCapture(VIDEO)
    folder = tmp_path / "imgs"
    folder.mkdir()
    sizes = [(576, 768), (240, 320), (480, 200), (1080, 1920), (31, 17)]
    for i, (h, w) in enumerate(sizes):
        ok, frame = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"{i}.png"), cv2.resize(frame, (w, h)))
    cap.release()
    pipe = Pipeline(session, open_source(folder), sinks=[VideoFileSink(tmp_path / "v.avi")])
    results = list(pipe.run())
    assert [r.frame.shape[:2] for r in results] == sizes
    assert all(r.prediction.top_k for r in results) and pipe.stats.ended == "end of stream"
    assert (tmp_path / "v.avi").stat().st_size > 0


@pytest.mark.parametrize("spec", ["/no/such/video.avi", "/dev/video97", 97, "rtsp://127.0.0.1:9/none"])
def test_unopenable_source_is_a_typed_error_naming_it(spec: object) -> None:
    with pytest.raises(SourceError, match=str(spec).replace(".", r"\.")) as info:
        open_source(spec)  # type: ignore[arg-type]
    assert isinstance(info.value, EdgepackError)


def test_folder_and_file_that_are_not_sources(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(SourceError, match="notes.txt"):
        open_source(tmp_path / "notes.txt")
    with pytest.raises(SourceError, match="holds no images"):
        open_source(tmp_path)


def test_multistream_routes_results_in_order_batched_and_sequential(session) -> None:  # type: ignore[no-untyped-def]
    seen = {}
    for batched in (True, False):
        ms = MultiStream(session, [VIDEO] * 4, max_batch=4, window_ms=3, batched=batched)
        per: dict[int, list[FrameResult]] = {i: [] for i in range(4)}
        for r in ms.run(max_frames=30):
            per[r.stream].append(r)
        stats = ms.stats
        assert stats.mode == ("batched" if batched else "sequential")
        for i in range(4):
            assert [r.frame_id for r in per[i]] == list(range(30))
            assert stats.streams[i].frames == 30 and stats.streams[i].ended == "max frames"
        assert (stats.mean_batch > 1.5) if batched else (stats.mean_batch == 1)
        seen[batched] = [[r.prediction.top_k[0] for r in per[i]] for i in range(4)]
        assert not _pipeline_threads()
    for a_stream, b_stream in zip(seen[True], seen[False]):  # same frame → same answer, batched or not
        for a, b in zip(a_stream, b_stream):
            assert a.label == b.label and a.score == pytest.approx(b.score, abs=1e-4)
    assert all(s == seen[True][0] for s in seen[True])  # four copies of one video: four identical streams


def test_multistream_per_stream_fps_is_fair(session) -> None:  # type: ignore[no-untyped-def]
    sources = [open_source(VIDEO, pace=True, fps=40) for _ in range(4)]
    ms = MultiStream(session, sources, max_batch=4, window_ms=3)
    for _ in ms.run(duration_s=1.5):
        pass
    stats = ms.stats
    assert all(s.frames > 20 for s in stats.streams)
    assert stats.fps_spread < 0.10, stats.summary_line()
    assert stats.throughput_fps > 0 and stats.queue and max(q for _, q in stats.queue) <= 4 * 2 + 4
    assert not _pipeline_threads()


def test_overlay_and_json_read_detections_masks_and_track_ids() -> None:
    from dataclasses import dataclass

    from edgepack.runtimes.pipeline.overlay import draw
    from edgepack.runtimes.pipeline.sinks import prediction_to_json

    @dataclass
    class Det:  # the duck type the overlay reads (Session.predict's detections carry these fields)
        box: tuple[float, float, float, float]
        score: float
        label: str
        track_id: int | None = None

    @dataclass
    class Pred:
        detections: list[Det]
        mask: np.ndarray
        top_k: list[object]

    frame = np.full((120, 160, 3), 40, np.uint8)
    mask = np.zeros((30, 40), np.int64)
    mask[20:, 30:] = 2  # bottom-right corner, at a quarter of the frame's size
    pred = Pred([Det((10, 20, 60, 90), 0.87, "face", 3)], mask, [])
    out = draw(frame, pred, fps=12.5, latency_ms=4.0)
    assert out.shape == frame.shape and np.array_equal(frame, np.full_like(frame, 40))  # drawn on a copy
    assert (out[50, 10] != 40).any() and (out[50, 60] != 40).any()  # left and right edges of the box
    assert (out[100, 140] != 40).any() and (out[60, 100] == 40).all()  # mask blended only where it is set
    js = prediction_to_json(pred)
    assert js["detections"] == [{"box": [10.0, 20.0, 60.0, 90.0], "score": 0.87, "label": "face", "track_id": 3}]
    assert js["mask_shape"] == [30, 40]
