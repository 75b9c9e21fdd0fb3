"""The zoo of real third-party models through ``edgepack convert``, every row as its users would run it.

For each zoo model (:mod:`edgepack.examples.zoo`: Keras .h5, SavedModel, .tflite fp16/int8/custom-op, ONNX opset
<= 12 / dynamic H,W / NCHW / several int64 and state inputs, detectors, segmenters, PyTorch) and each recipe that
applies: the command line, its outcome (or the one error line the user saw), and, when it made a bundle, the
bundle run by ``edgepack.runtimes.load(...).run(...)`` against the model's RAW runtime (ai_edge_litert
``Interpreter`` / onnxruntime ``InferenceSession`` / Keras / TF1 SavedModel session / torch) on real inputs from
Debian packages: lowest cosine over outputs, largest abs error, top-1 agreement of the first output, model size
and latency (medians, interleaved, batch 1, library default threads) as ratios to the source / raw runtime.

Prints the table and writes ``benchmarks/results/zoo.json`` (with machine and library versions). Needs
``make models`` (wheels + Debian data); never downloads.

    .venv/bin/python benchmarks/zoo.py [--only ID[,ID...]] [--recipes fp32,qdq-int8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from edgepack.examples.zoo import ZOO
from edgepack.examples.zoo_check import RowResult, check_row


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[RowResult]) -> str:
    """Markdown table of the rows; a failed row shows its error line."""
    out = ["| model | source kind | recipe | result | cosine | max abs | top-1 | size x | latency x |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        result = "ok" if r.ok else f"FAIL ({r.stage}): {r.error}"
        out.append(f"| {r.model} | {', '.join(r.kinds)} | {r.recipe} | {result.replace('|', '/')} | "
                   f"{_fmt(r.cosine, '.6f')} | {_fmt(r.max_abs, '.3g')} | {_fmt(r.top1, '.3f')} | "
                   f"{_fmt(r.size_ratio, '.2f')} | {_fmt(r.latency_ratio, '.2f')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the rows, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma list of model ids (default: all)")
    p.add_argument("--recipes", default="", help="comma list of recipes (default: every recipe that applies)")
    args = p.parse_args(argv)
    only = {x for x in args.only.split(",") if x}
    recipes = {x for x in args.recipes.split(",") if x}
    rows = []
    for model in ZOO:
        if only and model.id not in only:
            continue
        for recipe in model.recipes:
            if recipes and recipe not in recipes:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                row = check_row(model, recipe, Path(tmp))
            print(f"{row.model} {row.recipe}: {'ok' if row.ok else row.error} ({row.seconds:.1f} s)", flush=True)
            rows.append(row)
    print(table(rows))
    if not only and not recipes:
        path = write_result("zoo", {"rows": [r.as_dict() for r in rows], "table": table(rows).splitlines()})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
