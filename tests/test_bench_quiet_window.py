"""bench.quiet_window's protocols and figures (the measuring loop runs in the benchmark)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.quiet_window import protocols, spread, summarize
from fdiot.settings import Settings


def _attempt(median_ms: float, quiet: bool = True, polls: int = 1) -> dict[str, object]:
    return {"median_ms": median_ms, "quiet": quiet, "canary_polls": polls, "wall_s": 0.5}


def test_protocols_differ_in_canary_limit_and_wait(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    both = protocols(settings)
    assert both["no_wait"].canary_wait_s == 0.0
    assert both["no_wait"].max_canary_ratio > both["wait"].max_canary_ratio
    # The waiting protocol is the default one (the suite's environment overrides the limit).
    fields = Settings.model_fields
    assert both["wait"].max_canary_ratio == fields["max_canary_ratio"].default
    assert both["wait"].canary_wait_s == fields["canary_wait_s"].default > 0


def test_summary_reports_repeat_spread_and_cost() -> None:
    rows = [
        {"no_wait": [_attempt(1.0), _attempt(1.3, quiet=False)], "wait": [_attempt(1.0)] * 2},
        {"no_wait": [_attempt(2.0), _attempt(2.0)], "wait": [_attempt(2.0, polls=3)] * 2},
    ]
    assert spread([1.0, 1.3]) == pytest.approx(0.3)
    previous, current = summarize(rows, "no_wait"), summarize(rows, "wait")
    assert previous["spread_mean_pct"] == pytest.approx(15.0)
    assert previous["spread_after_first_round_median_pct"] == 0.0  # one round left: no spread
    assert previous["within_5pct_share"] == 0.5 and previous["quiet_share"] == 0.75
    assert current["spread_median_pct"] == 0.0 and current["canary_polls_mean"] == 2.0
    assert current["seconds_per_label"] == pytest.approx(0.5) and current["labels"] == 4
