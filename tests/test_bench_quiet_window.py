"""bench.quiet_window's protocols and figures (the measuring loop runs in the benchmark)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.quiet_window import PREVIOUS_MAX_CANARY_RATIO, protocols, spread, summarize
from fdiot.settings import Settings


def _attempt(median_ms: float, quiet: bool = True, polls: int = 1) -> dict[str, object]:
    return {"median_ms": median_ms, "quiet": quiet, "canary_polls": polls, "wall_s": 0.5}


def test_protocols_differ_in_canary_limit_and_wait(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    both = protocols(settings)
    assert both["previous"].max_canary_ratio == PREVIOUS_MAX_CANARY_RATIO
    assert both["previous"].canary_wait_s == 0.0
    assert both["current"] is settings and settings.canary_wait_s > 0


def test_summary_reports_repeat_spread_and_cost() -> None:
    rows = [
        {"previous": [_attempt(1.0), _attempt(1.3, quiet=False)], "current": [_attempt(1.0)] * 2},
        {"previous": [_attempt(2.0), _attempt(2.0)], "current": [_attempt(2.0, polls=3)] * 2},
    ]
    assert spread([1.0, 1.3]) == pytest.approx(0.3)
    previous, current = summarize(rows, "previous"), summarize(rows, "current")
    assert previous["spread_mean_pct"] == pytest.approx(15.0)
    assert previous["within_5pct_share"] == 0.5 and previous["quiet_share"] == 0.75
    assert current["spread_median_pct"] == 0.0 and current["canary_polls_mean"] == 2.0
    assert current["seconds_per_label"] == pytest.approx(0.5) and current["labels"] == 4
