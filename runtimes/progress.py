"""One progress bar: rich's (transient) when rich is installed and it is wanted, otherwise nothing.

>>> with ProgressBar(len(files), "reading calibration data", enabled=sys.stderr.isatty()) as bar:
...     for f in files:
...         bar.advance()

rich is imported only when a bar is shown, so the runtime imports without it.
"""

from __future__ import annotations

import importlib.util
from types import TracebackType
from typing import Any


class ProgressBar:
    """A single progress bar, used as a context manager; a no-op when disabled or without rich.

    Args:
        total: number of steps (None: unknown, the bar only counts).
        description: text shown before the bar.
        enabled: False shows nothing (e.g. ``sys.stderr.isatty()`` for command lines).
    """

    def __init__(self, total: int | None, description: str, *, enabled: bool = True) -> None:
        self.total = total
        self.description = description
        self.enabled = enabled and importlib.util.find_spec("rich") is not None
        self._bar: Any = None
        self._task: Any = None

    @property
    def shown(self) -> bool:
        """True while a rich bar is on screen."""
        return self._bar is not None

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more steps done."""
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def describe(self, text: str) -> None:
        """Replace the text shown before the bar."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def update(self, completed: int, *, total: int | None = None, description: str | None = None) -> None:
        """Set the steps done (and optionally the total and the text), e.g. from a ``(phase, done, total)`` hook."""
        if self._bar is not None:
            changes: dict[str, Any] = {"completed": completed}
            if total is not None:
                changes["total"] = total
            if description is not None:
                changes["description"] = description
            self._bar.update(self._task, **changes)

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._task = self._bar.add_task(self.description, total=self.total)
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = self._task = None
