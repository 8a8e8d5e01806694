"""bench.process_spread: an op's label across measurement processes against within one."""

from __future__ import annotations

import pytest

from bench import process_spread
from models.features import cost_features
from models.opspace import validate_config


def test_within_compares_repeats_in_one_process_across_compares_processes():
    # Three processes agree with themselves to 1% but one of them sits 20% above the others.
    result = process_spread.spreads([[1.00, 1.01], [1.21, 1.20], [1.01, 1.00]])
    assert result["within"] == pytest.approx((0.01 / 1.01 + 0.01 / 1.20 + 0.01 / 1.00) / 3)
    assert result["across"] == pytest.approx(0.20)
    assert result["median_ms"] == pytest.approx(1.00)


def test_one_timing_per_process_has_no_within_figure():
    result = process_spread.spreads([[2.0], [2.5]])
    assert result["within"] == 0.0 and result["across"] == pytest.approx(0.25)
    assert process_spread.spreads([]) == {"within": 0.0, "across": 0.0, "median_ms": 0.0}


def test_default_configurations_span_the_l2_edge_with_a_control():
    weights = [
        cost_features(op, config)["param_bytes"] for op, config in process_spread.DEFAULT_CONFIGS
    ]
    assert min(weights) < 1e6 < 2e6 < max(weights)
    for op, config in process_spread.DEFAULT_CONFIGS:  # every variable given and in range
        assert validate_config(op, config) == config
    assert {op for op, _ in process_spread.DEFAULT_CONFIGS} == {"fully_connected", "lstm", "conv2d"}
