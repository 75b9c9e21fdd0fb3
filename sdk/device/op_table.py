"""Measure which builtin op versions a TFLite interpreter supports, for ``runtimes/opcheck.py``.

An interpreter resolves every operator code of a model when it is built, so a model holding only one
operator code (op, version) and an empty graph tells whether that kernel version exists. The probe
models are made here (host: ai-edge-litert's schema + flatbuffers); the probe itself needs only the
interpreter, so it runs where the interpreter is — e.g. tflite-runtime 2.14 in the emulated arm64
userland:

    python -m edgepack.device.op_table --legacy-tflite --out runtimes/data/tflite_runtime_2_14_ops.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from edgepack.runtimes.fileio import atomic_write_text

MAX_VERSION = 20
SKIP = {"CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"}

PROBE = r'''
import json, sys, pathlib
module = sys.argv[2]
Interpreter = __import__(module, fromlist=["Interpreter"]).Interpreter
root = pathlib.Path(sys.argv[1])
table = {}
for op in sorted({p.name.split(".")[0] for p in root.glob("*.tflite")}):
    best = 0
    for v in range(1, MAX_VERSION + 1):
        path = root / f"{op}.{v}.tflite"
        try:
            Interpreter(model_content=path.read_bytes())
        except ValueError as exc:
            if "find op" not in str(exc) and "out of range" not in str(exc):
                raise
            break
        best = v
    table[op] = best
print(json.dumps(table))
'''.replace("MAX_VERSION", str(MAX_VERSION))


def probe_model(op_code: int, version: int) -> bytes:
    """A flatbuffer with one operator code (op, version) and an empty graph."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = op_code, min(op_code, 127), version
    model.operatorCodes = [code]
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [], [], [], []
    model.subgraphs, model.buffers = [graph], [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_probes(dest: Path) -> int:
    """Write ``OP.v.tflite`` for every builtin op and version 1..MAX_VERSION; returns the op count."""
    from ai_edge_litert import schema_py_generated as schema

    ops = {k: v for k, v in vars(schema.BuiltinOperator).items() if k.isupper() and k not in SKIP}
    dest.mkdir(parents=True, exist_ok=True)
    for name, code in ops.items():
        for v in range(1, MAX_VERSION + 1):
            (dest / f"{name}.{v}.tflite").write_bytes(probe_model(code, v))
    return len(ops)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--legacy-tflite", action="store_true", help="probe tflite-runtime 2.14 under emulation")
    parser.add_argument("--cache", default=".cache/arm64")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgepack-ops-") as tmp:
        count = write_probes(Path(tmp))
        script = Path(tmp) / "probe.py"
        script.write_text(PROBE)
        if args.legacy_tflite:
            from edgepack.device.emulation import build_rootfs, run_emulated

            info = build_rootfs(Path(args.cache))
            proc = run_emulated(info, [str(script), tmp, "tflite_runtime.interpreter"], timeout=3600,
                                legacy_tflite=True)
            runtime, version = "tflite-runtime", "2.14.0"
        else:
            import importlib.metadata
            import subprocess

            proc = subprocess.run([sys.executable, str(script), tmp, "ai_edge_litert.interpreter"],
                                  capture_output=True, text=True, check=False)
            runtime, version = "ai-edge-litert", importlib.metadata.version("ai-edge-litert")
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 1
    table = json.loads(proc.stdout.strip().splitlines()[-1])
    payload = {"runtime": runtime, "version": version, "ops_probed": count,
               "how": "python -m edgepack.device.op_table (one operator code per probe model)",
               "max_versions": {k: v for k, v in sorted(table.items()) if v > 0}}
    atomic_write_text(args.out, json.dumps(payload, indent=1) + "\n")
    print(f"{runtime} {version}: {len(payload['max_versions'])} of {count} builtin ops available -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
