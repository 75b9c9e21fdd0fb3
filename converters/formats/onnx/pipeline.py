"""The ONNX format: quantize with ONNX Runtime's tools, run in real ONNX Runtime.

Sources are ``.onnx`` files, PyTorch modules (exported) and Keras / SavedModel models (tf2onnx); every one
becomes an fp32 ``onnx.ModelProto`` (:mod:`.source`) that :mod:`.quantize` turns into the recipe's model.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.artifact import ModelArtifact, build_artifact
from edgepack.converters.calibration import Calibration, collect
from edgepack.converters.errors import ConversionError
from edgepack.converters.formats.base import Description, ModelFormatPlugin, Source, get_format, register_format
from edgepack.converters.formats.onnx.inspect import summarize
from edgepack.converters.formats.onnx.prepare import SOURCE_OPSET_KEY
from edgepack.converters.formats.onnx.quantize import quantize
from edgepack.converters.formats.onnx.source import OnnxSource, load_onnx_source
from edgepack.runtimes.backends import get_backend
from edgepack.runtimes.backends.base import DELEGATE_ERRORS, Engine
from edgepack.runtimes.backends.onnxruntime import GraphOptimization, OnnxRuntimeBackend, OrtEngine, OrtOptions
from edgepack.runtimes.errors import ModelLoadError
from edgepack.runtimes.manifest import Preprocessing
from edgepack.runtimes.recipe import Precision, Recipe

#: Runs per latency figure in report.json (single thread, golden input, after 3 warm-up runs).
LATENCY_RUNS = 20


def open_ort(data: bytes, *, level: GraphOptimization = GraphOptimization.ALL, num_threads: int | None = None,
             what: str = "the converted model") -> OrtEngine:
    """Load model bytes in real ONNX Runtime (CPU); a model it cannot load is a :class:`ConversionError`."""
    backend = get_backend("onnxruntime")
    if not isinstance(backend, OnnxRuntimeBackend):
        raise ConversionError(f"the onnxruntime backend is a {type(backend).__name__}, not ONNX Runtime.")
    backend.configure(OrtOptions(graph_optimization=level))
    try:
        engine = backend.open(data, delegate="cpu", num_threads=num_threads)
    except (ModelLoadError, *DELEGATE_ERRORS) as exc:
        raise ConversionError(f"{what} does not load in onnxruntime ({exc}); this recipe produced a model the "
                              "runtime cannot prepare — try another recipe or exclude the failing nodes.") from exc
    if not isinstance(engine, OrtEngine):
        raise ConversionError(f"the onnxruntime backend returned a {type(engine).__name__}, not an OrtEngine.")
    return engine


def calibration_samples(source: OnnxSource, calibration: Calibration, *, preprocessing: Preprocessing | None,
                        limit: int, progress: bool = False) -> list[list[np.ndarray]]:
    """Calibration data (numpy, arrays by input name, :class:`ImageFolder`, iterable) as samples for ``source``."""
    return collect(calibration, shapes=[i.shape for i in source.inputs], dtypes=[i.dtype for i in source.inputs],
                   preprocessing=preprocessing, limit=limit, progress=progress, names=[i.name for i in source.inputs])


def median_latency_ms(data: bytes, inputs: list[np.ndarray], *, runs: int = LATENCY_RUNS) -> float:
    """Median single-thread latency of one run in ONNX Runtime (CPU), after 3 warm-up runs."""
    engine = open_ort(data, num_threads=1)
    try:
        for _ in range(3):
            engine.run(inputs)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            engine.run(inputs)
            times.append(time.perf_counter() - t0)
    finally:
        engine.close()
    return round(float(np.median(times)) * 1e3, 4)


@register_format
class OnnxFormat(ModelFormatPlugin):
    """``.onnx`` models for ONNX Runtime (CPU, CUDA/TensorRT, NNAPI, CoreML... execution providers)."""

    name = "onnx"
    extension = "onnx"
    description = "ONNX model for ONNX Runtime (QDQ int8, fp16; CPU / CUDA / TensorRT / NNAPI providers)"

    @classmethod
    def claims(cls, model: Any) -> bool:
        if isinstance(model, (str, Path)):
            return str(model).lower().endswith(".onnx")
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def load_source(self, model: Any, *, example_input: Any = None) -> OnnxSource:
        return load_onnx_source(model, example_input=example_input)

    def export(self, source: Source, recipe: Recipe, *, calibration: Sequence[Sequence[np.ndarray]]
               ) -> tuple[bytes, dict[str, Any]]:
        if not isinstance(source, OnnxSource):
            raise ConversionError(f"the onnx format quantizes ONNX sources, not {type(source).__name__}.")
        model, quant_info = quantize(source.model, recipe, calibration=calibration, inputs=source.inputs)
        return bytes(model.SerializeToString()), {"quantization": quant_info}

    def open(self, data: bytes, *, reference: bool = False, num_threads: int | None = None) -> Engine:
        # Fused and integer kernels (ORT_ENABLE_ALL) versus the plain reference kernels (ORT_DISABLE_ALL).
        return open_ort(data, level=GraphOptimization.DISABLE if reference else GraphOptimization.ALL,
                        num_threads=num_threads)

    def describe(self, data: bytes, engine: Engine) -> Description:
        import onnx

        model = onnx.load_from_string(data)
        summary = summarize(model)
        source_opset = next((p.value for p in model.metadata_props if p.key == SOURCE_OPSET_KEY), None)
        version = get_backend("onnxruntime").version()
        warning = (f"ops from {summary.custom_domains} need an onnxruntime that registers them"
                   if summary.custom_domains else None)
        return Description(
            precision=summary.precision,
            requires={"runtime": "onnxruntime", "opset": summary.opset, "domains": sorted(summary.opset),
                      "ir_version": summary.ir_version, "custom_domains": summary.custom_domains,
                      "validated_with": f"onnxruntime {version}",
                      **({"source_opset": int(source_opset)} if source_opset else {})},
            report={"providers": list(getattr(engine, "providers", ())),
                    "node_assignment": getattr(engine, "node_assignment", {}), "opset": summary.opset,
                    "ops": summary.ops, "initializer_types": summary.initializer_types},
            warning=warning,
        )

    def tolerance_hint(self, precision: Precision) -> str:
        if precision not in (Precision.FULL_INT8, Precision.DYNAMIC_INT8):
            return ""
        return ("For ONNX QDQ: Percentile calibration and the first layers kept in float often recover it "
                "(onnx_qdq_int8(method=CalibrationMethod.PERCENTILE, float_first_layers=3); CLI "
                "--calibration-method percentile --float-first-layers 3); `edgepack qdebug` names the layers "
                "that lose the most, for recipe exclude=.")

    def extra_report(self, source: Source, data: bytes, golden_inputs: list[np.ndarray]) -> dict[str, Any]:
        if not isinstance(source, OnnxSource):
            return {}
        fp32 = source.model_bytes()
        engine = open_ort(data)
        try:
            inputs = [np.asarray(x, dtype=s.dtype) for x, s in zip(golden_inputs, engine.inputs)]
        finally:
            engine.close()
        fp32_inputs = [np.asarray(x, dtype=i.dtype) for x, i in zip(golden_inputs, source.inputs)]
        latency, fp32_latency = median_latency_ms(data, inputs), median_latency_ms(fp32, fp32_inputs)
        version = get_backend("onnxruntime").version()
        return {
            "fp32_bytes": len(fp32),
            "size_ratio": round(len(data) / max(1, len(fp32)), 4),
            "latency_ms_median": latency,
            "fp32_latency_ms_median": fp32_latency,
            "latency_ratio_vs_fp32": round(latency / max(fp32_latency, 1e-9), 3),
            "latency_note": f"host CPU, onnxruntime {version}, 1 thread, {LATENCY_RUNS} runs, batch 1",
            "source_provenance": source.provenance,
        }


def build_onnx(source: OnnxSource, recipe: Recipe, **options: Any) -> ModelArtifact:
    """:func:`~edgepack.converters.artifact.build_artifact` in the onnx format (``calibration=``, ``held_back=``,
    ``golden_sample=``, ``thresholds=``): export, load in the real runtime, validate, make golden data."""
    return build_artifact(get_format("onnx"), source, recipe, **options)
