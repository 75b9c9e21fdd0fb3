"""Coverage-guided fuzzing (atheris) of bundle and manifest parsing: every input must end in an EdgepackError.

The first input byte picks what the rest is: even → a whole ``.epk`` file; odd → the text of ``manifest.json``,
zipped (stored) with the seed bundle's other files, so mutations reach the manifest parser directly. Each input is
written to a private temp folder and read with :func:`read_bundle`, then every file, the labels and the golden
arrays are read back. An outcome that is not an ``EdgepackError`` is counted and its input saved under
``--crashes`` (default ``.cache/fuzz/crashes``); the run goes on.

    python tests/fuzz_bundle.py -max_total_time=20            # bounded run (make test runs one via pytest)
    python tests/fuzz_bundle.py -max_total_time=600 CORPUS/   # make fuzz

The last line printed is ``fuzz: N inputs, K non-EdgepackError outcomes``; the exit status is 1 when K > 0.
The seed bundle is built here (a fake model blob: parsing never reaches an interpreter), so nothing binary is
committed.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# zipfile and json are imported inside functions: the child imports them under atheris' instrumentation.
CRASHES = Path(os.environ.get("EDGEPACK_FUZZ_CRASHES", ".cache/fuzz/crashes"))
STORED, DEFLATED = 0, 8  # zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED


def _npy(shape: tuple[int, ...]) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) / 7, allow_pickle=False)
    return buf.getvalue()


def seed_files() -> tuple[dict, dict[str, bytes]]:
    """A minimal valid schema-2 manifest (as a dict) and the files it lists."""
    files = {
        "models/m.tflite": b"TFL3" + bytes(range(256)) * 4,
        "golden/input_0.npy": _npy((1, 4, 4, 1)),
        "golden/m_output_0.npy": _npy((1, 3)),
        "labels.txt": b"cat\ndog\nbird\n",
        "report.json": b'{"models": []}',
    }
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    spec_in = {"dtype": "float32", "name": "x", "quantization": None, "shape": [-1, 4, 4, 1]}
    spec_out = {"dtype": "float32", "name": "y", "quantization": None, "shape": [-1, 3]}
    manifest = {
        "schema": "edgepack.bundle/2", "name": "seed", "version": "1", "created": "2026-01-01T00:00:00+00:00",
        "edgepack_version": "0.1.0", "files": sha, "golden_inputs": ["golden/input_0.npy"], "labels": "labels.txt",
        "models": [{
            "bytes": len(files["models/m.tflite"]), "file": "models/m.tflite", "format": "tflite",
            "golden": {"outputs": ["golden/m_output_0.npy"], "tolerance": [{"atol": 0.01, "rtol": 0.0}]},
            "inputs": [spec_in], "outputs": [spec_out], "precision": "fp32", "recipe": None,
            "requires": {"runtime": "tflite"}, "requires_delegates": [], "sha256": sha["models/m.tflite"],
        }],
        "postprocessing": {"kind": "classification", "nms_iou": 0.5, "score_threshold": None, "softmax": True,
                           "top_k": 3},
        "preprocessing": None, "provenance": {}, "source": {"file": "m.keras", "format": "keras", "sha256": "0" * 64},
        "target": None,
    }
    return manifest, files


def zip_bytes(manifest: bytes, files: dict[str, bytes], *, method: int = DEFLATED) -> bytes:
    """A bundle's bytes from raw manifest bytes and files."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        zf.writestr("manifest.json", manifest)
        for name in sorted(files):
            zf.writestr(name, files[name])
    return buf.getvalue()


def seed_bundle(*, method: int = DEFLATED) -> bytes:
    """The seed bundle's bytes."""
    import json

    manifest, files = seed_files()
    return zip_bytes(json.dumps(manifest, indent=1).encode(), files, method=method)


def exercise(path: Path) -> None:
    """Everything a device does with a bundle short of an interpreter: verify, read each file, labels, golden."""
    from edgepack.runtimes.bundle import read_bundle

    bundle = read_bundle(path)
    for name in bundle.names():
        bundle.read(name)
    bundle.labels()
    bundle.golden_inputs()
    for entry in bundle.manifest.models:
        bundle.golden_outputs(entry)


def as_bundle(data: bytes) -> bytes:
    """Decode one fuzz input (see the module docstring)."""
    if not data or data[0] % 2 == 0:
        return data[1:]
    _, files = seed_files()
    return zip_bytes(data[1:], files, method=STORED)


class Runner:
    """Feeds inputs through :func:`exercise`; counts inputs and non-EdgepackError outcomes into ``stats``."""

    def __init__(self, workdir: Path, stats: Path) -> None:
        self.workdir = workdir
        self.inputs = 0
        self.bad = 0
        self._stats = os.open(stats, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def __call__(self, data: bytes) -> None:
        from edgepack.runtimes.errors import EdgepackError

        self.inputs += 1
        path = self.workdir / "input.epk"
        path.write_bytes(as_bundle(data))
        try:
            exercise(path)
        except EdgepackError:
            pass
        except Exception:  # the point of the harness: record anything that is not ours
            self._record(data, traceback.format_exc())
        leftovers = sorted(p.name for p in self.workdir.iterdir() if p.name != "input.epk")
        if leftovers:  # reading must never write
            self._record(data, f"reading wrote {leftovers} beside the bundle\n")
        os.pwrite(self._stats, f"{self.inputs:20d} {self.bad:20d}\n".encode(), 0)

    def _record(self, data: bytes, why: str) -> None:
        self.bad += 1
        CRASHES.mkdir(parents=True, exist_ok=True)
        name = f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
        (CRASHES / name).write_bytes(data)
        sys.stderr.write(f"non-EdgepackError (input saved as {CRASHES / name}):\n{why}")


def _child(argv: list[str], tmp: Path) -> None:
    """The fuzzing process (libFuzzer ends it with exit(), so the parent reports)."""
    import atheris

    with atheris.instrument_imports(include=["edgepack", "zipfile", "json"]):
        import json
        import zipfile  # noqa: F401

        import edgepack.runtimes.bundle  # noqa: F401
    corpus = [a for a in argv[1:] if not a.startswith("-")]
    for d in corpus:
        Path(d).mkdir(parents=True, exist_ok=True)
    if not corpus:
        corpus = [str(tmp / "corpus")]
        Path(corpus[0]).mkdir()
        argv = [*argv, corpus[0]]
    seeds = Path(corpus[0])
    if not any(seeds.iterdir()):  # seeds: the bundle (even first byte) and the manifest (odd first byte)
        (seeds / "bundle").write_bytes(b"\x00" + seed_bundle())
        (seeds / "bundle-stored").write_bytes(b"\x02" + seed_bundle(method=STORED))
        (seeds / "manifest").write_bytes(b"\x01" + json.dumps(seed_files()[0], indent=1).encode())
    work = tmp / "work"
    work.mkdir()
    atheris.Setup(argv, Runner(work, tmp / "stats"))
    atheris.Fuzz()


def main(argv: list[str]) -> int:
    """Run the fuzzer in a child; print ``fuzz: N inputs, K non-EdgepackError outcomes``; 1 when K > 0."""
    if os.environ.get("EDGEPACK_FUZZ_TMP"):
        _child(argv, Path(os.environ["EDGEPACK_FUZZ_TMP"]))
        return 0
    with tempfile.TemporaryDirectory(prefix="edgepack-fuzz-") as tmp:
        env = {**os.environ, "EDGEPACK_FUZZ_TMP": tmp}
        rc = subprocess.run([sys.executable, *argv], env=env, check=False).returncode
        stats = Path(tmp, "stats")
        inputs, bad = (int(x) for x in stats.read_text().split()) if stats.exists() else (0, 0)
    print(f"fuzz: {inputs} inputs, {bad} non-EdgepackError outcomes (fuzzer exit status {rc})", flush=True)
    return 1 if bad or rc or not inputs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
