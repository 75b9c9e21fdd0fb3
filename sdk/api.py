"""Host-side public API: :func:`convert`."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.calibration import Calibration, collect, data_hash
from edgepack.converters.errors import ConversionError, ToleranceError
from edgepack.converters.package import ConvertedBundle, assemble
from edgepack.runtimes.recipe import ModelFormat, Recipe, get_recipe
from edgepack.converters.formats.tflite.source import load_source
from edgepack.runtimes.target import Target, get_target
from edgepack.converters.formats.tflite.pipeline import ModelArtifact, build_tflite
from edgepack.converters.validate import Thresholds, raise_if_failed
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.manifest import Postprocessing, PostprocessKind, Preprocessing

__all__ = ["ConvertedBundle", "convert", "parse_size"]

_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_size(size: int | str) -> int:
    """``"4MB"`` → 4_000_000; ints pass through."""
    if isinstance(size, int):
        return size
    text = size.strip().upper().replace(" ", "")
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * _UNITS[unit])
            except ValueError:
                break
    raise ConfigError(f"cannot read size {size!r}; write e.g. 4MB, 512KB or 2000000.")


def _labels(labels: Sequence[str] | str | Path | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise ConfigError(f"labels file {path} does not exist; pass a list or a one-label-a-line file.")
        return path.read_text(encoding="utf-8").splitlines()
    return [str(x) for x in labels]


def _runtime_compatibility(requires: dict[str, Any], target: Target) -> dict[str, str]:
    """Check the model's op versions against every frozen runtime the target names.

    A runtime that cannot run the model is reported (and warned about); when it is the only TFLite runtime
    the target has, conversion fails, since the bundle could never run there.
    """
    from edgepack.runtimes.opcheck import OP_TABLES, unsupported_requirements

    result = {}
    for runtime in target.runtimes:
        if runtime in OP_TABLES:
            problems = unsupported_requirements(requires, runtime)
            result[runtime] = "ok" if not problems else "cannot run: " + ", ".join(problems)
            if problems:
                tflite_runtimes = [r for r in target.runtimes if r in ("litert", "tflite-runtime", "tf-lite")]
                if tflite_runtimes == [runtime]:
                    raise ConversionError(
                        f"target {target.name} runs TFLite only with {runtime}, which lacks "
                        f"{', '.join(problems)}; use fp32 or full-int8 for this target."
                    )
                warnings.warn(f"{runtime} on {target.name} cannot run this model ({', '.join(problems)}); "
                              "it needs ai-edge-litert there.", stacklevel=3)
    return result


def _default_postprocessing(labels: list[str] | None, golden_outputs: Sequence[np.ndarray]) -> Postprocessing:
    """Classification when labels are given; softmax unless the model already outputs probabilities."""
    if not labels:
        return Postprocessing(kind=PostprocessKind.RAW)
    out = golden_outputs[0].reshape(golden_outputs[0].shape[0], -1) if golden_outputs else np.zeros((1, 0))
    is_probability = bool(out.size) and bool(np.all(out >= 0)) and bool(np.allclose(out.sum(axis=1), 1, atol=1e-2))
    return Postprocessing(kind=PostprocessKind.CLASSIFICATION, softmax=not is_probability)


def convert(
    model: Any,
    calibration: Calibration | None = None,
    *,
    target: str | Target = "x86",
    recipe: str | Recipe | Sequence[str | Recipe] = "fp32",
    format: str | None = None,
    example_input: Any = None,
    name: str | None = None,
    labels: Sequence[str] | str | Path | None = None,
    preprocessing: Preprocessing | None = None,
    postprocessing: Postprocessing | None = None,
    max_size: int | str | None = None,
    thresholds: Thresholds | None = None,
    progress: bool = True,
) -> ConvertedBundle:
    """Convert a trained model into a validated bundle for ``target``.

    Args:
        model: ``.keras``/``.h5`` path, SavedModel directory, ``keras.Model``, an existing ``.tflite``, an
            ``.onnx`` file or a ``torch.nn.Module`` (ONNX recipes).
        calibration: representative data (numpy array, :class:`ImageFolder`, iterable); part of it is
            held back to validate the converted model against the source.
        target: device class (``rpi4``, ``rpi5``, ``android-phone``, ``arm64-board``, ``jetson``, ``x86``).
        recipe: ``fp32``, ``fp16``, ``dynamic-int8``, ``full-int8``, ``int16x8``, ONNX ``qdq-int8``... or a
            :class:`Recipe`; a list makes one bundle holding every variant (e.g. ``.tflite`` + ``.onnx``).
        format: ``tflite`` or ``onnx``: maps a recipe name to that format (``full-int8`` → ``qdq-int8``).
        example_input: PyTorch sources only: an example input for ``torch.onnx.export``.
        labels: class names (list or labels file).
        preprocessing: how images become input tensors (saved in the bundle; used for calibration images).
        postprocessing: how outputs become results (default: classification top-5 when labels are given).
        max_size: fail when the model file is larger (``"4MB"``); the target's budget applies otherwise.
        thresholds: minimum cosine / top-1 agreement with the source (defaults by precision).
        progress: show progress bars.

    Raises:
        SourceModelError, CalibrationError, ConversionError, ToleranceError, ConfigError.
    """
    tgt = get_target(target)
    if format is None and _is_onnx_source(model):
        format = "onnx"
    recs = [get_recipe(r, format=format).resolved_for(tgt.arch)
            for r in (recipe if isinstance(recipe, (list, tuple)) else [recipe])]
    if not recs:
        raise ConfigError("recipe list is empty; name at least one recipe.")
    label_list = _labels(labels)
    sources: dict[ModelFormat, Any] = {}
    try:
        artifacts, figures = [], {}
        for rec in recs:
            if rec.format not in sources:
                sources[rec.format] = _load(model, rec.format, example_input=example_input)
            source = sources[rec.format]
            samples = _samples(source, rec, calibration, preprocessing=preprocessing, progress=progress)
            # Hold back ~10 % of the samples: never seen by the calibrator, used to judge the result.
            hold = 0 if len(samples) < 2 else max(1, min(len(samples) // 10, 64))
            calib, held = samples[: len(samples) - hold], samples[len(samples) - hold :]
            golden = held[0] if held else (samples[0] if samples else None)
            builder = build_tflite if rec.format is ModelFormat.TFLITE else _build_onnx
            artifact = builder(source, rec, calibration=calib, held_back=held[1:], golden_sample=golden,
                               thresholds=thresholds)
            if artifact.validation is not None:
                raise_if_failed(artifact.validation, precision=rec.precision.value,
                                onnx=rec.format is ModelFormat.ONNX)
            _check_size(artifact, tgt, max_size)
            if artifact.requires.get("runtime") == "tflite":
                artifact.report["runtime_compatibility"] = _runtime_compatibility(artifact.requires, tgt)
            artifact.report["recipe"] = rec.to_json()
            artifacts.append(artifact)
            figures = {"calibration_samples": len(calib), "held_back_samples": len(held),
                       "calibration_sha256": data_hash(samples) if samples else None}
        first = sources[recs[0].format]
        post = postprocessing or _default_postprocessing(label_list, artifacts[0].golden_outputs)
        report = {"models": [a.report for a in artifacts], "source": {"kind": first.kind, "file": first.file_name},
                  "calibration_samples": figures["calibration_samples"],
                  "held_back_samples": figures["held_back_samples"]}
        provenance = {"calibration_sha256": figures["calibration_sha256"],
                      "calibration_samples": figures["calibration_samples"]}
        for src in sources.values():
            provenance.update(getattr(src, "provenance", {}) or {})
        return assemble(
            name=name or first.name, source=first, target=tgt, recipe=recs[0] if len(recs) == 1 else recs,
            artifacts=artifacts, preprocessing=preprocessing, postprocessing=post, labels=label_list,
            provenance=provenance, report=report,
        )
    finally:
        for src in sources.values():
            src.close()


def _is_onnx_source(model: Any) -> bool:
    """An ``.onnx`` file or a PyTorch module: only ONNX recipes apply."""
    if isinstance(model, (str, Path)):
        return str(model).lower().endswith(".onnx")
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _load(model: Any, fmt: ModelFormat, *, example_input: Any) -> Any:
    """The source loader of an output format: TFLite via SavedModel, ONNX via tf2onnx / torch export."""
    if fmt is ModelFormat.ONNX:
        from edgepack.converters.formats.onnx.source import load_onnx_source

        return load_onnx_source(model, example_input=example_input)
    if example_input is not None:
        raise ConfigError("example_input is only used for PyTorch models (format onnx).")
    return load_source(model)


def _build_onnx(source: Any, rec: Recipe, **kwargs: Any) -> ModelArtifact:
    from edgepack.converters.formats.onnx.pipeline import build_onnx

    return build_onnx(source, rec, **kwargs)


def _samples(source: Any, rec: Recipe, calibration: Calibration | None, *, preprocessing: Preprocessing | None,
             progress: bool) -> list[list[np.ndarray]]:
    """Calibration samples shaped for ``source``'s inputs (source-signature order)."""
    if calibration is None:
        if rec.needs_calibration and source.kind != "tflite":
            raise ConversionError(f"recipe {rec.name or rec.precision.value} needs calibration data; "
                                  "pass calibration=...")
        return []
    if rec.format is ModelFormat.ONNX:
        from edgepack.converters.formats.onnx.pipeline import calibration_samples

        return calibration_samples(source, calibration, preprocessing=preprocessing, limit=rec.calibration_samples)
    shapes = [i.shape for i in source.inputs] or [(-1,)]
    dtypes = [i.dtype for i in source.inputs] or ["float32"]
    if source.kind == "tflite":
        from edgepack.converters.formats.tflite.pipeline import open_litert

        eng = open_litert(source.tflite_bytes or b"")
        shapes = [s.shape for s in eng.inputs]
        dtypes = ["float32" if s.quantization else s.dtype for s in eng.inputs]
    return collect(calibration, shapes=shapes, dtypes=dtypes, preprocessing=preprocessing,
                   limit=rec.calibration_samples, progress=progress)


def _check_size(artifact: ModelArtifact, target: Target, max_size: int | str | None) -> None:
    limit = parse_size(max_size) if max_size is not None else target.budgets.model_bytes
    if limit is not None and len(artifact.data) > limit:
        where = "max_size" if max_size is not None else f"{target.name} budget"
        raise ToleranceError(f"the {artifact.precision} model is {len(artifact.data)} bytes, over the limit of "
                             f"{limit} ({where}); use a smaller precision or prune.")
