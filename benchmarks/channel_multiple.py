"""Which channel multiple do LiteRT's XNNPACK kernels like on this CPU? (sets ``Target.channel_multiple``)

A small conv block (3x3 conv C→C, depthwise 3x3, 1x1 conv C→C on 28x28) for every channel count C in a sweep,
converted to fp32 and full int8, timed in ai-edge-litert (XNNPACK, 1 thread, all models interleaved). For each
multiple m the *round-up cost* is the mean over counts C that are not multiples of m of t(round_up(C, m)) / t(C):
about 1.0 means the kernels pad to m anyway (counts between multiples buy nothing), so structured pruning should
round to m. The chosen multiple is the largest m whose round-up cost stays within ``--tolerance``.

    .venv/bin/python benchmarks/channel_multiple.py [--low 16 --high 48 --extra 56,63,64,65] [--blocks 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment

from edgepack.converters.formats.tflite.export import export_tflite
from edgepack.converters.formats.tflite.source import load_source
from edgepack.converters.tfenv import import_tensorflow
from edgepack.runtimes import interleaved
from edgepack.runtimes.recipe import Recipe, fp32, full_int8

OUT = Path(__file__).resolve().parents[1] / ".cache" / "benchmarks" / "channel_multiple.json"
MULTIPLES = (1, 2, 4, 8, 16, 32)


def block(channels: int, *, size: int = 28) -> object:
    """3x3 conv C→C, depthwise 3x3, 1x1 conv C→C (ReLU6 between): MobileNet-style work scaling with C."""
    import keras

    keras.utils.set_random_seed(channels)
    L = keras.layers
    inp = keras.Input((size, size, channels), name="x")
    x = L.Conv2D(channels, 3, padding="same", activation="relu6")(inp)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = L.Conv2D(channels, 1, activation="relu6")(x)
    return keras.Model(inp, x, name=f"block_{channels}")


def convert(model: object, recipe: Recipe, calibration: np.ndarray) -> bytes:
    """Keras model → .tflite bytes through the same export path as ``edgepack convert``."""
    return export_tflite(load_source(model), recipe, calibration=[[c[None]] for c in calibration])


def runner(data: bytes, x: np.ndarray) -> object:
    """A zero-argument callable running one inference in ai-edge-litert (XNNPACK, 1 thread)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    interp.set_tensor(index, x)

    def run() -> None:
        interp.invoke()

    return run


def round_up_cost(p50: dict[int, float], m: int) -> float | None:
    """Mean of t(round_up(C, m)) / t(C) over measured C that are not multiples of m (None: no pair measured)."""
    ratios = [p50[-(-c // m) * m] / t for c, t in p50.items() if c % m and -(-c // m) * m in p50]
    return statistics.fmean(ratios) if ratios else None


def steps(p50: dict[int, float], *, jump: float = 0.15) -> dict[int, float]:
    """Counts C after which one more channel costs over ``jump`` more: {C: t(C + 1) / t(C)} (tile boundaries)."""
    return {c: p50[c + 1] / p50[c] for c in p50 if c + 1 in p50 and p50[c + 1] / p50[c] > 1.0 + jump}


def choose(p50: dict[int, float], tolerance: float) -> int:
    """The largest multiple whose round-up cost is within ``tolerance`` (1 when none is)."""
    ok = [m for m in MULTIPLES if (cost := round_up_cost(p50, m)) is not None and cost <= 1.0 + tolerance]
    return max(ok, default=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--low", type=int, default=16)
    parser.add_argument("--high", type=int, default=48)
    parser.add_argument("--extra", default="56,60,62,63,64,65,66,72,80")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.03)
    args = parser.parse_args()
    import_tensorflow()

    counts = sorted({*range(args.low, args.high + 1), *(int(c) for c in args.extra.split(",") if c)})
    rng = np.random.default_rng(0)
    result: dict[str, object] = {"model": "3x3 conv C->C + depthwise 3x3 + 1x1 conv C->C, 28x28, ReLU6",
                                 "runtime": "ai-edge-litert, XNNPACK, 1 thread, interleaved", "counts": counts}
    for name, recipe in (("full_int8", full_int8(samples=8)), ("fp32", fp32())):
        t0 = time.perf_counter()
        fns, macs = {}, {}
        for c in counts:
            x = rng.uniform(0, 1, (8, 28, 28, c)).astype(np.float32)
            fns[c] = runner(convert(block(c), recipe, x), x[:1])
            macs[c] = 28 * 28 * (9 * c * c + 9 * c + c * c)
        print(f"{name}: converted {len(counts)} models in {time.perf_counter() - t0:.0f} s; timing...", flush=True)
        stats = interleaved(fns, blocks=args.blocks, per_block=args.per_block)
        p50 = {c: s.p50_ms for c, s in stats.items()}
        costs = {m: round_up_cost(p50, m) for m in MULTIPLES}
        chosen = choose(p50, args.tolerance)
        print(f"  {'C':>3} {'p50 ms':>8} {'ns/MAC':>7}")
        for c in counts:
            print(f"  {c:>3} {p50[c]:8.4f} {p50[c] * 1e6 / macs[c]:7.4f}")
        print("  round-up cost t(round_up(C, m)) / t(C), mean: "
              + ", ".join(f"m={m}: {v:.3f}" for m, v in costs.items() if v is not None))
        print("  steps (one channel more costs > 15 %): "
              + ", ".join(f"{c}→{c + 1} ×{r:.2f}" for c, r in steps(p50).items()))
        print(f"  → largest multiple within {args.tolerance:.0%}: {chosen}")
        result[name] = {"p50_ms": p50, "p90_ms": {c: s.p90_ms for c, s in stats.items()}, "macs": macs,
                        "round_up_cost": costs, "steps": steps(p50), "chosen_multiple": chosen}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"environment": environment(), **result}, indent=2, default=float))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
