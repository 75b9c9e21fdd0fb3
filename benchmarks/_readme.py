"""Render the result JSON files into ``benchmarks/README.md`` (between ``<!-- name:begin/end -->`` markers).

    .venv/bin/python benchmarks/_readme.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"


def _f(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _env(env: dict[str, Any]) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in sorted(env.get("libraries", {}).items()))
    return f"_{env.get('machine')}, {env.get('cpus')} CPUs, Python {env.get('python')}; {libs}; {env.get('date')}_"


def vs_raw_tools_table(result: dict[str, Any]) -> str:
    """One Markdown table per model."""
    out = [_env(result["environment"]), ""]
    for m in result["models"]:
        out += [f"**{m['model']}** — data: {m['data']}; reference: {m['reference']}; {m['threads']} thread, "
                f"{m['latency_runs']} interleaved runs per candidate; measured {m.get('measured', '?')}", "",
                "| candidate | made by | size KB | × float size | top-1 | top-1 agreement | cosine | SNR dB "
                "| p50 ms | p90 ms | × float latency |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in m["rows"]:
            lat = r["latency"]
            out.append(
                f"| {r['candidate']} | {r['made_by']} | {r['bytes'] / 1e3:.1f} | {_f(r['size_vs_float'], '.3f')} "
                f"| {_f(r['top1'], '.4f')} | {_f(r['top1_agreement'], '.4f')} | {_f(r['cosine'], '.5f')} "
                f"| {_f(r['snr_db'], '.1f')} | {lat['p50_ms']:.3f} | {lat['p90_ms']:.3f} "
                f"| {_f(r['latency_vs_float'], '.2f')} |")
        out += [""] + [f"- {n}" for n in m["notes"]] + [""]
    return "\n".join(out)


def tflite_recipes_table(result: dict[str, Any]) -> str:
    """The five TFLite recipes with the wrapper overhead (Session.run vs raw invoke)."""
    out = [_env(result["environment"]), "",
           "| recipe | bytes | × fp32 | test accuracy | median ms | × fp32 | delegate | Session.run µs | raw invoke µs "
           "| overhead ratio |",
           "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in result["rows"]:
        o = r["overhead"]
        out.append(f"| {r['recipe']} | {r['bytes']} | {r['size_vs_fp32']:.3f} | {r['accuracy']:.4f} "
                   f"| {r['median_ms']:.3f} | {r['latency_vs_fp32']:.2f} | {r['delegate']} | {o['session_us']:.1f} "
                   f"| {o['raw_us']:.1f} | {o['ratio_median']:.3f} |")
    return "\n".join(out)


RENDERERS = {"vs_raw_tools": vs_raw_tools_table, "tflite_recipes": tflite_recipes_table}


def update_readme(path: Path = README) -> Path:
    """Replace every ``<!-- name:begin -->…<!-- name:end -->`` block with the table of ``results/name.json``."""
    text = path.read_text(encoding="utf-8")
    for name, render in RENDERERS.items():
        result_file = HERE / "results" / f"{name}.json"
        if not result_file.is_file():
            continue
        table = render(json.loads(result_file.read_text()))
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    path.write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"updated {update_readme()}")
    sys.exit(0)
