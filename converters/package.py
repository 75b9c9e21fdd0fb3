"""Assemble a bundle (manifest + files) from converted model artifacts."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.runtimes.bundle import npy_bytes, sha256_bytes, write_bundle
from edgepack.runtimes.manifest import Manifest, ModelEntry, Postprocessing, Preprocessing, SourceInfo

from .recipes import Recipe
from .sources import SourceModel
from .targets import Target
from .tflite_pipeline import ModelArtifact

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "numpy", "onnx", "onnxruntime", "tf2onnx")


def library_versions() -> dict[str, str]:
    """Versions of the conversion libraries installed here."""
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class ConvertedBundle:
    """A bundle in memory: call :meth:`save` to write the ``.epk``."""

    manifest: Manifest
    files: dict[str, bytes]
    report: dict[str, Any]

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename); returns the path."""
        return write_bundle(path, self.manifest, self.files)

    @property
    def size_bytes(self) -> int:
        """Bytes of the model file(s)."""
        return sum(m.bytes for m in self.manifest.models)


def assemble(
    *,
    name: str,
    source: SourceModel,
    target: Target,
    recipe: Recipe,
    artifacts: Sequence[ModelArtifact],
    preprocessing: Preprocessing | None,
    postprocessing: Postprocessing,
    labels: Sequence[str] | None,
    provenance: dict[str, Any],
    report: dict[str, Any],
) -> ConvertedBundle:
    """Build manifest and file map; every file gets its sha256 in ``manifest.files``."""
    import edgepack

    files: dict[str, bytes] = {}
    first = artifacts[0]
    golden_inputs = []
    for i, arr in enumerate(first.golden_inputs):
        fname = f"golden/input_{i}.npy"
        files[fname] = npy_bytes(arr)
        golden_inputs.append(fname)
    entries = []
    for art in artifacts:
        ext = "tflite" if art.requires.get("runtime") == "tflite" else "onnx"
        model_file = f"models/{name}_{art.precision}.{ext}"
        files[model_file] = art.data
        outs = []
        for k, arr in enumerate(art.golden_outputs):
            fname = f"golden/{name}_{art.precision}_output_{k}.npy"
            files[fname] = npy_bytes(arr)
            outs.append(fname)
        entries.append(ModelEntry(
            file=model_file, format=ext, sha256=sha256_bytes(art.data), bytes=len(art.data),
            precision=art.precision, inputs=art.inputs, outputs=art.outputs, golden=art.golden(outs),
            requires=art.requires,
        ))
    if labels:
        files["labels.txt"] = ("\n".join(labels) + "\n").encode("utf-8")
    files["report.json"] = json.dumps(report, indent=2, sort_keys=True, default=str).encode("utf-8")
    manifest = Manifest(
        name=name, version="1", created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        edgepack_version=edgepack.__version__,
        source=SourceInfo(format=source.kind, file=source.file_name, sha256=source.sha256),
        models=tuple(entries), golden_inputs=tuple(golden_inputs),
        files={n: sha256_bytes(b) for n, b in files.items()},
        target=target.to_json(), recipe=recipe.to_json(), preprocessing=preprocessing,
        postprocessing=postprocessing, labels="labels.txt" if labels else None,
        provenance={"converter": "edgepack", "libraries": library_versions(),
                    "host": f"{platform.system()} {platform.machine()} python {platform.python_version()}",
                    **provenance},
    )
    return ConvertedBundle(manifest=manifest, files=files, report=report)
