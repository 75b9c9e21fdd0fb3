"""Issue 11 build 5, soak: many inferences and load/close cycles per backend must not grow the resident set.

Each soak runs in its own process (a clean heap, nothing from other tests) and samples ``VmRSS`` from
``/proc/self/status`` every 5 % of the iterations; growth is measured from the sample after the first 10 % (warm-up:
allocator pools, lazy imports, interpreter caches) to every later sample. The bound (32 MiB) holds on any machine: a
leak of one model copy (≈ 0.2 MB) per load, or of one 640x480 frame per predict, would pass it within a few hundred
iterations. The full soak (10,000 inferences, 1,000 load/close cycles per backend) takes minutes on 2 cores, so it
is ``slow``; a tenth of it runs in every ``make test``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

BACKENDS = {"litert": "fp32", "onnxruntime": "onnx-fp32"}
GROWTH_BOUND = 32 << 20

_SOAK = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from edgepack.runtimes import load

    def rss():
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))

    def soak(step, n):
        every, warm = max(1, n // 20), max(1, n // 10)
        samples, start = [], time.perf_counter()
        for i in range(n):
            step(i)
            if (i + 1) % every == 0:
                samples.append(rss())
        after_warmup = samples[warm // every - 1:]
        return {"iterations": n, "start": after_warmup[0], "end": after_warmup[-1], "max": max(after_warmup),
                "seconds": round(time.perf_counter() - start, 2)}

    path, backend, runs, loads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    x = np.random.default_rng(0).random((1, 28, 28, 1), np.float32)
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with load(path, backend=backend) as session:  # hot-path tensors and full predict() on a camera frame, in turn
        result = {"run": soak(lambda i: session.run(x) if i % 2 else session.predict(frame), runs)}

    def cycle(i):
        with load(path, backend=backend) as s:
            s.run(x)

    result["load"] = soak(cycle, loads)
    print(json.dumps(result))
""")


def _soak(path: str, backend: str, *, runs: int, loads: int) -> dict[str, dict[str, float]]:
    proc = subprocess.run([sys.executable, "-c", _SOAK, path, backend, str(runs), str(loads)], capture_output=True,
                          text=True, timeout=1800, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(figures: dict[str, dict[str, float]], backend: str) -> None:
    for kind, f in figures.items():
        growth = max(f["end"], f["max"]) - f["start"]
        mib = {k: f"{f[k] / 2**20:.1f}" for k in ("start", "end", "max")}
        print(f"soak {backend} {kind}: {f['iterations']} iterations in {f['seconds']} s, RSS {mib['start']} → "
              f"{mib['end']} MiB (max {mib['max']}), growth {growth / 2**20:.2f} MiB")
        assert growth < GROWTH_BOUND, (backend, kind, f)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_soak_short_rss_stays_flat(bundle_factory, backend: str) -> None:
    """1,000 inferences and 100 load/close cycles."""
    _check(_soak(str(bundle_factory(BACKENDS[backend])), backend, runs=1000, loads=100), backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_soak_10000_inferences_and_1000_load_close_cycles_rss_stays_flat(bundle_factory, backend: str) -> None:
    _check(_soak(str(bundle_factory(BACKENDS[backend])), backend, runs=10_000, loads=1000), backend)
