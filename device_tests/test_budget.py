"""Latency and memory against the target profile's budget: reported, failing only with --enforce-budget."""

from __future__ import annotations

import statistics
import time

import pytest

from edgepack.runtimes import Session
from edgepack.runtimes.target import Budgets

from .conftest import peak_rss_bytes, record


def test_latency_and_memory_budget(session: Session, pytestconfig: pytest.Config) -> None:
    x = session.bundle.golden_inputs()
    for _ in range(5):
        session.run(x)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        session.run(x)
        times.append(time.perf_counter() - start)
    p50 = statistics.median(times) * 1e3
    rss = peak_rss_bytes()
    target = session.manifest.target
    budgets = target.budgets if target is not None else Budgets()
    record("latency", f"p50 {p50:.3f} ms over 50 runs; peak RSS {rss / 2**20:.1f} MiB")
    if not pytestconfig.getoption("--budget-from-target"):
        return
    over = []
    if budgets.latency_ms is not None and p50 > budgets.latency_ms:
        over.append(f"p50 {p50:.2f} ms > {budgets.latency_ms} ms")
    if budgets.ram_bytes is not None and rss > budgets.ram_bytes:
        over.append(f"peak RSS {rss} B > {budgets.ram_bytes} B")
    if budgets.model_bytes is not None and session.model.bytes > budgets.model_bytes:
        over.append(f"model {session.model.bytes} B > {budgets.model_bytes} B")
    name = target.name if target is not None else "no target"
    record("budget", f"{name}: " + ("; ".join(over) if over else "within budget"))
    if over and pytestconfig.getoption("--enforce-budget"):
        pytest.fail(f"over the {name} budget: " + "; ".join(over))
