"""bench.attempt_criteria's scoring: drift, spread and label errors on hand-made attempts."""

from __future__ import annotations

from typing import Any

import pytest

from bench.attempt_criteria import criteria, label_errors


def _attempt(
    op: int, median_ms: float, *, spread_: float, drift_: float, quiet: bool = True
) -> dict[str, Any]:
    return {"op": op, "median_ms": median_ms, "spread": spread_, "drift": drift_, "quiet": quiet}


def test_labels_are_scored_against_the_ops_other_quiet_attempts() -> None:
    attempts = [
        _attempt(0, 1.0, spread_=0.1, drift_=0.0),
        _attempt(0, 1.0, spread_=0.4, drift_=0.0),  # wide but right
        _attempt(0, 1.3, spread_=0.1, drift_=0.2),  # drifted: 30% off
        _attempt(0, 2.0, spread_=0.1, drift_=0.0, quiet=False),  # disturbed: not a reference
        _attempt(1, 5.0, spread_=0.1, drift_=0.0),  # no other quiet attempt: unscored
    ]
    scored = label_errors(attempts)
    assert scored[0]["error"] == pytest.approx(1 - 1.0 / 1.15)  # against median(1.0, 1.3)
    assert scored[2]["error"] == pytest.approx(0.3)
    assert scored[4]["error"] is None
    rows = criteria(scored, max_spread=0.25)
    assert rows["all"]["attempts"] == 3  # quiet and scored
    assert rows["spread <= 0.25"]["accepted_share"] == pytest.approx(2 / 3)
    assert rows["drift <= 0.05"]["accepted_share"] == pytest.approx(2 / 3)
    assert rows["drift <= 0.05"]["rejected_error_pct"] == pytest.approx(30.0)
    # The spread limit rejects the wide attempt, whose label was as good as the narrow one's.
    assert rows["spread <= 0.25"]["rejected_error_pct"] == pytest.approx(100 * (1 - 1.0 / 1.15))


def test_canary_limits_are_judged_on_every_attempt_with_their_bias() -> None:
    attempts = [
        {**_attempt(0, 1.0, spread_=0.1, drift_=0.0), "canary_ratio": 1.02},
        {**_attempt(0, 1.0, spread_=0.1, drift_=0.0), "canary_ratio": 1.04},
        {**_attempt(0, 1.1, spread_=0.1, drift_=0.0), "canary_ratio": 1.18},  # quiet, 10% slow
        {**_attempt(0, 1.5, spread_=0.1, drift_=0.0, quiet=False), "canary_ratio": 1.6},
    ]
    rows = criteria(label_errors(attempts), max_spread=0.25)
    assert rows["all"]["attempts"] == 3  # the drift and spread rows score quiet attempts only
    strict, loose = rows["canary <= 1.1"], rows["canary <= 1.3"]
    assert strict["attempts"] == loose["attempts"] == 4  # the canary rows score all of them
    assert strict["accepted_share"] == pytest.approx(0.5)
    # The fast two against median(1.0, 1.1); the slow ones +10% and +50% against the fast two.
    assert strict["accepted_bias_pct"] == pytest.approx(100 * (1.0 / 1.05 - 1))
    assert strict["rejected_bias_pct"] == pytest.approx(30.0)
    assert loose["rejected_bias_pct"] == pytest.approx(50.0)
    assert loose["accepted_share"] == pytest.approx(0.75)
