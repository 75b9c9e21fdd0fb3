"""``edgepack report``: accuracy, size and latency of several bundles side by side (Markdown + HTML).

>>> report = build_report(["fp32.epk", "int8.epk"], "fashion-mnist:test", reference="model.keras",
...                       source="model.keras")
>>> files = report.write("report/")          # report.md, report.html (self-contained), report.json, *.png

Every bundle is evaluated on the same data (each with its own pre-processing), benchmarked in its own
process (load time and peak RSS are its own), and — given the float source — debugged per layer.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.measure import plots as plots
from edgepack.measure.data import DataSource, is_image, open_data
from edgepack.measure.evaluate import EvalResult, evaluate_many
from edgepack.measure.qdebug import QuantDebugError, QuantDebugReport, debug_quantization, short_name
from edgepack.measure.runners import RunOptions
from edgepack.runtimes.backends import backends_for
from edgepack.runtimes.bench_process import benchmark_isolated
from edgepack.runtimes.benchmark import BenchResult, Machine, machine
from edgepack.runtimes.bundle import read_bundle
from edgepack.runtimes.errors import BackendUnavailableError, EdgepackError
from edgepack.runtimes.fileio import atomic_write_bytes, atomic_write_text
from edgepack.runtimes.progress import ProgressBar
from edgepack.runtimes.serde import to_json

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars")


class ReportError(EdgepackError):
    """A report cannot be made (no bundles, output folder problems, no browser for the screenshot)."""


@dataclass(frozen=True)
class ReportEntry:
    """One bundle's figures."""

    name: str
    path: str
    precision: str
    size_bytes: int
    evaluation: EvalResult
    bench: BenchResult
    qdebug: QuantDebugReport | None
    qdebug_note: str
    #: ``report["auto"]`` of a bundle made with ``--recipe auto`` (every measured candidate), else None.
    auto: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReportFiles:
    """What :meth:`Report.write` wrote."""

    markdown: Path
    html: Path
    json: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class Report:
    """All entries plus where and on what they were measured."""

    data: str
    samples: int
    reference: str | None
    entries: tuple[ReportEntry, ...]
    notes: tuple[str, ...]
    environment: Machine
    created: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (evaluation, bench and per-layer results of every bundle)."""
        return to_json(self)  # type: ignore[no-any-return]

    def figures(self) -> dict[str, bytes]:
        """PNG bytes by file name."""
        figs = {"scatter.png": plots.scatter(self.entries),
                "latency.png": plots.latency_distribution(self.entries)}
        for e in self.entries:
            if e.qdebug is not None:
                figs[f"layers_{_slug(e.name)}.png"] = plots.layer_errors(e.qdebug, title=f"{e.name}: worst layers")
            if e.auto is not None:
                figs[f"auto_{_slug(e.name)}.png"] = plots.auto_candidates(e.auto)
        return figs

    def write(self, folder: str | os.PathLike[str]) -> ReportFiles:
        """Write ``report.md`` (+ PNGs beside it), a self-contained ``report.html`` and ``report.json``."""
        out = Path(folder)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReportError(f"cannot create the report folder {out}: {exc}") from exc
        figs = self.figures()
        for name, png in figs.items():
            atomic_write_bytes(out / name, png)
        md = atomic_write_text(out / "report.md", self.markdown())
        page = atomic_write_text(out / "report.html", self.html(figs))
        js = atomic_write_text(out / "report.json", json.dumps(self.to_json(), indent=1) + "\n")
        return ReportFiles(markdown=md, html=page, json=js, plots=tuple(out / n for n in figs))

    def summary_rows(self) -> list[list[str]]:
        """The side-by-side table: header row first."""
        head = ["bundle", "precision", "size MB", "top-1", "top-5", "vs reference: cosine / top-1 agr. / SNR dB",
                "invoke p50 / p90 / p99 ms", "end-to-end p50 ms", "load ms", "first run ms", "peak RSS MiB",
                "runs on"]
        rows = [head]
        for e in self.entries:
            ev, b = e.evaluation, e.bench
            acc = ev.accuracy
            agr = ev.agreement[0] if ev.agreement else None
            rows.append([
                e.name, e.precision, f"{e.size_bytes / 1e6:.3f}", f"{acc.top1:.4f}" if acc else "–",
                f"{acc.top5:.4f}" if acc and acc.top5 is not None else "–",
                (f"{agr.cosine:.5f} / {_opt(agr.top1_agreement, '.4f')} / {agr.snr_db:.1f}" if agr else "–"),
                f"{b.invoke.p50_ms:.3f} / {b.invoke.p90_ms:.3f} / {b.invoke.p99_ms:.3f}",
                f"{b.end_to_end.p50_ms:.3f}" if b.end_to_end else "–",
                f"{b.load_seconds * 1e3:.1f}" if b.load_seconds is not None else "–",
                f"{b.first_run_seconds * 1e3:.2f}", f"{b.memory.peak_rss_bytes / 2**20:.1f}",
                f"{b.runtime.backend} {b.runtime.backend_version}/{b.runtime.delegate}",
            ])
        return rows

    def _intro(self) -> list[str]:
        env = self.environment
        threads = {e.bench.runtime.threads for e in self.entries}
        runs = {e.bench.invoke.runs for e in self.entries}
        return [
            f"Data: {self.data} ({self.samples} samples)"
            + (f"; reference: {self.reference}" if self.reference else ""),
            f"Machine: {env.machine}, {env.cpu_model}, {env.cpus} CPUs; {env.system}; Python {env.python}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(env.libraries.items())),
            f"Latency: {'/'.join(map(str, sorted(runs)))} timed runs after warm-up, threads "
            f"{'/'.join(str(t or 'default') for t in threads)}, each bundle in its own process; "
            f"created {self.created}.",
        ]

    def all_notes(self) -> list[str]:
        """Report notes, then per-bundle notes; a note shared by every bundle is listed once."""
        by_note: dict[str, list[str]] = {}
        for e in self.entries:
            for n in (*e.evaluation.notes, *_profile_notes(e)):
                by_note.setdefault(n, []).append(e.name)
        out = list(self.notes)
        for note, names in by_note.items():
            who = "all bundles" if len(names) == len(self.entries) > 1 else ", ".join(names)
            out.append(f"{who}: {note}")
        return out

    def markdown(self) -> str:
        """The report as Markdown (plots referenced as PNG files beside it)."""
        rows = self.summary_rows()
        out = ["# edgepack report", "", *[f"- {line}" for line in self._intro()], "", _md_table(rows), "",
               "![accuracy vs latency vs size](scatter.png)", "", "![latency distribution](latency.png)", ""]
        out += _md_per_class(self.entries)
        for e in self.entries:
            out += [f"## {e.name}: per-layer quantization error", ""]
            if e.qdebug is None:
                out += [f"Not analysed: {e.qdebug_note}", ""]
                continue
            out += [f"![per-layer error](layers_{_slug(e.name)}.png)", "", e.qdebug.table(top=15), ""]
        out += ["## Notes", "", *[f"- {n}" for n in self.all_notes()]]
        return "\n".join(out) + "\n"

    def html(self, figures: dict[str, bytes] | None = None) -> str:
        """A self-contained HTML page (inline CSS, plots embedded as base64 PNG)."""
        figs = figures if figures is not None else self.figures()

        def img(name: str, alt: str) -> str:
            data = base64.b64encode(figs[name]).decode()
            return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

        rows = self.summary_rows()
        intro = "".join(f"<li>{html.escape(x)}</li>" for x in self._intro())
        body = ["<h1>edgepack report</h1>", f"<ul>{intro}</ul>",
                _html_table(rows), '<div class="plots">', img("scatter.png", "accuracy vs latency vs size"),
                img("latency.png", "latency distribution"), "</div>"]
        per_class = _per_class_rows(self.entries)
        if per_class:
            body += ["<h2>Per-class accuracy</h2>", _html_table(per_class)]
        for e in self.entries:
            if e.evaluation.accuracy is not None:
                body.append(f"<details><summary>{html.escape(e.name)}: confusion matrix</summary>"
                            f"<pre>{html.escape(e.evaluation.confusion_table())}</pre></details>")
        for e in self.entries:
            if e.auto is not None:
                from edgepack.auto.report import HEADERS, rows

                body += [f"<h2>{html.escape(e.name)}: --recipe auto candidates</h2>",
                         img(f"auto_{_slug(e.name)}.png", "candidates: accuracy vs latency vs size"),
                         _html_table([HEADERS, *rows(e.auto)])]
        body.append("<h2>Per-layer quantization error</h2>")
        for e in self.entries:
            if e.qdebug is None:
                body.append(f"<p><b>{html.escape(e.name)}</b>: not analysed — {html.escape(e.qdebug_note)}</p>")
                continue
            q = e.qdebug
            keep = ", ".join(short_name(n) for n in q.suggested_float) or "nothing"
            kept = (f"; with those in float {q.output_snr_db_kept_float:.1f} dB"
                    if q.output_snr_db_kept_float is not None else "")
            out_snr = f" Output SNR vs float {q.output_snr_db:.1f} dB{kept}." if q.output_snr_db is not None else ""
            body += [f"<h3>{html.escape(e.name)}</h3>", img(f"layers_{_slug(e.name)}.png", "per-layer error"),
                     f"<p>{html.escape(q.method)}, {q.samples} samples. Keep in float: {html.escape(keep)}."
                     f"{html.escape(out_snr)}</p>"]
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.all_notes())
        body += ["<h2>Notes</h2>", f"<ul>{notes}</ul>"]
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgepack report</title>"
                f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}"
        "table{border-collapse:collapse;margin:12px 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "th{background:#f0f3f7}.plots{display:flex;flex-wrap:wrap;gap:12px}img{max-width:100%}"
        "h1{font-size:24px}h2{font-size:18px;margin-top:28px}h3{font-size:15px}li{margin:2px 0}")


def _opt(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(" --- " for _ in rows[0]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def _per_class_rows(entries: Sequence[ReportEntry]) -> list[list[str]]:
    labelled = [e for e in entries if e.evaluation.accuracy is not None]
    if not labelled:
        return []
    classes = labelled[0].evaluation.accuracy.per_class  # type: ignore[union-attr]
    rows = [["class", *(e.name for e in labelled)]]
    for k, c in enumerate(classes):
        cells = []
        for e in labelled:
            pc = e.evaluation.accuracy.per_class  # type: ignore[union-attr]
            cells.append(_opt(pc[k].accuracy, ".3f") if k < len(pc) else "–")
        rows.append([c.label, *cells])
    return rows


def _md_per_class(entries: Sequence[ReportEntry]) -> list[str]:
    rows = _per_class_rows(entries)
    return ["## Per-class accuracy", "", _md_table(rows), ""] if rows else []


def _profile_notes(e: ReportEntry) -> list[str]:
    p = e.bench.profile
    if p is None:
        return []
    if not p.available:
        return [f"per-op profile not available: {p.reason}"]
    top = ", ".join(f"{o.name} ({o.op}) {o.percent:.0f}%" for o in p.ops[:3])
    return [f"per-op profile ({p.source}): {top}"]


def check_backends(paths: Sequence[Path]) -> None:
    """Fail early, naming the bundle, when no installed runtime can run one of them."""
    for p in paths:
        fmts = {m.format for m in read_bundle(p).manifest.models}
        if not any(backends_for(f) for f in fmts):
            extra = "onnxruntime" if "onnx" in fmts else "litert"
            raise BackendUnavailableError(f"{p.name}: no installed runtime runs its {sorted(fmts)} model; "
                                          f"install one (pip install 'edgepack[{extra}]') or leave it out.")


def build_report(
    bundles: Sequence[str | os.PathLike[str]],
    data: DataSource,
    *,
    reference: Any = None,
    source: Any = None,
    limit: int | None = None,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = 1,
    bench_images: int = 32,
    qdebug_samples: int = 100,
    progress: bool = True,
) -> Report:
    """Evaluate, benchmark and (given the float ``source``) debug every bundle; see the module docstring.

    Raises:
        PlotsUnavailableError (no matplotlib: checked first), ReportError, BackendUnavailableError, EvalDataError,
        LabelMismatchError, InputSpecError, BenchmarkError.
    """
    from edgepack.auto.report import auto_report_of

    plots.require()
    paths = [Path(os.fspath(b)) for b in bundles]
    if not paths:
        raise ReportError("no bundles given; pass one or more .epk files.")
    check_backends(paths)
    dataset = open_data(data, limit=limit)
    specs = {str(read_bundle(p).manifest.preprocessing) for p in paths}
    notes = []
    if len(specs) > 1:
        notes.append("the bundles have different input specs; each pre-processed the raw images with its own "
                     "(tensors of one model's shape cannot be compared across specs)")
    evals = evaluate_many(paths, dataset, reference=reference, options=RunOptions(num_threads=threads),
                          progress=progress)
    images = _bench_images(dataset, bench_images)
    if images is None:
        notes.append("end-to-end latency not measured: the data holds tensors, not images")
    entries = []
    with ProgressBar(len(paths), "benchmarking", enabled=progress) as bar:
        for path, ev in zip(paths, evals):
            bar.describe(f"benchmarking {ev.model} in its own process")
            bench = benchmark_isolated(path, images=images, image_color=dataset.color, warmup=warmup, runs=runs,
                                       threads=threads, profile=True)
            qdebug, why = None, "pass the float source model (--source) for per-layer debugging"
            if source is not None:
                bar.describe(f"per-layer debugging of {ev.model}")
                try:
                    qdebug = debug_quantization(path, dataset, source=source, limit=qdebug_samples)
                except QuantDebugError as exc:
                    why = str(exc)
            entries.append(ReportEntry(name=ev.model, path=str(path), precision=bench.model.precision,
                                       size_bytes=bench.model.bytes, evaluation=ev, bench=bench, qdebug=qdebug,
                                       qdebug_note=why, auto=auto_report_of(path)))
            bar.advance()
    ref_name = evals[0].reference
    return Report(data=dataset.name, samples=evals[0].samples, reference=ref_name, entries=tuple(entries),
                  notes=tuple(notes), environment=machine(),
                  created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def _bench_images(dataset: Any, n: int) -> np.ndarray | None:
    images = []
    for sample, _ in dataset:
        if not is_image(sample):
            return None
        images.append(sample)
        if len(images) >= n:
            break
    if not images or len({im.shape for im in images}) > 1:
        return np.asarray(images[:1]) if images else None
    return np.stack(images)


def find_browser() -> str | None:
    """A Chromium/Chrome executable on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: str | os.PathLike[str], png: str | os.PathLike[str], *, width: int = 1400,
               height: int = 3600, timeout: float = 120) -> Path:
    """Render an HTML file in headless Chromium and save a PNG (to look at the report as a person would).

    Raises:
        ReportError: no Chromium installed (``apt-get install chromium``) or it failed.
    """
    browser = find_browser()
    if browser is None:
        raise ReportError("no Chromium found for the screenshot; install it (apt-get install chromium).")
    out = Path(png).resolve()
    with tempfile.TemporaryDirectory(prefix="edgepack-chromium-") as profile:
        cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
               f"--window-size={width},{height}", Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ReportError(f"Chromium did not finish the screenshot in {timeout:.0f} s.") from exc
    if proc.returncode != 0 or not out.is_file():
        raise ReportError(f"Chromium failed to screenshot {page}: {proc.stderr.strip()[-300:]}")
    return out
