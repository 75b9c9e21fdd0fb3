"""Run one zoo row as its users would, then hold the bundle against the model's own runtime.

A row is a zoo model (:mod:`edgepack.examples.zoo`) and one recipe. :func:`check_row` converts it with the real
``edgepack convert`` command line (or, for PyTorch models, ``ep.convert(module, example_input=...)``: the CLI never
unpickles checkpoints), loads the bundle with :func:`edgepack.runtimes.load` and runs the real evaluation inputs
(:mod:`edgepack.examples.zoo_data`) through it and through the RAW runtime: a plain ai_edge_litert
``Interpreter``, an onnxruntime ``InferenceSession``, the Keras model, a TF1 SavedModel session or the torch
module. It measures agreement (cosine, max abs error, top-1), size and latency ratios. A failure is recorded with
the one line the user saw; it is never hidden.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.examples.zoo import ZooModel, zoo_path
from edgepack.examples.zoo_data import RealData, real_data, write_calibration
from edgepack.runtimes.manifest import Preprocessing

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]
INT8 = ("full-int8", "qdq-int8", "int16x8", "qdq-int16x8")


@dataclass
class RowResult:
    """One row of the zoo table: the command, its outcome and, when it ran, the comparison with the raw runtime."""

    model: str
    kinds: list[str]
    recipe: str
    command: str
    ok: bool = False
    stage: str = "convert"  # where it stopped: convert | load | run | compare | done
    error: str | None = None
    samples: int = 0
    cosine: float | None = None  # the lowest over outputs
    max_abs: float | None = None  # the largest over outputs
    top1: float | None = None  # first output, when it is one score vector (1, classes)
    size_ratio: float | None = None  # bundle model bytes / source bytes
    latency_ratio: float | None = None  # bundle session.run median / raw runtime median
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def cli_args(model: ZooModel, recipe: str, *, calibration: Path | None) -> list[str]:
    """``edgepack convert`` arguments a user passes for this row (after the model path)."""
    args = ["--recipe", recipe, *model.args]
    if model.preprocessing is not None:
        args += preprocessing_flags(model.preprocessing)
    if recipe == "fp32":
        args += list(model.fp32_args)
    if calibration is not None:
        args += ["--calibration", str(calibration)]
    return args


def preprocessing_flags(spec: Preprocessing) -> list[str]:
    """The CLI flags that describe ``spec``."""
    nums = lambda xs: ",".join(f"{x:g}" for x in xs)  # noqa: E731
    return ["--input-size", f"{spec.size[0]}x{spec.size[1]}", "--color", spec.color.value, "--resize",
            spec.resize.value, "--layout", spec.layout.value, "--scale", f"{spec.scale:.10g}", "--mean",
            nums(spec.mean), "--std", nums(spec.std)]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def convert_cli(model: ZooModel, recipe: str, data: RealData, workdir: Path) -> tuple[str, Path | None, str | None]:
    """Run ``edgepack convert`` in a subprocess; (command as typed, bundle or None, the error line)."""
    wants = recipe in INT8 or model.golden_from_samples
    calibration = write_calibration(model, data, workdir / "calibration") if wants else None
    out = workdir / f"{model.id}_{recipe}.epk"
    args = ["convert", str(zoo_path(model.id)), *cli_args(model, recipe, calibration=calibration), "-o", str(out)]
    done = subprocess.run([sys.executable, "-m", "edgepack.cli", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=1800)
    command = "edgepack " + " ".join(args).replace(str(workdir) + "/", "")
    if done.returncode != 0:
        return command, None, f"exit {done.returncode}: {_last_line(done.stderr) or _last_line(done.stdout)}"
    return command, out, None


def convert_api(model: ZooModel, recipe: str, data: RealData, workdir: Path) -> tuple[str, Path | None, str | None]:
    """``ep.convert(module, calibration, example_input=..., recipe=...)`` for a PyTorch zoo model."""
    import edgepack as ep
    from edgepack.runtimes.errors import EdgepackError

    module, example = torch_module(model, data)
    arrays = data.arrays or {}
    calibration = None if recipe == "fp32" else next(iter(arrays.values())) if len(arrays) == 1 else arrays
    command = f"ep.convert(<{model.id} module>, {'None' if calibration is None else 'arrays'}, " \
              f"example_input=<{'x'.join(map(str, example[0].shape))}>, recipe={recipe!r})"
    out = workdir / f"{model.id}_{recipe}.epk"
    try:
        bundle = ep.convert(module, calibration, example_input=example if len(example) > 1 else example[0],
                            recipe=recipe, progress=False)
        bundle.save(out)
    except EdgepackError as exc:
        return command, None, f"{type(exc).__name__}: {_last_line(str(exc))}"
    except Exception as exc:
        return command, None, f"crash {type(exc).__name__}: {_last_line(str(exc))}"
    return command, out, None


def torch_module(model: ZooModel, data: RealData) -> tuple[Any, list[Any]]:
    """The PyTorch module and an example input, built as the package's users build them."""
    import torch

    path = zoo_path(model.id)
    if model.id == "silero_vad_jit":
        module = torch.jit.load(str(path)).eval()
        return module, [torch.from_numpy(data.evaluation[0][0][:, -512:]), 16000]
    module = pnet()
    module.load_state_dict(torch.load(str(path), weights_only=True))
    return module.eval(), [torch.from_numpy(data.evaluation[0][0])]


def pnet() -> Any:
    """facenet-pytorch's MTCNN ``PNet`` (MIT): the class as the package defines it, without its torchvision imports."""
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, kernel_size=3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, kernel_size=3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, kernel_size=3), nn.PReLU(32)
            self.conv4_1, self.softmax4_1 = nn.Conv2d(32, 2, kernel_size=1), nn.Softmax(dim=1)
            self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))

    return PNet()


def raw_runner(model: ZooModel, data: RealData) -> tuple[Runner, list[str] | None]:
    """The model in its own runtime, and its output names when it has them."""
    path = zoo_path(model.id)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
        ins, outs = interp.get_input_details(), interp.get_output_details()

        def run_tflite(xs: list[np.ndarray]) -> list[np.ndarray]:
            for d, x in zip(ins, xs):
                interp.set_tensor(d["index"], x)
            interp.invoke()
            return [interp.get_tensor(d["index"]) for d in outs]

        return run_tflite, [d["name"] for d in outs]
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return (lambda xs: sess.run(None, dict(zip(names, xs)))), [o.name for o in sess.get_outputs()]
    if path.suffix in (".h5", ".hdf5"):
        import keras

        net = keras.models.load_model(str(path), compile=False)
        return (lambda xs: [np.asarray(y) for y in _as_list(net(list(xs), training=False))]), None
    if path.is_dir():
        return _tf1_saved_model(path), None
    import torch

    module, _ = torch_module(model, data)

    @torch.no_grad()
    def run_torch(xs: list[np.ndarray]) -> list[np.ndarray]:
        if model.id == "silero_vad_jit":
            return [module(torch.from_numpy(xs[0][:, -512:]), 16000).numpy()]
        return [t.numpy() for t in module(torch.from_numpy(xs[0]))]

    return run_torch, None


def _as_list(y: Any) -> list[Any]:
    return list(y.values()) if isinstance(y, dict) else list(y) if isinstance(y, (list, tuple)) else [y]


def _tf1_saved_model(path: Path) -> Runner:
    """A TF 2.4 SavedModel that TF 2's loader refuses, run by the TF1 loader in its own graph (outputs by name)."""
    from edgepack.converters.tfenv import import_tensorflow

    tf = import_tensorflow()
    graph = tf.Graph()
    sess = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
    sig = meta.signature_def["serving_default"]
    feeds = [v.name for _, v in sorted(sig.inputs.items())]
    fetches = [v.name for _, v in sorted(sig.outputs.items())]
    return lambda xs: list(sess.run(fetches, dict(zip(feeds, xs))))


def _pair(got: list[np.ndarray], want: list[np.ndarray], got_names: list[str],
          want_names: list[str] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bundle outputs with their raw counterparts: by name, else by order, else by a unique shape."""
    if want_names and set(want_names) == set(got_names):
        return [(g, want[want_names.index(n)]) for g, n in zip(got, got_names)]
    if [g.shape for g in got] == [w.shape for w in want]:
        return list(zip(got, want))
    shapes = [w.shape for w in want]
    return [(g, want[shapes.index(g.shape)]) for g in got if shapes.count(g.shape) == 1]


def compare(result: RowResult, bundle: Path, model: ZooModel, data: RealData, *, runs: int = 20) -> None:
    """Fill in the agreement, size and latency of ``bundle`` against the raw runtime on ``data.evaluation``."""
    from edgepack.runtimes import load

    result.stage = "load"
    session = load(bundle)
    result.stage, (raw, raw_names) = "run", raw_runner(model, data)
    got_names = [s.name for s in session.outputs]
    pairs: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for sample in data.evaluation:
        got = session.run(list(sample), dequantize_outputs=False)  # like for like: raw int8 models give integers
        pairs.append(_pair(got, raw([np.asarray(x) for x in sample]), got_names, raw_names))
    result.stage, result.samples = "compare", len(pairs)
    if not pairs or not pairs[0]:
        raise ValueError("no bundle output matches a raw output by name or shape")
    cosines, max_abs = [], []
    for k in range(len(pairs[0])):
        g = np.concatenate([p[k][0].astype(np.float64).ravel() for p in pairs])
        w = np.concatenate([p[k][1].astype(np.float64).ravel() for p in pairs])
        cosines.append(float(g @ w / (np.linalg.norm(g) * np.linalg.norm(w) + 1e-30)))
        max_abs.append(float(np.max(np.abs(g - w))))
    result.cosine, result.max_abs = min(cosines), max(max_abs)
    first = [p[0] for p in pairs]
    if first[0][1].ndim == 2 and first[0][1].shape == (1, first[0][1].shape[-1]) and first[0][1].shape[-1] > 1:
        result.top1 = float(np.mean([np.array_equal(g.argmax(-1), w.argmax(-1)) for g, w in first]))
    source = zoo_path(model.id)
    size = sum(f.stat().st_size for f in source.rglob("*") if f.is_file()) if source.is_dir() else source.stat().st_size
    result.size_ratio = sum(m.bytes for m in session.manifest.models) / size
    sample = list(data.evaluation[0])
    t_bundle, t_raw = _interleaved_ms(lambda: session.run(sample), lambda: raw([np.asarray(x) for x in sample]), runs)
    result.latency_ratio = t_bundle / t_raw
    result.notes.append(f"latency median {t_bundle:.3f} ms (bundle, {session.backend}/{session.delegate}) vs "
                        f"{t_raw:.3f} ms (raw), interleaved, batch 1")
    session.close()


def _interleaved_ms(a: Callable[[], Any], b: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median milliseconds of ``a`` and of ``b``, called alternately (load on the machine hits both alike)."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((a, times[0]), (b, times[1])):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times[0])), float(np.median(times[1]))


def check_row(model: ZooModel, recipe: str, workdir: Path) -> RowResult:
    """Convert ``model`` with ``recipe`` as its users do, then compare the bundle with the raw runtime."""
    start = time.perf_counter()
    data = real_data(model)
    convert = convert_api if model.entry == "api" else convert_cli
    command, bundle, error = convert(model, recipe, data, workdir)
    result = RowResult(model=model.id, kinds=[k.value for k in model.kinds], recipe=recipe, command=command,
                       error=error, notes=[data.note] if data.note else [])
    if bundle is not None:
        try:
            compare(result, bundle, model, data)
            result.ok, result.stage = True, "done"
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {_last_line(str(exc))}"
    result.seconds = time.perf_counter() - start
    return result

