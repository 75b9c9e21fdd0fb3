"""Assemble a bundle (manifest + files) from converted model artifacts."""

from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtimes.bundle import npy_bytes, sha256_bytes, write_bundle
from edgepack.runtimes.manifest import Manifest, ModelEntry, Postprocessing, Preprocessing, SourceInfo
from edgepack.runtimes.recipe import Precision, Recipe
from edgepack.runtimes.target import Target
from edgepack.runtimes.versions import EDGEPACK_VERSION, installed_versions

from .artifact import ModelArtifact
from .errors import ConversionError
from .formats.base import Source

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "numpy", "onnx", "onnxruntime", "tf2onnx",
             "torch", "onnxscript")


def library_versions() -> dict[str, str]:
    """Versions of the conversion libraries installed here."""
    return installed_versions(LIBRARIES)


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

    def add_report(self, key: str, value: Any) -> None:
        """Set ``report[key]`` and rewrite ``report.json`` (and its checksum in the manifest) to match."""
        self.report[key] = value
        data = report_bytes(self.report)
        self.files["report.json"] = data
        self.manifest = replace(self.manifest, files={**self.manifest.files, "report.json": sha256_bytes(data)})


def report_bytes(report: dict[str, Any]) -> bytes:
    """``report.json`` as written in every bundle."""
    return json.dumps(report, indent=2, sort_keys=True, default=str).encode("utf-8")


def _check_shared_golden_inputs(artifacts: Sequence[ModelArtifact]) -> None:
    """A bundle stores one set of golden inputs: every model (tflite and onnx variants) must take the same."""
    first = artifacts[0].golden_inputs
    for art in artifacts[1:]:
        same = len(art.golden_inputs) == len(first) and all(
            a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b) for a, b in zip(art.golden_inputs, first)
        )
        if not same:
            raise ConversionError(
                f"the {art.format} {art.precision} model does not take the same golden inputs as "
                "the first model (layout, dtype or values differ); build every variant from the same source with "
                "the same golden sample and float32 I/O to put them in one bundle."
            )


def model_stem(name: str) -> str:
    """``name`` without a trailing precision (``x_full_int8`` / ``x-full-int8`` → ``x``): the model files add
    their own, so a bundle converted from ``x_full_int8.tflite`` holds ``models/x_full_int8.tflite``."""
    lowered = name.lower()
    for value in sorted((p.value for p in Precision), key=len, reverse=True):
        for suffix in {f"_{value}", f"-{value}", f"-{value.replace('_', '-')}", f"_{value.replace('_', '-')}"}:
            if lowered.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
    return name


def assemble(
    *,
    name: str,
    source: Source,
    target: Target,
    recipe: Recipe | Sequence[Recipe],
    artifacts: Sequence[ModelArtifact],
    preprocessing: Preprocessing | None,
    postprocessing: Postprocessing,
    labels: Sequence[str] | None,
    provenance: dict[str, Any],
    report: dict[str, Any],
) -> ConvertedBundle:
    """Build manifest and file map; every file gets its sha256 in ``manifest.files``; ``recipe`` (one, or one
    per artifact in order) is recorded in each model entry."""
    recipes = [recipe] * len(artifacts) if isinstance(recipe, Recipe) else list(recipe)
    if len(recipes) != len(artifacts):
        raise ConversionError(f"{len(artifacts)} models but {len(recipes)} recipes; pass one recipe per model.")
    files: dict[str, bytes] = {}
    first = artifacts[0]
    golden_inputs = []
    for i, arr in enumerate(first.golden_inputs):
        fname = f"golden/input_{i}.npy"
        files[fname] = npy_bytes(arr)
        golden_inputs.append(fname)
    _check_shared_golden_inputs(artifacts)
    entries = []
    stem = model_stem(name)
    for art, recipe in zip(artifacts, recipes):
        model_file = f"models/{stem}_{art.precision}.{art.extension}"
        if model_file in files:
            raise ConversionError(f"two {art.format} models of precision {art.precision} in one bundle; keep one.")
        files[model_file] = art.data
        outs = []
        for k, arr in enumerate(art.golden_outputs):
            fname = f"golden/{stem}_{art.format}_{art.precision}_output_{k}.npy"
            files[fname] = npy_bytes(arr)
            outs.append(fname)
        entries.append(ModelEntry(
            file=model_file, format=art.format, sha256=sha256_bytes(art.data), bytes=len(art.data),
            precision=art.precision, inputs=art.inputs, outputs=art.outputs, golden=art.golden(outs),
            requires=art.requires, recipe=recipe, requires_delegates=art.requires_delegates,
        ))
    if labels:
        files["labels.txt"] = ("\n".join(labels) + "\n").encode("utf-8")
    files["report.json"] = report_bytes(report)
    manifest = Manifest(
        name=name, version="1", created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        edgepack_version=EDGEPACK_VERSION,
        source=SourceInfo(format=source.kind, file=source.file_name, sha256=source.sha256),
        models=tuple(entries), golden_inputs=tuple(golden_inputs),
        files={n: sha256_bytes(b) for n, b in files.items()},
        target=target, preprocessing=preprocessing,
        postprocessing=postprocessing, labels="labels.txt" if labels else None,
        provenance={"converter": "edgepack", "libraries": library_versions(),
                    "host": f"{platform.system()} {platform.machine()} python {platform.python_version()}",
                    **provenance},
    )
    return ConvertedBundle(manifest=manifest, files=files, report=report)
