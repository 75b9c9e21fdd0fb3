"""Read an ONNX ``ModelProto``: inputs, outputs, the opsets and domains it needs, and its precision."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edgepack.converters.formats.base import InputInfo

#: Ops that mark a statically quantized (QDQ or QOperator) model.
_STATIC_Q = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd"}
#: Ops that mark a dynamically quantized model.
_DYNAMIC_Q = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"}


@dataclass(frozen=True)
class OnnxSummary:
    """What an ONNX model needs from a runtime, and what it holds."""

    ir_version: int
    opset: dict[str, int]  # domain ("" = ai.onnx) → version, for every domain the nodes use
    ops: dict[str, int]  # "Op" or "domain:Op" → count
    precision: str  # fp32 | fp16 | dynamic_int8 | full_int8 | int16x8
    initializer_types: dict[str, int]  # numpy dtype name → count
    qdq_pairs: int

    @property
    def custom_domains(self) -> list[str]:
        """Domains other than the standard ``ai.onnx`` / ``ai.onnx.ml`` ones."""
        return sorted(d for d in self.opset if d not in ("", "ai.onnx", "ai.onnx.ml"))


def iter_nodes(graph: Any) -> Iterator[Any]:
    """Every node, including those in If/Loop/Scan bodies."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_nodes(g)


def _dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type).name)
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def summarize(model: Any) -> OnnxSummary:
    """Opsets by used domain, op counts, initializer dtypes and the precision the model was made with."""
    declared = {(o.domain or ""): int(o.version) for o in model.opset_import}
    for fn in model.functions:
        for o in fn.opset_import:
            declared.setdefault(o.domain or "", int(o.version))
    ops: dict[str, int] = {}
    used = {""}
    for node in iter_nodes(model.graph):
        domain = node.domain or ""
        used.add(domain)
        key = node.op_type if domain in ("", "ai.onnx") else f"{domain}:{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
    local = {(fn.domain or "") for fn in model.functions}
    opset = {d: declared.get(d, 1) for d in sorted(used - local)}
    inits: dict[str, int] = {}
    for init in model.graph.initializer:
        name = _dtype_name(init.data_type)
        inits[name] = inits.get(name, 0) + 1
    names = {k.split(":")[-1] for k in ops}
    zero_types = _q_zero_point_types(model)
    if names & _STATIC_Q:
        precision = "int16x8" if zero_types & {"int16", "uint16"} else "full_int8"
    elif names & _DYNAMIC_Q:
        precision = "dynamic_int8"
    elif inits.get("float16"):
        precision = "fp16"
    else:
        precision = "fp32"
    return OnnxSummary(ir_version=int(model.ir_version), opset=opset, ops=dict(sorted(ops.items())),
                       precision=precision, initializer_types=inits, qdq_pairs=ops.get("QuantizeLinear", 0))


def _q_zero_point_types(model: Any) -> set[str]:
    """Dtypes of the zero points that ``QuantizeLinear`` nodes produce (activations)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    types = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            types.add(_dtype_name(inits[node.input[2]]))
    return types


def input_infos(model: Any) -> list[InputInfo]:
    """Graph inputs that are real inputs (not initializers), with ``-1`` for dynamic dimensions."""
    inits = {i.name for i in model.graph.initializer}
    infos = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim)
        infos.append(InputInfo(name=value.name, shape=dims, dtype=_dtype_name(tensor.elem_type)))
    return infos


def drop_initializer_inputs(model: Any) -> int:
    """Remove graph inputs that are initializers (IR < 4 models list every weight as an input); returns how many.

    They are not inputs anyone feeds, and at IR >= 4 an input with an initializer is an overridable input that
    graph optimizers and quantizers must treat as a variable.
    """
    inits = {i.name for i in model.graph.initializer}
    keep = [v for v in model.graph.input if v.name not in inits]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return dropped


def output_names(model: Any) -> list[str]:
    """Names of the graph outputs, in order."""
    return [o.name for o in model.graph.output]


def name_nodes(model: Any) -> int:
    """Give every unnamed (or duplicate-named) node a unique name, ``<Op>_<index>``; returns how many.

    Recipes exclude nodes by name, so every node needs one (exporters often leave them empty).
    """
    original = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.name or node.op_type}_{i}"
        name, k = base, 0
        while name in seen or name in original:
            k += 1
            name = f"{base}_{k}"
        node.name = name
        seen.add(name)
        renamed += 1
    return renamed
