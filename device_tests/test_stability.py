"""Repeated inference is stable (same outputs, flat memory) and sessions in two threads agree."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from edgepack.runtimes import Bundle, Session, load

from .conftest import peak_rss_bytes, record

RSS_GROWTH_LIMIT = 16 << 20  # a leak of a few KB per run over 1,000 runs would exceed this


def test_repeated_inference_is_identical_and_memory_flat(session: Session, pytestconfig: pytest.Config) -> None:
    runs = pytestconfig.getoption("--stability-runs")
    x = session.bundle.golden_inputs()
    first = session.run(x)
    for _ in range(min(100, runs)):
        session.run(x)
    rss_before = peak_rss_bytes()
    for _ in range(runs):
        out = session.run(x)
    rss_after = peak_rss_bytes()
    for a, b in zip(first, out):
        np.testing.assert_array_equal(a, b)
    growth = rss_after - rss_before
    record("stability", f"{runs} runs identical, peak RSS {rss_after / 2**20:.1f} MiB (+{growth / 2**10:.0f} KiB)")
    assert growth < RSS_GROWTH_LIMIT


def test_two_sessions_in_two_threads_match_one(bundle: Bundle, delegates: tuple[str, ...],
                                               load_options: dict[str, Any]) -> None:
    x = bundle.golden_inputs()
    reference = load(bundle, delegates=delegates, **load_options).run(x)
    sessions = [load(bundle, delegates=delegates, **load_options) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda s: [s.run(x) for _ in range(25)], sessions))
    for per_thread in results:
        for outs in per_thread:
            for a, b in zip(outs, reference):
                np.testing.assert_array_equal(a, b)
