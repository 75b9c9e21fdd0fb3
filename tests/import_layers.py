"""Run import-linter's contracts (``[tool.importlinter]`` in pyproject.toml) on the source tree.

The distribution maps ``edgepack`` to sdk/ and its sub-packages to converters/, runtimes/, device_tests/
(``[tool.setuptools.package-dir]``); grimp, the graph builder under import-linter, needs one package directory.
So the ``.py`` files are copied into a temporary tree laid out as installed, and ``lint-imports`` reads that.

    python tests/import_layers.py        # exit status of lint-imports; `make lint` and `make test` run it
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]


def lay_out(dest: Path) -> Path:
    """Copy every mapped package's ``.py`` files into ``dest`` as setuptools would install them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        src = ROOT / folder
        target = dest.joinpath(*package.split("."))
        for path in src.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            out = target / path.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
    return dest


def main() -> int:
    """Lay the tree out, run ``lint-imports`` on it, return its exit status."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        print("lint-imports is not installed: pip install -e '.[dev]' (import-linter)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgepack-imports-") as tmp:
        tree = lay_out(Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cache = ROOT / ".cache" / "import-linter"
        return subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-logo", "--cache-dir",
                               str(cache)],
                              cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
