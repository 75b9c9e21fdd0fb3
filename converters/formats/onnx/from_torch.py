"""PyTorch ``nn.Module`` → ONNX with ``torch.onnx.export`` (optional extra: ``pip install 'edgepack[torch]'``).

Exporter: the ``torch.export``-based one (``dynamo=True``), the default and the maintained path in torch 2.13
(the TorchScript exporter is deprecated there and pinned to opset 17). It needs ``onnxscript``; weights are
kept inside the model (``external_data=False``); the default opset is 20. Nothing is written to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgepack.converters.errors import ExportError, SourceModelError
from edgepack.converters.formats.onnx.source import OnnxSource, from_model_proto

log = logging.getLogger("edgepack.converters")
EXPORTER = "torch.onnx.export(dynamo=True)"


def _as_tensors(torch: Any, example_input: Any) -> tuple[Any, ...]:
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            out.append(item.detach())
        elif isinstance(item, np.ndarray):
            out.append(torch.from_numpy(np.ascontiguousarray(item)))
        else:
            raise SourceModelError(
                f"example_input[{i}] is a {type(item).__name__}: ONNX model inputs are tensors. Pass a tensor or "
                "numpy array shaped like that input (a batch of 1 is fine), or, for a fixed Python argument, wrap "
                f"the model: class Fixed(nn.Module): def forward(self, x): return model(x, {item!r}).")
    return tuple(out)


@contextlib.contextmanager
def _quiet_torch_logs() -> Any:
    """Silence torch's own loggers (they hold the real stderr) below ERROR while exporting."""
    names = ["torch", *(n for n in logging.root.manager.loggerDict if n.startswith("torch."))]
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _reason(exc: BaseException) -> str:
    """The innermost cause's first line, without terminal colour codes."""
    inner: BaseException = exc
    while inner.__cause__ is not None and inner.__cause__ is not inner:
        inner = inner.__cause__
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(inner)).splitlines() if ln.strip()]
    return f"{type(inner).__name__}: {lines[0] if lines else ''}"[:400]


def _reference(torch: Any, module: Any) -> Any:
    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(*args)
        finally:
            module.train(was_training)
        flat = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().cpu().numpy() for o in flat]

    return run


def torch_to_onnx(module: Any, example_input: Any, *, opset: int | None = None,
                  dynamic_batch: bool = True) -> OnnxSource:
    """Export ``module`` (in eval mode; its mode is restored afterwards) and check ORT loads the result.

    Raises:
        SourceModelError: no or unusable ``example_input``.
        ExportError: the exporter failed (its reason is in the message) or onnxscript is missing.
    """
    import torch

    if example_input is None:
        raise SourceModelError("a PyTorch model needs example_input=... (a tensor or tuple of tensors shaped "
                               "like the model's inputs) to be exported to ONNX.")
    args = _as_tensors(torch, example_input)
    names = [f"input_{i}" if len(args) > 1 else "input" for i in range(len(args))]
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic = tuple({0: batch} for _ in args)
    was_training = module.training
    module.eval()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), _quiet_torch_logs(), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            program = torch.onnx.export(module, args, None, dynamo=True, external_data=False, opset_version=opset,
                                        input_names=names, dynamic_shapes=dynamic, verbose=False)
    except ImportError as exc:
        raise ExportError(f"the PyTorch ONNX exporter needs {exc.name or 'onnxscript'}; "
                          "install it with `pip install 'edgepack[torch]'`.") from exc
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AssertionError) as exc:
        hint = (" If the model's batch dimension cannot vary, pass dynamic_batch=False." if dynamic_batch else "")
        raise ExportError(
            f"torch.onnx.export (torch {torch.__version__}, dynamo exporter) failed: {_reason(exc)}. Make the "
            "forward pass traceable by torch.export (no data-dependent Python control flow, no .numpy()/.item() "
            f"on inputs).{hint}"
        ) from exc
    finally:
        module.train(was_training)
    for w in caught:
        log.debug("torch export warning: %s", w.message)
    proto = program.model_proto
    data = proto.SerializeToString()
    name = type(module).__name__
    provenance = {"exporter": EXPORTER, "torch": str(torch.__version__),
                  "opset_requested": opset, "dynamic_batch": dynamic_batch}
    return from_model_proto(proto, kind="torch", name=name, file_name=f"{name}.onnx",
                            sha256=hashlib.sha256(data).hexdigest(), reference=_reference(torch, module),
                            provenance=provenance)
