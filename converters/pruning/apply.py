"""One entry point for every framework: prune a model as :class:`PruneOptions` say, then fine-tune it.

Keras 3 models (``.keras``/``.h5`` or a ``keras.Model``) get our own channel removal and masks, PyTorch modules
torch-pruning and ``torch.nn.utils.prune``, a bare ONNX file one-shot magnitude sparsity of its initializers.
Fine-tuning trains on labels when ``y`` is given and distils from the unpruned model otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtimes.recipe import Importance, PruneOptions

from ..errors import PruningError


@dataclass
class PrunedModel:
    """A pruned model (same framework as the source), what was done to it, and the figures before/after."""

    model: Any
    kind: str
    original: Any
    report: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model in its source's format (``.keras``, ``.onnx``; PyTorch: ``.onnx`` too), atomically."""
        return save_model(self.model, self.kind, path)


def model_kind(model: Any) -> str:
    """``keras``, ``torch`` or ``onnx`` for what pruning takes; anything else is a :class:`PruningError`."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise PruningError(f"model {path} does not exist; pass a .keras/.h5 file, an .onnx file or a model.")
        suffix = path.suffix.lower()
        if suffix in (".keras", ".h5", ".hdf5"):
            return "keras"
        if suffix == ".onnx":
            return "onnx"
        if path.is_dir():
            raise PruningError(f"{path} is a SavedModel: its layers cannot be rebuilt with fewer channels; prune the "
                               "Keras model it was saved from (.keras/.h5) instead.")
        raise PruningError(f"cannot prune {path.name}: pass a .keras/.h5 file, an .onnx file (sparsity only), a "
                           "keras.Model or a torch.nn.Module (a .tflite is already converted: prune its source).")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "keras"
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        return "onnx"
    raise PruningError(f"cannot prune a {type(model).__name__}; pass a .keras/.h5/.onnx file, a keras.Model or a "
                       "torch.nn.Module.")


def load_model(model: Any, kind: str) -> Any:
    """The framework object for ``model`` (files are loaded; objects pass through)."""
    if not isinstance(model, (str, os.PathLike)):
        return model
    if kind == "keras":
        from edgepack.converters.tfenv import import_tensorflow

        import_tensorflow()
        import keras

        try:
            return keras.saving.load_model(model, compile=False)
        except (OSError, ValueError, TypeError) as exc:
            raise PruningError(f"cannot load Keras model {model}: {exc}") from exc
    import onnx

    try:
        return onnx.load(os.fspath(model))
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:  # type: ignore[attr-defined]
        raise PruningError(f"cannot load ONNX model {model}: {exc}") from exc


def prune_model(
    model: Any,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    *,
    options: PruneOptions,
    round_to: int = 4,
    example_input: Any = None,
    protect: Sequence[str] = (),
    progress: bool = True,
) -> PrunedModel:
    """Prune ``model`` as ``options`` say and fine-tune it on ``x`` (labels ``y``, else distilled).

    Args:
        model: ``.keras``/``.h5`` path, ``keras.Model``, ``torch.nn.Module`` or ``.onnx`` path / ``ModelProto``
            (ONNX: sparsity only, one-shot — a bare graph has nothing to train).
        x: model-ready inputs (sample index first) for fine-tuning, activation importance and distillation.
        y: class labels for ``x`` (None: distil from the unpruned model).
        options: what to prune (``channels`` and/or ``sparsity``), importance, epochs.
        round_to: channel counts become multiples of this (``options.round_to`` wins when set).
        example_input: PyTorch only: an example input tensor (default: ``x[:1]``).
        protect: layer / module names never pruned (outputs are protected automatically).
    """
    kind = model_kind(model)
    original = load_model(model, kind)
    round_to = options.round_to or round_to
    if options.epochs and x is None:
        raise PruningError(f"fine-tuning for {options.epochs} epoch(s) needs data: pass images/arrays (labelled to "
                           "train, unlabelled to distil from the unpruned model), or epochs=0.")
    if options.importance is Importance.ACTIVATION and x is None:
        raise PruningError("importance=activation measures activations on data: pass data, or use l1/l2.")
    if kind == "keras":
        pruned, report = _prune_keras(original, x, y, options=options, round_to=round_to, protect=protect,
                                      progress=progress)
    elif kind == "torch":
        pruned, report = _prune_torch(original, x, y, options=options, round_to=round_to, protect=protect,
                                      example_input=example_input, progress=progress)
    else:
        pruned, report = _prune_onnx(original, options=options)
    report = {"framework": kind, "options": options.to_json() if hasattr(options, "to_json") else _options(options),
              "round_to": round_to, "fine_tune_samples": 0 if x is None else len(x),
              "fine_tune_mode": None if not options.epochs else ("labels" if y is not None else "distill"),
              **report}
    return PrunedModel(model=pruned, kind=kind, original=original, report=report)


def _options(options: PruneOptions) -> dict[str, Any]:
    from edgepack.runtimes.serde import to_json

    return to_json(options)


def _prune_keras(model: Any, x: np.ndarray | None, y: np.ndarray | None, *, options: PruneOptions, round_to: int,
                 protect: Sequence[str], progress: bool) -> tuple[Any, dict[str, Any]]:
    from .keras_stats import keras_params_macs

    params0, macs0 = keras_params_macs(model)
    report: dict[str, Any] = {}
    pruned = model
    teacher = None if y is not None else model
    if options.channels is not None:
        from .keras_channels import remove_channels

        sample = None if x is None else x[:512]
        pruned, plan = remove_channels(model, ratio=options.channels, importance=options.importance,
                                       round_to=round_to, data=sample, protect=tuple(protect))
        report["channels"] = plan.to_json()
        if options.epochs and options.sparsity is None:
            from .keras_finetune import finetune

            report["finetune"] = finetune(pruned, x, y, teacher=teacher, epochs=options.epochs,
                                          progress=progress).to_json()
    if options.sparsity is not None:
        from .keras_sparsity import sparsify

        if pruned is model:  # sparsify works in place on a copy, never on the user's model
            pruned = _clone_keras(model)
        pruned, report["sparsity"] = sparsify(pruned, x, y, sparsity=options.sparsity, teacher=teacher,
                                              epochs=options.epochs, global_sparsity=options.global_sparsity,
                                              progress=progress)
    params1, macs1 = keras_params_macs(pruned)
    report.update(params_before=params0, params_after=params1, macs_before=macs0, macs_after=macs1)
    return pruned, report


def _clone_keras(model: Any) -> Any:
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _prune_torch(module: Any, x: np.ndarray | None, y: np.ndarray | None, *, options: PruneOptions, round_to: int,
                 protect: Sequence[str], example_input: Any, progress: bool) -> tuple[Any, dict[str, Any]]:
    import copy

    import torch

    from .torch_channels import remove_channels_torch, torch_params_macs
    from .torch_finetune import finetune_torch
    from .torch_sparsity import sparsify_torch

    if example_input is None:
        if x is None:
            raise PruningError("a PyTorch module needs example_input=... (or data) to trace its layers.")
        example_input = torch.from_numpy(np.ascontiguousarray(x[:1], dtype=np.float32))
    module = module.eval()
    params0, macs0 = torch_params_macs(module, example_input)
    report: dict[str, Any] = {}
    pruned = copy.deepcopy(module)
    teacher = None if y is not None else module
    if options.channels is not None:
        data = None if x is None or options.importance is not Importance.ACTIVATION else torch.from_numpy(
            np.ascontiguousarray(x[:256], dtype=np.float32))
        pruned, plan = remove_channels_torch(pruned, example_input, ratio=options.channels,
                                             importance=options.importance, round_to=round_to, data=data,
                                             protect=tuple(protect))
        report["channels"] = {"layers": {k: list(v) for k, v in plan.items()}}
    if options.sparsity is not None:
        pruned, report["sparsity"] = sparsify_torch(pruned, sparsity=options.sparsity,
                                                    global_sparsity=options.global_sparsity)
    if options.epochs:
        report["finetune"] = finetune_torch(pruned, x, y, teacher=teacher, epochs=options.epochs, progress=progress)
        if options.sparsity is not None:  # training moved the zeros: prune again at the same ratio, permanently
            pruned, report["sparsity"] = sparsify_torch(pruned, sparsity=options.sparsity,
                                                        global_sparsity=options.global_sparsity)
    pruned = pruned.eval()
    params1, macs1 = torch_params_macs(pruned, example_input)
    report.update(params_before=params0, params_after=params1, macs_before=macs0, macs_after=macs1)
    return pruned, report


def _prune_onnx(model: Any, *, options: PruneOptions) -> tuple[Any, dict[str, Any]]:
    if options.channels is not None:
        raise PruningError("channel removal needs the framework model (a bare ONNX graph cannot be rebuilt with "
                           "fewer channels safely): prune the Keras model or the PyTorch module, or use sparsity=R.")
    from .onnx_sparsity import sparsify_onnx

    pruned, report = sparsify_onnx(model, sparsity=options.sparsity or 0.0, global_sparsity=options.global_sparsity)
    return pruned, {"sparsity": report, "finetune": None,
                    "note": "ONNX file: one-shot magnitude pruning of the initializers (no training graph)"}


def save_model(model: Any, kind: str, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` atomically: ``.keras`` for Keras, ``.onnx`` for ONNX and PyTorch (exported)."""
    from edgepack.runtimes.fileio import atomic_write_bytes

    out = Path(path)
    want = ".keras" if kind == "keras" else ".onnx"
    if out.suffix.lower() != want:
        raise PruningError(f"a pruned {kind} model is written as {want}; name the output *{want}, not {out.name}.")
    if kind == "keras":
        tmp = out.with_name(f".{out.stem}.tmp.keras")
        try:
            model.save(tmp)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
        return out
    if kind == "torch":
        raise PruningError("save a pruned PyTorch module with torch.save(module) or convert it (edgepack.convert); "
                           "edgepack writes no pickles.")
    return atomic_write_bytes(out, model.SerializeToString())
