"""bench.canary's summary: a label that follows the host's shift scores 0 once scaled."""

from __future__ import annotations

from typing import Any

import pytest

from bench.canary import group_summary, scaled_ms


def _row(
    as_timed_ms: float, canary_then_ms: float, remeasured_ms: float, canary_now_ms: float | None
) -> dict[str, Any]:
    ratio = 1.0
    return {
        "canary_ratio": ratio,
        "as_timed_ms": as_timed_ms,
        "corrected_ms": as_timed_ms / ratio,
        "remeasured_ms": remeasured_ms,
        "canary_then_ms": canary_then_ms,
        "canary_now_ms": canary_now_ms,
        "scaled_ms": scaled_ms(as_timed_ms, canary_then_ms, canary_now_ms),
    }


def test_labels_that_follow_a_host_shift_score_zero_once_scaled() -> None:
    # The host ran 30% slower at the re-measurement, and so did every label.
    rows = [_row(ms, 0.110, ms * 1.3, 0.143) for ms in (0.2, 1.0, 3.5)]
    summary = group_summary(rows)
    assert summary["median_host_shift_pct"] == pytest.approx(30.0)
    assert summary["median_label_shift_pct"] == pytest.approx(30.0)
    assert summary["median_error_scaled_pct"] == pytest.approx(0.0, abs=1e-9)
    assert summary["median_error_as_timed_pct"] == pytest.approx(100 * 0.3 / 1.3)


def test_a_label_that_did_not_follow_the_canary_keeps_its_error_when_scaled() -> None:
    rows = [_row(1.0, 0.110, 1.0, 0.143), _row(2.0, 0.110, 2.0, None)]
    summary = group_summary(rows)
    assert summary["median_label_shift_pct"] == pytest.approx(0.0)
    assert summary["median_error_as_timed_pct"] == 0.0
    assert summary["median_error_scaled_pct"] == pytest.approx(30.0)  # only the row with a canary
