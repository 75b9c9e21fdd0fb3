"""``convert``: a trained model → a validated bundle for a target. The policy lives here, written once for every
format (hold-out split, validation gate, size budget, runtime compatibility, report and provenance); what differs
by format sits behind :class:`~.formats.base.ModelFormatPlugin`."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtimes.backends import registered_backends
from edgepack.runtimes.errors import ConfigError
from edgepack.runtimes.manifest import Postprocessing, PostprocessKind, Preprocessing
from edgepack.runtimes.opcheck import OP_TABLES, unsupported_requirements
from edgepack.runtimes.recipe import Recipe, get_recipe
from edgepack.runtimes.target import Target, get_target

from .artifact import ModelArtifact, build_artifact, random_sample
from .calibration import Calibration, collect, data_hash, resolve_shapes
from .errors import ConversionError, ToleranceError
from .formats.base import ModelFormatPlugin, Source, format_claiming, get_format
from .package import ConvertedBundle, assemble
from .preprocessing_check import check_preprocessing
from .preprocessing_guess import PreprocessingHint, resolve_preprocessing
from .validate import Thresholds, raise_if_failed

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


def convert(
    model: Any,
    calibration: Calibration | None = None,
    *,
    target: str | Path | Target = "x86",
    recipe: str | Recipe | Sequence[str | Recipe] = "fp32",
    format: str | None = None,
    example_input: Any = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    name: str | None = None,
    labels: Sequence[str] | str | Path | None = None,
    preprocessing: Preprocessing | PreprocessingHint | None = None,
    postprocessing: Postprocessing | None = None,
    max_size: int | str | None = None,
    thresholds: Thresholds | None = None,
    progress: bool = True,
) -> ConvertedBundle:
    """Convert a trained model into a validated bundle for ``target``.

    Args:
        model: ``.keras``/``.h5`` path, SavedModel directory, ``keras.Model``, an existing ``.tflite``, an
            ``.onnx`` file or a ``torch.nn.Module`` (ONNX recipes).
        calibration: representative data (numpy array, ``{input name: array}`` with the sample index first,
            :class:`ImageFolder`, iterable); part of it is held back to validate the converted model against the
            source, and one held-back sample becomes the bundle's golden input.
        target: device class (``rpi4``, ``rpi5``, ``android-phone``, ``arm64-board``, ``jetson``, ``x86``, any
            registered one) or a target JSON file.
        recipe: ``fp32``, ``fp16``, ``dynamic-int8``, ``full-int8``, ``int16x8``, ONNX ``qdq-int8``... or a
            :class:`Recipe`; a list makes one bundle holding every variant (e.g. ``.tflite`` + ``.onnx``).
        format: ``tflite``, ``onnx`` (or a registered format): maps a recipe name to that format
            (``full-int8`` → ``qdq-int8``); default: the source's own format (``.onnx``, torch) else ``tflite``.
        example_input: PyTorch sources only: an example input for ``torch.onnx.export``.
        input_shapes: ``{input name: shape}`` for inputs with dynamic dimensions: the shape of the random golden
            input made when no calibration data is given (samples must fit it too). The model stays dynamic.
        labels: class names (list or labels file).
        preprocessing: how images become input tensors (saved in the bundle; used for calibration images). Without
            it (or with a :class:`PreprocessingHint`), an :class:`ImageFolder` takes size, colour and layout from
            the model's fixed image input (``report["preprocessing_assumed"]`` says what was assumed).
        postprocessing: how outputs become results (default: classification top-5 when labels are given).
        max_size: fail when the model file is larger (``"4MB"``); the target's budget applies otherwise.
        thresholds: minimum cosine / top-1 agreement with the source (defaults by precision).
        progress: show progress bars.

    Raises:
        SourceModelError, CalibrationError, ConversionError, ToleranceError, ConfigError.
    """
    tgt = get_target(target)
    fmt_name = format if format is not None else format_claiming(model)
    recs = [get_recipe(r, format=fmt_name).resolved_for(tgt.arch)
            for r in (recipe if isinstance(recipe, (list, tuple)) else [recipe])]
    if not recs:
        raise ConfigError("recipe list is empty; name at least one recipe.")
    for rec in recs:
        if not tgt.allows(rec.precision):
            raise ConfigError(f"target {tgt.name} does not run {rec.precision.value} models (it runs "
                              f"{', '.join(p.value for p in tgt.precisions)}); pick one of those, or describe your "
                              "board in a target JSON file (`edgepack targets --json` shows the form).")
    label_list = _labels(labels)
    sources: dict[Any, Source] = {}
    pruned: dict[Any, Any] = {}
    try:
        artifacts: list[ModelArtifact] = []
        assumed: str | None = None
        figures: dict[str, Any] = {}
        for rec in recs:
            fmt = get_format(rec.format)
            if rec.format not in sources:
                sources[rec.format] = fmt.load_source(model, example_input=example_input)
            source = sources[rec.format]
            if not isinstance(preprocessing, Preprocessing):  # take what the user left out from the model
                preprocessing, assumed = resolve_preprocessing(*fmt.input_specs(source), preprocessing, calibration)
            if isinstance(preprocessing, Preprocessing):  # before anything is converted or written
                check_preprocessing(preprocessing, fmt.input_specs(source)[0])
            samples, golden = _samples(fmt, source, rec, calibration, input_shapes=input_shapes,
                                       preprocessing=preprocessing, progress=progress)
            pruning: dict[str, Any] | None = None
            if rec.prune is not None:  # prune (and distil on the calibration samples) before quantizing
                source, pruning = _pruned_source(fmt, model, rec, samples, pruned, sources, tgt,
                                                 example_input=example_input, progress=progress)
            # Hold back ~10 % of the samples: never seen by the calibrator, used to judge the result.
            hold = 0 if len(samples) < 2 else max(1, min(len(samples) // 10, 64))
            calib, held = samples[: len(samples) - hold], samples[len(samples) - hold :]
            golden = held[0] if held else (samples[0] if samples else golden)
            artifact = build_artifact(fmt, source, rec, calibration=calib, held_back=held[1:], golden_sample=golden,
                                      thresholds=thresholds)
            if artifact.validation is not None:
                raise_if_failed(artifact.validation, precision=rec.precision.value,
                                hint=fmt.tolerance_hint(rec.precision))
            _check_size(artifact, tgt, max_size)
            compatibility = _runtime_compatibility(artifact, tgt)
            if compatibility:
                artifact.report["runtime_compatibility"] = compatibility
            artifact.report["recipe"] = rec.to_json()
            if pruning is not None:
                artifact.report["pruning"] = pruning
            artifacts.append(artifact)
            figures = {"calibration_samples": len(calib), "held_back_samples": len(held),
                       "calibration_sha256": data_hash(samples) if samples else None}
        first = sources[recs[0].format]
        post = postprocessing or _default_postprocessing(label_list, artifacts[0].golden_outputs)
        report = {"models": [a.report for a in artifacts], "source": {"kind": first.kind, "file": first.file_name},
                  "calibration_samples": figures["calibration_samples"],
                  "held_back_samples": figures["held_back_samples"]}
        if assumed:
            report["preprocessing_assumed"] = assumed
        if input_shapes:
            report["input_shapes"] = {str(k): [int(d) for d in v] for k, v in input_shapes.items()}
        provenance = {"calibration_sha256": figures["calibration_sha256"],
                      "calibration_samples": figures["calibration_samples"]}
        for src in sources.values():
            provenance.update(getattr(src, "provenance", {}) or {})
        return assemble(
            name=name or first.name, source=first, target=tgt, recipe=recs, artifacts=artifacts,
            preprocessing=preprocessing, postprocessing=post, labels=label_list, provenance=provenance,
            report=report,
        )
    finally:
        for src in sources.values():
            src.close()


def _pruned_source(fmt: ModelFormatPlugin, model: Any, rec: Recipe, samples: list[list[np.ndarray]],
                   pruned: dict[Any, Any], sources: dict[Any, Source], target: Target, *, example_input: Any,
                   progress: bool) -> tuple[Source, dict[str, Any]]:
    """The source pruned as ``rec.prune`` says (distilled from the unpruned model on the calibration samples),
    pruned once per option set and loaded once per format."""
    from .errors import PruningError
    from .pruning.apply import prune_model

    options = rec.prune
    if options not in pruned:
        if samples and len(samples[0]) != 1:
            raise PruningError(f"pruning takes one-input models; this one has {len(samples[0])} inputs.")
        x = np.concatenate([s[0] for s in samples]) if samples else None
        pruned[options] = prune_model(model, x, options=options, round_to=target.channel_multiple,
                                      example_input=example_input, progress=progress)
    result = pruned[options]
    key = (rec.format, options)
    if key not in sources:
        sources[key] = fmt.load_source(result.model, example_input=example_input)
    return sources[key], result.report


def _labels(labels: Sequence[str] | str | Path | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise ConfigError(f"labels file {path} does not exist; pass a list or a one-label-a-line file.")
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ConfigError(f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it "
                              "as UTF-8, one label a line.") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read labels file {path} ({exc.strerror or exc}).") from exc
    return [str(x) for x in labels]


def _samples(fmt: ModelFormatPlugin, source: Source, rec: Recipe, calibration: Calibration | None, *,
             input_shapes: Mapping[str, Sequence[int]] | None, preprocessing: Preprocessing | None,
             progress: bool) -> tuple[list[list[np.ndarray]], list[np.ndarray] | None]:
    """Calibration samples shaped for ``source``'s inputs (source-input order), and without them a random golden
    input at the model's fixed dimensions and ``input_shapes`` (None when the format has no input specs)."""
    shapes, dtypes = fmt.input_specs(source)
    names = fmt.input_names(source)
    if len(names) != len(shapes):
        names = [f"input_{k}" for k in range(len(shapes))]
    shapes = resolve_shapes(names, shapes, input_shapes)
    if calibration is None:
        if rec.needs_calibration and fmt.can_validate(source):
            raise ConversionError(f"recipe {rec.label} needs calibration data; pass calibration=... (CLI: "
                                  "--calibration: an image folder, a .npy array or a .npz of one array per input).")
        return [], (random_sample(names, shapes, dtypes) if shapes else None)
    samples = collect(calibration, shapes=shapes or [(-1,)], dtypes=dtypes or ["float32"],
                      preprocessing=preprocessing, limit=rec.calibration_samples, progress=progress, names=names)
    return samples, None


def _runtime_compatibility(artifact: ModelArtifact, target: Target) -> dict[str, str]:
    """Check the model's op versions against every frozen runtime of the target that runs its format.

    A runtime that cannot run the model is reported (and warned about); when it is the only runtime of the target
    for this format, conversion fails, since the bundle could never run there.
    """
    if artifact.requires_delegates and not set(artifact.requires_delegates) & set(target.delegates):
        ops, needs = ", ".join(dict.fromkeys(artifact.requires.get("custom_ops") or [])), artifact.requires_delegates
        raise ConversionError(f"the model's custom op(s) {ops} run only on {', '.join(needs)}, which target "
                              f"{target.name} does not use ({', '.join(target.delegates)}); pick a target whose "
                              "delegates include it, or a target JSON file that lists it.")
    backends = registered_backends()
    runs_it = [r for r in target.runtimes if r in backends and artifact.format in backends[r].formats]
    result = {}
    for runtime in runs_it:
        if runtime not in OP_TABLES:
            continue
        problems = unsupported_requirements(artifact.requires, runtime)
        result[runtime] = "ok" if not problems else "cannot run: " + ", ".join(problems)
        if not problems:
            continue
        if runs_it == [runtime]:
            raise ConversionError(f"target {target.name} runs {artifact.format} only with {runtime}, which lacks "
                                  f"{', '.join(problems)}; use fp32 or full-int8 for this target.")
        warnings.warn(f"{runtime} on {target.name} cannot run this model ({', '.join(problems)}); "
                      "it needs ai-edge-litert there.", stacklevel=_user_stacklevel())
    return result


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside edgepack (API wrappers included)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("edgepack"):
        frame, level = frame.f_back, level + 1
    return level


def _default_postprocessing(labels: list[str] | None, golden_outputs: Sequence[np.ndarray]) -> Postprocessing:
    """Classification when labels are given; softmax unless the model already outputs probabilities."""
    if not labels:
        return Postprocessing(kind=PostprocessKind.RAW)
    out = golden_outputs[0].reshape(golden_outputs[0].shape[0], -1) if golden_outputs else np.zeros((1, 0))
    is_probability = bool(out.size) and bool(np.all(out >= 0)) and bool(np.allclose(out.sum(axis=1), 1, atol=1e-2))
    return Postprocessing(kind=PostprocessKind.CLASSIFICATION, softmax=not is_probability)


def _check_size(artifact: ModelArtifact, target: Target, max_size: int | str | None) -> None:
    limit = parse_size(max_size) if max_size is not None else target.budgets.model_bytes
    if limit is not None and len(artifact.data) > limit:
        where = "max_size" if max_size is not None else f"{target.name} budget"
        raise ToleranceError(f"the {artifact.precision} model is {len(artifact.data)} bytes, over the limit of "
                             f"{limit} ({where}); use a smaller precision or prune.")
