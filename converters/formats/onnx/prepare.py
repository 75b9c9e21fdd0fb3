"""Get an fp32 ONNX model ready for ``onnxruntime.quantization`` and say which of its nodes stay float.

``quant_pre_process`` rewrites the graph before quantization: it folds each BatchNormalization into the Conv
before it, fuses MatMul + Add into Gemm and inlines function ops (HardSwish becomes HardSigmoid + Mul), and
the nodes it creates have no name. ``nodes_to_exclude`` is matched against *that* graph, so a name taken from
the original model (as Netron shows it) may exclude nothing. Here:

- :func:`name_rewritten_nodes` names every new node after the original node it replaces,
  ``<original name>/<Op>`` (``HardSwish.0/HardSigmoid``, ``HardSwish.0/Mul``);
- :func:`resolve_exclude` maps the recipe's names onto the pre-processed graph (a rewritten node's name covers
  all its parts) and refuses a name that was folded into a node the recipe still quantizes, or that never
  existed, saying which name to use instead;
- :func:`first_layers` lists the nodes up to the ``n``-th weighted layer (the "float stem");
- :func:`prepare_float` does all of it to a model: the graph ``quantize`` quantizes, which per-layer debugging
  compares the quantized model with.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.converters.errors import ConversionError, OnnxOpsetError
from edgepack.converters.formats.onnx.inspect import drop_initializer_inputs, name_nodes
from edgepack.runtimes.errors import ConfigError

#: Ops that hold the weights of a layer; ``float_first_layers`` counts these.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Metadata key of an upgraded model that records the opset of its source (read back by ``describe``).
SOURCE_OPSET_KEY = "edgepack.source_opset"


@dataclass(frozen=True)
class PreparedModel:
    """An fp32 model as ONNX Runtime's quantizer sees it.

    Attributes:
        original: a copy of the source with every node named (unnamed ones ``<Op>_<index>``).
        model: ``original`` after ``quant_pre_process``, the nodes it made named after the ones they replace.
        notes: what pre-processing had to skip.
        named: nodes named in ``original``.
        renamed: nodes named in ``model``.
    """

    original: Any
    model: Any
    notes: tuple[str, ...]
    named: int
    renamed: int


def prepare_float(model: Any) -> PreparedModel:
    """Name every node of (a copy of) the fp32 ``model``, run ``quant_pre_process``, name the nodes it made.

    Raises:
        ConversionError: ``quant_pre_process`` failed.
    """
    import onnx

    original = onnx.ModelProto()
    original.CopyFrom(model)
    named = name_nodes(original)
    with tempfile.TemporaryDirectory(prefix="edgepack-onnxprep-") as tmp:
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx")
        onnx.save(original, str(src))
        try:
            notes = preprocess(src, dst)
        except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
            raise ConversionError(f"quant_pre_process failed: {type(exc).__name__}: {exc}") from exc
        pre = onnx.load(str(dst))
    renamed = name_rewritten_nodes(original, pre)
    return PreparedModel(original=original, model=pre, notes=tuple(notes), named=named, renamed=renamed)


def default_opset(model: Any) -> int:
    """The ``ai.onnx`` opset a model imports (1 when it imports none)."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def upgrade_opset(model: Any, minimum: int) -> tuple[Any, int | None]:
    """``model`` at ``ai.onnx`` opset ``minimum`` or newer: returns it unchanged with None, or an upgraded copy
    (``onnx.version_converter``) with the opset it had. The copy keeps initializers out of its graph inputs (an
    IR < 4 habit that, at the IR the new opset needs, would make weights overridable inputs), records the source
    opset in its metadata (:func:`mark_source_opset`) and has at least the IR version that opset needs.

    Raises:
        OnnxOpsetError: the converter has no way to bring one of the model's ops to ``minimum``.
    """
    import onnx
    from onnx import version_converter

    have = default_opset(model)
    if have >= minimum:
        return model, None
    work = onnx.ModelProto()
    work.CopyFrom(model)
    drop_initializer_inputs(work)
    work.ir_version = max(int(work.ir_version), 4)  # IR 4: initializers need not be graph inputs
    try:
        upgraded = version_converter.convert_version(work, minimum)
    except (version_converter.ConvertError, RuntimeError, ValueError, IndexError,
            onnx.checker.ValidationError) as exc:
        raise OnnxOpsetError(f"this recipe needs ONNX opset {minimum} and the model is opset {have}, but "
                             f"{_blocking_op(work, str(exc))} cannot be upgraded by onnx.version_converter; "
                             f"re-export the model with opset >= {minimum}, or use an fp32/fp16 recipe.") from exc
    ir = onnx.helper.find_min_ir_version_for(list(upgraded.opset_import), ignore_unknown=True)
    upgraded.ir_version = max(int(upgraded.ir_version), int(ir))
    mark_source_opset(upgraded, have)
    return upgraded, have


def mark_source_opset(model: Any, opset: int) -> None:
    """Record in ``model``'s metadata that it was upgraded from ``opset`` (:data:`SOURCE_OPSET_KEY`)."""
    import onnx

    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        SOURCE_OPSET_KEY: str(opset)})


def _blocking_op(model: Any, message: str) -> str:
    """The op the converter's message names (its messages are not always well formatted), else the message."""
    ops = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}, key=len, reverse=True)
    found = next((op for op in ops if op in message), None)
    return f"op {found}" if found else f"an op ({' '.join(message.split())[:200]})"


def preprocess(src: Path, dst: Path) -> list[str]:
    """``quant_pre_process`` (shape inference + basic fusions); returns notes on what had to be skipped."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), auto_merge=True)
        return []
    except ImportError as exc:  # symbolic shape inference needs sympy
        note = f"symbolic shape inference skipped ({exc})"
    except Exception as exc:  # ORT's shape inference raises the bare Exception class: re-raise all others
        if type(exc) is not Exception and not isinstance(exc, (ValueError, TypeError, KeyError, AssertionError)):
            raise
        note = f"symbolic shape inference failed and was skipped ({type(exc).__name__}: {str(exc)[:200]})"
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return [note]


def name_rewritten_nodes(original: Any, pre: Any) -> int:
    """Name each unnamed node of ``pre`` after the ``original`` node it came from; returns how many.

    A new node is owned by the original node that produced one of its outputs, else by the owner of the
    node that consumes its output (so the HardSigmoid feeding a HardSwish's Mul belongs to that HardSwish).
    Nodes with no owner are called ``<Op>_<index>``.
    """
    producer = {t: n.name for n in original.graph.node for t in n.output if n.name}
    consumers: dict[str, list[Any]] = {}
    for node in pre.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    taken = {n.name for n in pre.graph.node if n.name}
    owner: dict[str, str] = {}
    renamed = 0
    for index in range(len(pre.graph.node) - 1, -1, -1):  # consumers come after producers: name them first
        node = pre.graph.node[index]
        if node.name:
            owner.setdefault(node.name, node.name)
            continue
        source = next((producer[t] for t in node.output if t in producer), None)
        if source is None:
            source = next((owner[c.name] for t in node.output for c in consumers.get(t, []) if c.name in owner),
                          None)
        base = f"{source}/{node.op_type}" if source else f"{node.op_type}_{index}"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}.{k}", k + 1
        node.name = name
        taken.add(name)
        owner[name] = source or name
        renamed += 1
    return renamed


def resolve_exclude(original: Any, pre: Any, exclude: Sequence[str]) -> list[str]:
    """Names of the ``pre`` nodes that ``exclude`` (names from either graph) keeps in float, in graph order.

    A name of ``pre`` is itself; an original node that was rewritten stands for all its parts
    (``HardSwish.0`` → ``HardSwish.0/HardSigmoid`` + ``HardSwish.0/Mul``); one that was folded into another
    node is accepted when that node is excluded too.

    Raises:
        ConfigError: a name is unknown, or was folded into a node that would still be quantized.
    """
    pre_names = [n.name for n in pre.graph.node]
    chosen: set[str] = set()
    folded: dict[str, str] = {}
    for name in exclude:
        parts = [n for n in pre_names if n == name or n.startswith(f"{name}/")]
        if parts:
            chosen.update(parts)
            continue
        host = _folded_into(original, pre, name)
        if host is None:
            sample = ", ".join(pre_names[:10]) + (" ..." if len(pre_names) > 10 else "")
            raise ConfigError(f"recipe.exclude names a node the model does not have: {name!r}; after "
                              f"quant_pre_process its nodes are named like: {sample} (`edgepack qdebug` lists "
                              "the layers that lose the most accuracy, by these names).")
        if not host:
            raise ConfigError(f"recipe.exclude names {name!r}, which quant_pre_process removes (an Identity, or a "
                              "node folded into a constant); nothing of it is left to keep in float: drop it.")
        folded[name] = host
    for name, host in folded.items():
        if host not in chosen:
            raise ConfigError(f"recipe.exclude names {name!r}, which quant_pre_process folds into {host!r}; "
                              f"exclude {host!r} instead (it covers both).")
    return [n for n in pre_names if n in chosen]


def _folded_into(original: Any, pre: Any, name: str) -> str | None:
    """The ``pre`` node now producing what original node ``name`` produced; ``""`` when none does, None when
    ``original`` has no node ``name``."""
    node = next((n for n in original.graph.node if n.name == name), None)
    if node is None:
        return None
    producer = {t: n.name for n in pre.graph.node for t in n.output}
    return next((producer[t] for t in node.output if t in producer), "")


def first_layers(pre: Any, count: int) -> list[str]:
    """Names of the ``pre`` nodes before its ``count + 1``-th weighted layer (Conv, Gemm, MatMul...).

    Raises:
        ConfigError: the model does not have more than ``count`` weighted layers.
    """
    weighted = [i for i, n in enumerate(pre.graph.node) if n.op_type in WEIGHTED_OPS and n.domain in ("", "ai.onnx")]
    if count >= len(weighted):
        raise ConfigError(f"float_first_layers={count}, but the model has {len(weighted)} weighted layers "
                          f"({', '.join(sorted(WEIGHTED_OPS))}); keep fewer in float, or use an fp32/fp16 recipe.")
    return [n.name for n in pre.graph.node[: weighted[count]]]
