"""bench.cold_labels' figures (the timing loop runs in the benchmark)."""

from __future__ import annotations

import pytest

from bench.cold_labels import layer_name, summarize


def test_summary_gives_each_layer_and_mode_its_spread_of_window_medians() -> None:
    rows = [
        {"layer": layer_name(4096, 1024), "mode": mode, "median_ms": ms}
        for mode, values in (("warm", [0.35, 0.70, 0.40, 0.65, 0.50]), ("cold", [1.0] * 4 + [1.02]))
        for ms in values
    ]
    summary = summarize(rows)
    assert set(summary) == {"4096x1024"} and set(summary["4096x1024"]) == {"warm", "cold"}
    warm, cold = summary["4096x1024"]["warm"], summary["4096x1024"]["cold"]
    assert warm["rounds"] == 5 and warm["p90_over_p10"] > 1.5
    assert cold["p50_ms"] == pytest.approx(1.0) and cold["p90_over_p10"] < 1.02


def test_too_few_windows_give_a_count_only() -> None:
    rows = [{"layer": "a", "mode": "cold", "median_ms": 1.0}]
    assert summarize(rows) == {"a": {"cold": {"rounds": 1}}}
