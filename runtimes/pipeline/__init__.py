"""Camera pipeline: a capture thread with a latest-frame policy, one inference stage, overlay and sinks.

>>> from edgepack.runtimes import load
>>> from edgepack.runtimes.pipeline import open_source, Pipeline, VideoFileSink, JsonLinesSink
>>> pipe = Pipeline(load("model.epk"), open_source("video.avi", pace=True),
...                 sinks=[VideoFileSink("out.mp4"), JsonLinesSink("r.jsonl")], overlay=True)
>>> for result in pipe.run(max_frames=None):   # FrameResult: frame_id, capture_ts, frame, prediction, timings
...     pass
>>> print(pipe.stats.summary_line())

numpy only at import; OpenCV (``cv2``) and picamera2 are imported when a source, sink or overlay needs them.
"""

from __future__ import annotations

from ..errors import SourceError
from .core import Pipeline
from .multistream import MultiStream, MultiStreamStats
from .results import FrameResult, PipelineStats
from .sinks import ImageFolderSink, JsonLinesSink, Sink, VideoFileSink, WindowSink
from .sources import ImageFolderSource, OpenCVSource, PiCamera2Source, Source, open_source

__all__ = [
    "FrameResult",
    "ImageFolderSink",
    "ImageFolderSource",
    "JsonLinesSink",
    "MultiStream",
    "MultiStreamStats",
    "OpenCVSource",
    "PiCamera2Source",
    "Pipeline",
    "PipelineStats",
    "Sink",
    "Source",
    "SourceError",
    "VideoFileSink",
    "WindowSink",
    "open_source",
]
