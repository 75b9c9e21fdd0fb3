"""The bundle verifies here, the runtime is small, and the I/O spec is what the manifest says."""

from __future__ import annotations

import platform
import sys

import numpy as np

from edgepack.runtimes import Bundle, Session

from .conftest import record

HEAVY = ("tensorflow", "keras", "torch", "onnx", "tf2onnx")


def test_bundle_verifies(bundle: Bundle) -> None:
    # read_bundle already checked schema, names, sizes and every sha256; check what it promised.
    m = bundle.manifest
    assert m.schema == "edgepack.bundle/2"
    assert set(m.files) == set(bundle.names())
    record("bundle", f"{m.name} v{m.version}: {', '.join(f'{e.file} ({e.precision})' for e in m.models)}")


def test_runtime_does_not_import_heavy_libraries(session: Session) -> None:
    session.run(session.bundle.golden_inputs())
    loaded = [m for m in HEAVY if m in sys.modules]
    assert not loaded, f"the runtime pulled in {loaded}"
    record("machine", platform.machine())
    record("runtime", f"{session.backend} {session.backend_version}, numpy {np.__version__}")


def test_io_spec_matches_manifest(session: Session) -> None:
    entry = session.model
    assert len(session.inputs) == len(entry.inputs) and len(session.outputs) == len(entry.outputs)
    for got, want in zip(session.inputs + session.outputs, entry.inputs + entry.outputs):
        assert got.name == want.name
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        assert (got.quantization is None) == (want.quantization is None)
        if got.quantization and want.quantization:
            assert np.isclose(got.quantization.scale, want.quantization.scale)
            assert got.quantization.zero_point == want.quantization.zero_point
