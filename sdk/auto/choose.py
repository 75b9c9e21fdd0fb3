"""``convert(..., recipe="auto")``: convert every candidate the target allows, measure accuracy on the evaluation
data and latency / peak RSS on the target's runtime, and return the bundle of the fastest that meets every budget,
its report listing every candidate."""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

from edgepack.converters.package import ConvertedBundle
from edgepack.runtimes.errors import ConfigError, EdgepackError
from edgepack.runtimes.recipe import PruneOptions
from edgepack.runtimes.target import Target, get_target

from .budgets import AutoBudgets, make_budgets
from .candidates import Candidate, build_all, enumerate_candidates, key_of
from .estimates import estimate
from .measure import Device, check_device, is_host_target, measure_host, measure_ssh
from .select import choose

SCHEMA = "edgepack.auto/1"


def auto_convert(
    model: Any,
    calibration: Any = None,
    *,
    target: str | Path | Target = "x86",
    eval_data: Any = None,
    max_size: int | str | None = None,
    max_accuracy_drop: float | str | None = None,
    max_latency: float | str | None = None,
    max_ram: int | str | None = None,
    device: str | Device | None = None,
    threads: int | None = 1,
    prune: PruneOptions | str | None = None,
    progress: bool = True,
    **convert_kwargs: Any,
) -> ConvertedBundle:
    """Pick the recipe by measuring (see :func:`edgepack.convert` with ``recipe="auto"`` and docs/auto.md).

    Raises:
        ConfigError: budgets that cannot be read, an accuracy budget without evaluation data, a latency / RAM budget
            for a target that can be neither measured here nor reached (``device``).
        BudgetError: no candidate meets every budget (the closest ones and what each missed).
        DeviceError: ``device`` unreachable (within ~25 s) or without edgepack.
    """
    tgt = get_target(target)
    dev = Device.parse(device) if device is not None else None
    mode = "device" if dev is not None else ("host" if is_host_target(tgt) else "estimate")
    if mode == "estimate" and (max_latency is not None or max_ram is not None):
        raise ConfigError(f"target {tgt.name} is {tgt.arch} and this machine is {platform.machine()}: latency and RAM "
                          "are measured on the target's own CPU, never from emulation; pass --device user@host to "
                          "measure there, or drop --max-latency / --max-ram (the choice is then an estimate).")
    budgets = make_budgets(tgt, max_size=max_size, max_accuracy_drop=max_accuracy_drop, max_latency=max_latency,
                           max_ram=max_ram, use_target_runtime_budgets=mode != "estimate")
    if budgets.max_accuracy_drop is not None and eval_data is None:
        raise ConfigError("an accuracy budget (--max-accuracy-drop) needs evaluation data: pass --eval-data (labeled: "
                          "accuracy; unlabeled: top-1 agreement with the source model).")
    threads = tgt.cores if threads is None else threads
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}.")
    notes: list[str] = []
    if dev is not None:  # fail in seconds, not after minutes of conversion
        arch = check_device(dev)
        notes.append(f"device {dev.address} is {arch}; target {tgt.name} says {tgt.arch}")
    prune = PruneOptions.parse(prune) if isinstance(prune, str) else prune
    cands = enumerate_candidates(model, tgt, has_calibration=calibration is not None, prune=prune)
    if not cands:
        raise ConfigError(f"target {tgt.name} allows no recipe for this model (runtimes {', '.join(tgt.runtimes)}, "
                          f"precisions {', '.join(p.value for p in tgt.precisions)}).")
    build_all(cands, model, calibration, tgt, convert_kwargs, progress=progress)
    with tempfile.TemporaryDirectory(prefix="edgepack-auto-") as tmp:
        _save(cands, Path(tmp))
        if eval_data is not None:
            notes += accuracy(cands, model, eval_data, progress=progress)
            if budgets.max_accuracy_drop is not None:
                notes += _mixed_precision(cands, model, calibration, eval_data, budgets, tgt, Path(tmp), progress,
                                          convert_kwargs)
        if mode == "estimate":
            notes += estimate(cands, tgt.name)
            where = f"estimate from sdk/auto/measured/{tgt.name}.json (this machine: {platform.machine()})"
        else:
            where = _measure(cands, tgt, dev, threads=threads)
    win = choose(cands, budgets, estimate=mode == "estimate")
    assert win.bundle is not None  # choose() only picks converted candidates
    return _with_report(win.bundle, cands, win, tgt, budgets, where=where, mode=mode, threads=threads, notes=notes)


def _save(cands: list[Candidate], folder: Path) -> None:
    for k, c in enumerate(cands):
        if c.status == "converted" and c.bundle is not None and c.path is None:
            c.path = str(c.bundle.save(folder / f"{k:02d}_{c.key}.epk"))


def accuracy(cands: list[Candidate], model: Any, eval_data: Any, *, progress: bool) -> list[str]:
    """Top-1 accuracy and its drop from the source (points) for every converted candidate; with unlabeled data the
    drop is the top-1 *disagreement* with the source (points)."""
    from edgepack.measure.evaluate import evaluate_many

    done = [c for c in cands if c.status == "converted" and c.path]
    if not done:
        return []
    results = evaluate_many([*(c.path for c in done), model], eval_data, reference=model, progress=progress)
    src = results[-1]
    labeled = src.accuracy is not None
    for c, res in zip(done, results):
        agree = res.agreement[0].top1_agreement if res.agreement else None
        c.figures["top1_agreement"] = agree
        if labeled and res.accuracy is not None and src.accuracy is not None:
            c.figures["accuracy"] = res.accuracy.top1
            c.figures["accuracy_drop"] = round(100 * (src.accuracy.top1 - res.accuracy.top1), 4)
        elif agree is not None:
            c.figures["accuracy_drop"] = round(100 * (1 - agree), 4)
    if labeled and src.accuracy is not None:
        return [f"accuracy on {src.data} ({src.samples} samples): source top-1 {src.accuracy.top1:.4f}; drop in points"]
    return [f"{src.data} has no labels: accuracy drop = top-1 disagreement with the source model, in points"]


def _mixed_precision(cands: list[Candidate], model: Any, calibration: Any, eval_data: Any, budgets: AutoBudgets,
                     target: Target, folder: Path, progress: bool, convert_kwargs: dict[str, Any]) -> list[str]:
    """When no int8 candidate meets the accuracy budget, one more: int8 with the most sensitive layers in float."""
    int8 = [c for c in cands if c.status == "converted" and c.recipe.precision.value == "full_int8"
            and c.figures.get("accuracy_drop") is not None]
    limit = budgets.max_accuracy_drop
    if not int8 or limit is None or any(c.figures["accuracy_drop"] <= limit for c in int8):
        return []
    base = min(int8, key=lambda c: c.figures["accuracy_drop"])
    from .mixed_precision import mixed_precision

    cand = Candidate(f"{key_of(base.recipe)}-mixed", base.recipe)
    try:
        bundle, info = mixed_precision(model, calibration, base=base.recipe, eval_data=eval_data,
                                       max_accuracy_drop=limit, target=target, progress=progress,
                                       labels=convert_kwargs.get("labels"),
                                       preprocessing=convert_kwargs.get("preprocessing"))
    except EdgepackError as exc:
        cand.status, cand.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        cands.append(cand)
        return []
    cand.bundle, cand.status, cand.figures["bytes"] = bundle, "converted", bundle.size_bytes
    cand.figures["mixed_precision"] = info
    cands.append(cand)
    _save(cands, folder)
    accuracy([cand], model, eval_data, progress=progress)
    return [f"mixed precision from {base.key}: every int8 candidate missed the {limit:g}-point budget"]


def _measure(cands: list[Candidate], target: Target, device: Device | None, *, threads: int) -> str:
    """Latency and RSS of every converted candidate, here or on the device; returns where."""
    paths = {c.key: c.path for c in cands if c.status == "converted" and c.path is not None}
    if not paths:
        return "nothing to measure"
    if device is not None:
        got = measure_ssh(paths, device, threads=threads)
        where = f"device {device.address}, {threads} thread(s), `edgepack bench` per candidate"
    else:
        got = _host(paths, threads)
        where = f"this machine ({platform.machine()}, {platform.processor() or 'cpu'}), {threads} thread(s), " \
                "interleaved; peak RSS in a fresh process each"
    for c in cands:
        if c.key in got:
            fig = got[c.key]
            if "error" in fig:
                c.status, c.reason = "failed", f"cannot run on the target's runtime: {fig['error']}"
            else:
                c.figures.update(fig)
    return where


def _host(paths: dict[str, str], threads: int) -> dict[str, dict[str, Any]]:
    """Measure here; a candidate the target's runtime cannot load is reported, the others measured together."""
    from edgepack.runtimes import load

    ok, out = {}, {}
    for key, path in paths.items():
        try:
            load(path, num_threads=threads).close()
            ok[key] = path
        except EdgepackError as exc:
            out[key] = {"error": str(exc).splitlines()[0][:300]}
    if ok:
        out.update(measure_host(ok, threads=threads))
    return out


def _with_report(bundle: ConvertedBundle, cands: list[Candidate], win: Candidate, target: Target,
                 budgets: AutoBudgets, *, where: str, mode: str, threads: int, notes: list[str]) -> ConvertedBundle:
    """The winner's bundle with ``report["auto"]`` (also written into its ``report.json``)."""
    auto = {"schema": SCHEMA, "target": target.name, "chosen": win.key, "recipe": win.recipe.to_json(),
            "estimate": mode == "estimate", "measured": mode, "where": where, "threads": threads,
            "budgets": budgets.to_json(), "candidates": [c.row() for c in cands], "notes": notes}
    bundle.add_report("auto", auto)
    return bundle
