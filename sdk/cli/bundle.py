"""``edgepack run | inspect | verify``: use and check a bundle on this machine (never imports TensorFlow)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.cli import options as cli_args

if TYPE_CHECKING:
    from edgepack.runtimes.manifest import ModelEntry
    from edgepack.runtimes.session import Session


def register(sub: Any) -> None:
    """Add the ``run``, ``inspect`` and ``verify`` parsers."""
    r = sub.add_parser("run", help="run a bundle on an image file or a .npy tensor")
    r.add_argument("bundle")
    r.add_argument("input", help="image file (pre-processed by the bundle's spec) or .npy tensor")
    cli_args.add_runtime_args(r)
    r.add_argument("--top-k", type=int, default=None)
    r.set_defaults(handler=_run)

    i = sub.add_parser("inspect", help="show manifest, I/O, sizes, ops and precision")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(handler=_inspect)

    v = sub.add_parser("verify", help="check checksums and golden outputs on this machine")
    v.add_argument("bundle")
    v.add_argument("--trust", metavar="DIR", default=None,
                   help="also require a signature by a key of DIR (trusted .pub files, revoked.txt); docs/signing.md")
    cli_args.add_runtime_args(v)
    v.set_defaults(handler=_verify)


def _load(args: argparse.Namespace) -> Session:
    from edgepack.runtimes import load

    return load(args.bundle, backend=args.backend, delegates=args.delegates, num_threads=args.threads)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from edgepack.runtimes.errors import ImageReadError, InputSpecError
    from edgepack.runtimes.images import read_image
    from edgepack.runtimes.manifest import check_top_k

    path = Path(args.input)
    if not path.is_file():
        raise InputSpecError(f"input {path} does not exist.")
    if args.top_k is not None:
        check_top_k(args.top_k, where="--top-k")
    tensor = _load_npy(path) if path.suffix.lower() == ".npy" else None  # bad input fails before any model loads
    session = _load(args)
    if tensor is not None:
        outputs = session.run(tensor)
        print(f"running on {session.explain()}")
        for k, o in enumerate(outputs):
            head = np.array2string(o.ravel()[:10], precision=4)
            print(f"output {k} {session.outputs[k].name} {list(o.shape)}: {head}")
        return 0
    try:
        image = read_image(path)
    except ImageReadError as exc:
        raise InputSpecError(f"cannot read image {path}; pass a .jpg/.png or a .npy tensor.") from exc
    pred = session.predict(image, top_k=args.top_k)
    print(f"running on {session.explain()}")
    for c in pred.top_k:
        print(f"{c.score:9.4f}  {c.label}")
    if not pred.top_k:
        print(f"outputs: {[list(o.shape) for o in pred.outputs]}")
    return 0


def _load_npy(path: Path) -> Any:
    """A plain numeric ``.npy`` array (no pickles, no object dtype).

    Raises:
        InputSpecError: the file is not a readable ``.npy`` of numbers.
    """
    import numpy as np

    from edgepack.runtimes.errors import InputSpecError

    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # what np.load raises on a pickle, object array or garbage
        raise InputSpecError(f"{path} is not a plain .npy array ({exc}); save one with np.save(path, array).") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise InputSpecError(f"{path} holds {kind}, not a numeric array; save the input tensor with np.save.")
    return arr


def _inspect(args: argparse.Namespace) -> int:
    from edgepack.runtimes import read_bundle

    bundle = read_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(m.to_bytes().decode())
        return 0
    print(f"{m.name} v{m.version} ({m.schema}), made {m.created} by edgepack {m.edgepack_version}")
    target = m.target.name if m.target is not None else "unknown"
    print(f"source: {m.source.format} {m.source.file}; target: {target}; models: {len(m.models)}")
    for e in m.models:
        _print_model(e)
    if m.preprocessing:
        print(f"preprocessing: {json.dumps(json.loads(m.to_bytes())['preprocessing'])}")
    print(f"postprocessing: {m.postprocessing.kind.value}; labels: {len(bundle.labels())}")
    print(f"files: {', '.join(bundle.names())}")
    return 0


def recipe_label(entry: ModelEntry) -> str:
    """``name (format, precision)`` of the recipe that made ``entry``; ``unknown`` when the bundle has none."""
    r = entry.recipe
    if r is None:
        return "unknown"
    fmt = getattr(r.format, "value", r.format)
    return f"{r.name or r.precision.value} ({fmt}, {r.precision.value})"


def _print_model(e: ModelEntry) -> None:
    print(f"model {e.file}: {e.format} {e.precision}, recipe {recipe_label(e)}, {e.bytes} bytes, "
          f"sha256 {e.sha256[:16]}…")
    for kind, specs in (("in ", e.inputs), ("out", e.outputs)):
        for s in specs:
            q = f" q(scale={s.quantization.scale:.4g}, zp={s.quantization.zero_point})" if s.quantization else ""
            print(f"  {kind} {s.name}: {list(s.shape)} {s.dtype}{q}")
    ops = e.requires.get("ops") or e.requires.get("op_types") or {}
    if ops:
        print("  ops: " + ", ".join(f"{k} v{v}" if isinstance(ops, dict) else k for k, v in _items(ops)))
    if e.requires.get("opset"):
        print(f"  opset: {e.requires['opset']}")


def _items(ops: object) -> list[tuple[str, object]]:
    if isinstance(ops, dict):
        return sorted(ops.items())
    return [(str(o), "") for o in ops]  # type: ignore[attr-defined]


def _verify(args: argparse.Namespace) -> int:
    if args.trust is not None:  # before any model byte reaches an interpreter
        from edgepack.runtimes.signing import verify_bundle

        info = verify_bundle(args.bundle, args.trust)
        print(f"signature OK: signed by {info.key_name} (key id {info.key_id[:16]}…)")
    session = _load(args)
    print(f"checksums OK ({len(session.bundle.names())} files)")
    for attempt in session.fallback_log:
        print(f"  {attempt}")
    print(f"golden outputs match on {session.backend}/{session.delegate}")
    return 0
