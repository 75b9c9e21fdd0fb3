"""Golden outputs match on every delegate that loads; the fallback log explains the others."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgepack.runtimes import Bundle, NoUsableDelegateError, Session, load
from edgepack.runtimes.ladder import compare

from .conftest import record


def test_every_delegate_that_loads_matches_golden(bundle: Bundle, delegates: tuple[str, ...],
                                                   load_options: dict[str, Any]) -> None:
    working, explained = [], []
    for name in delegates:
        try:
            session = load(bundle, delegates=(name,), **load_options)
        except NoUsableDelegateError as exc:
            assert name in str(exc)  # the error names the delegate and why it was dropped
            explained.append(f"{name}: {str(exc).splitlines()[1].strip()}")
            continue
        outputs = session.run(bundle.golden_inputs())
        ok, err, why = compare(outputs, bundle.golden_outputs(session.model), session.model.golden.tolerance)
        assert ok, f"{name}: {why}"
        working.append(f"{name} (max |err| {err:.3g}, {session.delegated_partitions} partitions)")
        session.close()
    record("delegates that match golden", ", ".join(working) or "none")
    for line in explained:
        record("  dropped", line)
    assert working, "no delegate could run the bundle: " + "; ".join(explained)


def test_chosen_delegate_is_explained(session: Session) -> None:
    assert session.fallback_log[-1].outcome == "selected"
    assert session.fallback_log[-1].delegate == session.delegate
    for attempt in session.fallback_log[:-1]:
        assert attempt.outcome != "selected" and attempt.reason
    record("session", session.explain())


def test_golden_matches_on_chosen_delegate(session: Session, bundle: Bundle) -> None:
    outputs = session.run(bundle.golden_inputs())
    golden = bundle.golden_outputs(session.model)
    for out, ref in zip(outputs, golden):
        assert out.shape == ref.shape and np.all(np.isfinite(out))
    ok, _, why = compare(outputs, golden, session.model.golden.tolerance)
    assert ok, why


@pytest.mark.parametrize("bad", ["shape", "dtype", "count"])
def test_bad_inputs_get_typed_errors(session: Session, bad: str) -> None:
    from edgepack.runtimes import InputSpecError

    x = session.bundle.golden_inputs()
    if bad == "shape":
        x = [np.zeros((*a.shape[:-1], a.shape[-1] + 3), a.dtype) for a in x]
    elif bad == "dtype":
        x = [np.zeros(a.shape, np.bool_) for a in x]
    else:
        x = [*x, x[0]]
    with pytest.raises(InputSpecError):
        session.run(x)
