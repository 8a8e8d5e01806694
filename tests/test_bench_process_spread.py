"""bench.process_spread: an op's label across measurement processes against within one."""

from __future__ import annotations

import pytest

from bench import process_spread
from models.features import cost_features
from models.opspace import validate_config


def test_reload_and_process_spread_are_told_apart_from_retiming_one_load():
    # Process 2's first load sits 20% above the rest; each load agrees with itself to 1%.
    result = process_spread.spreads(
        [
            [[1.00, 1.01], [1.00, 1.00]],
            [[1.21, 1.20], [1.00, 1.01]],
            [[1.01, 1.00], [1.00, 1.00]],
        ]
    )
    assert result["same_load"] == pytest.approx((2 * 0.01 / 1.01 + 0.01 / 1.20 + 0.01) / 6)
    assert result["reload"] == pytest.approx((0.0 + 0.20 + 0.0) / 3)
    assert result["across"] == pytest.approx(0.20)
    assert result["best_of_loads"] == pytest.approx(0.0)
    assert result["median_ms"] == pytest.approx(1.00)


def test_one_timing_per_process_has_no_same_load_or_reload_figure():
    result = process_spread.spreads([[[2.0]], [[2.5]]])
    assert result["same_load"] == 0.0 and result["reload"] == 0.0
    assert result["across"] == pytest.approx(0.25) == result["best_of_loads"]
    assert process_spread.spreads([]) == {
        "same_load": 0.0,
        "reload": 0.0,
        "across": 0.0,
        "best_of_loads": 0.0,
        "median_ms": 0.0,
    }


def test_default_configurations_span_the_l2_edge_with_a_control():
    weights = [
        cost_features(op, config)["param_bytes"] for op, config in process_spread.DEFAULT_CONFIGS
    ]
    assert min(weights) < 1e6 < 2e6 < max(weights)
    for op, config in process_spread.DEFAULT_CONFIGS:  # every variable given and in range
        assert validate_config(op, config) == config
    assert {op for op, _ in process_spread.DEFAULT_CONFIGS} == {"fully_connected", "lstm", "conv2d"}


def test_anon_huge_pages_read_from_the_process_itself() -> None:
    import os

    own = process_spread.anon_huge_pages_kb(os.getpid())
    assert isinstance(own, int) and own >= 0  # Linux 4.14+ has smaps_rollup
    assert process_spread.anon_huge_pages_kb(None) is None
    assert process_spread.anon_huge_pages_kb(2**31 - 1) is None  # no such process


def test_near_cache_summary_averages_only_the_configurations_in_the_band() -> None:
    rows = [
        {
            "param_bytes": 0.4e6,
            "same_load": 0.0,
            "reload": 0.0,
            "across": 0.9,
            "best_of_loads": 0.9,
        },
        {
            "param_bytes": 1.0e6,
            "same_load": 0.01,
            "reload": 0.1,
            "across": 0.2,
            "best_of_loads": 0.1,
        },
        {
            "param_bytes": 3.0e6,
            "same_load": 0.03,
            "reload": 0.3,
            "across": 0.4,
            "best_of_loads": 0.3,
        },
        {
            "param_bytes": 3.1e6,
            "same_load": 0.0,
            "reload": 0.0,
            "across": 0.9,
            "best_of_loads": 0.9,
        },
    ]
    summary = process_spread.near_cache_summary(rows, 2e6, (0.5, 1.5))
    assert summary["configs"] == 2
    assert summary["across_mean"] == pytest.approx(0.3)
    assert summary["best_of_loads_mean"] == pytest.approx(0.2)
    assert summary["reload_mean"] == pytest.approx(0.2)
    assert summary["same_load_mean"] == pytest.approx(0.02)
    empty = process_spread.near_cache_summary(rows, 100.0, (0.5, 1.5))
    assert empty["configs"] == 0 and empty["across_mean"] is None
