"""Options and fixtures of the on-device suite. Imports only numpy and edgepack.runtimes."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path
from typing import Any

import pytest

from edgepack.runtimes import Bundle, Session, load, read_bundle
from edgepack.runtimes.ladder import DEFAULT_DELEGATES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgepack", "edgepack device tests")
    group.addoption("--bundle", required=True, help="path of the .epk bundle to test")
    group.addoption("--delegates", default=None,
                    help=f"delegate ladder (default: the target's, else {','.join(DEFAULT_DELEGATES)})")
    group.addoption("--backend", default=None, help="force a runtime backend (litert, tflite-runtime, onnxruntime)")
    group.addoption("--threads", type=int, default=None, help="interpreter threads")
    group.addoption("--stability-runs", type=int, default=1000, help="runs of the stability test")
    group.addoption("--budget-from-target", action="store_true", help="check latency/memory against the target")
    group.addoption("--enforce-budget", action="store_true", help="fail (not only report) when over budget")


def _delegates(config: pytest.Config, bundle: Bundle) -> tuple[str, ...]:
    opt = config.getoption("--delegates")
    if opt:
        return tuple(d.strip() for d in opt.split(",") if d.strip())
    return tuple((bundle.manifest.target.delegates if bundle.manifest.target else None) or DEFAULT_DELEGATES)


@pytest.fixture(scope="session")
def bundle_path(pytestconfig: pytest.Config) -> Path:
    return Path(pytestconfig.getoption("--bundle"))


@pytest.fixture(scope="session")
def bundle(bundle_path: Path) -> Bundle:
    return read_bundle(bundle_path)


@pytest.fixture(scope="session")
def delegates(pytestconfig: pytest.Config, bundle: Bundle) -> tuple[str, ...]:
    return _delegates(pytestconfig, bundle)


@pytest.fixture(scope="session")
def load_options(pytestconfig: pytest.Config) -> dict[str, Any]:
    return {"backend": pytestconfig.getoption("--backend"), "num_threads": pytestconfig.getoption("--threads")}


@pytest.fixture(scope="session")
def session(bundle: Bundle, delegates: tuple[str, ...], load_options: dict[str, Any]) -> Session:
    return load(bundle, delegates=delegates, **load_options)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


_SUMMARY: dict[str, Any] = {}


def record(key: str, value: Any) -> None:
    """Keep a figure for the end-of-run summary."""
    _SUMMARY[key] = value


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("edgepack device report")
    terminalreporter.write_line(
        f"platform.machine() = {platform.machine()!r}, python {platform.python_version()}, {platform.system()}"
    )
    for key, value in _SUMMARY.items():
        terminalreporter.write_line(f"{key}: {value}")
