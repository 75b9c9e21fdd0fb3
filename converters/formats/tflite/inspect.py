"""Read a ``.tflite`` flatbuffer: op codes with versions, tensor types, and the precision it was made with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgepack.converters.errors import SourceModelError


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


@dataclass(frozen=True)
class TFLiteSummary:
    """What a ``.tflite`` file needs and holds."""

    ops: dict[str, int]  # op name -> highest version used
    custom_ops: tuple[str, ...]
    precision: str
    tensor_types: dict[str, int]


def _names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if k.isupper() and isinstance(v, int)}


def summarize(model: bytes) -> TFLiteSummary:
    """Parse the flatbuffer; raise :class:`SourceModelError` when it is not a TFLite model."""
    schema = _schema()
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise SourceModelError("not a TFLite flatbuffer (missing the TFL3 identifier).")
    try:
        m = schema.Model.GetRootAsModel(model, 0)
        op_names = _names(schema.BuiltinOperator)
        type_names = _names(schema.TensorType)
        ops: dict[str, int] = {}
        custom: list[str] = []
        for i in range(m.OperatorCodesLength()):
            code = m.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                custom.append((code.CustomCode() or b"").decode())
                continue
            ops[name] = max(ops.get(name, 0), code.Version())
        consts: dict[str, int] = {}
        acts: dict[str, int] = {}
        for s in range(m.SubgraphsLength()):
            g = m.Subgraphs(s)
            for t in range(g.TensorsLength()):
                tensor = g.Tensors(t)
                buf = m.Buffers(tensor.Buffer())
                is_const = buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1)
                name = type_names.get(tensor.Type(), str(tensor.Type()))
                bucket = consts if is_const else acts
                bucket[name] = bucket.get(name, 0) + 1
    except (IndexError, ValueError, TypeError) as exc:  # flatbuffers raises these on garbage
        raise SourceModelError(f"the TFLite flatbuffer is malformed: {exc}") from exc
    types = {f"const:{k}": v for k, v in consts.items()} | {f"act:{k}": v for k, v in acts.items()}
    return TFLiteSummary(ops=ops, custom_ops=tuple(custom), precision=_precision(consts, acts), tensor_types=types)


def _precision(consts: dict[str, int], acts: dict[str, int]) -> str:
    if "INT16" in acts:
        return "int16x8"
    if "INT8" in acts or "UINT8" in acts:
        return "full_int8"
    if "INT8" in consts:
        return "dynamic_int8"
    if "FLOAT16" in consts:
        return "fp16"
    return "fp32"
