"""bench.learning_curve: refits on shares of the stored samples and predicts the same networks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.learning_curve import Network, budget_cut, learning_curve, thin
from models.features import OpInstance, cost_features
from models.opspace import sample_configs
from models.timemodel import fit_device_model

OVERHEAD_MS = 0.02


def _conv_ms(config: dict[str, Any]) -> float:
    return 1e-8 * cost_features("conv2d", config)["flops"] + 0.005


def _samples() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = [
        {"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": OVERHEAD_MS}}
        for _ in range(4)
    ]
    for config in sample_configs("conv2d", 120, 0):
        latency_ms = (OVERHEAD_MS + _conv_ms(config)) * rng.normal(1.0, 0.01)
        out.append({"op_type": "conv2d", "config": config, "latency": {"median_ms": latency_ms}})
    return out


def _network(name: str, configs: list[dict[str, Any]]) -> Network:
    ops = [
        OpInstance(i, "conv2d", c, cost_features("conv2d", c), "CONV_2D")
        for i, c in enumerate(configs)
    ]
    return Network(name, ops, OVERHEAD_MS + sum(_conv_ms(c) for c in configs))


def test_thin_keeps_a_seeded_share_and_every_overhead_sample() -> None:
    samples = _samples()
    half = thin(samples, 0.5, seed=1)
    assert sum(s["op_type"] == "invoke_overhead" for s in half) == 4
    assert 30 < len(half) < 100
    assert half == thin(samples, 0.5, seed=1)
    assert half != thin(samples, 0.5, seed=2)
    assert len(thin(samples, 1.0, seed=5)) == len(samples)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            thin(samples, bad, seed=0)


def test_curve_rows_refit_on_each_share() -> None:
    samples = _samples()
    networks = [
        _network("two_convs", sample_configs("conv2d", 2, 7)),
        _network("three_convs", sample_configs("conv2d", 3, 8)),
    ]
    rows = learning_curve(samples, networks, fractions=[1.0, 0.5], seeds=2, cv=3)
    assert [(r["fraction"], r["seed"]) for r in rows] == [(1.0, 0), (0.5, 0), (0.5, 1)]
    assert rows[0]["samples"] == len(samples) and rows[1]["samples"] < len(samples)
    # The whole-set row is the model the fit worker would make, on the same networks.
    model, _ = fit_device_model(samples, cv=3, seed=0)
    for net in networks:
        expected = 100.0 * (model.predict_network(net.ops).total_ms - net.measured_ms)
        assert rows[0]["errors_pct"][net.name] == pytest.approx(expected / net.measured_ms)
    assert rows[0]["networks"]["count"] == 2
    # One-pixel convs are fitted with the dense layers (dense_equivalent): counted there.
    counted = rows[0]["cv_samples"]
    assert counted["conv2d"] + counted.get("fully_connected", 0) == 120
    assert 0 < rows[0]["cv_mape_pct"]["conv2d"] < 100


def test_budget_cut_replays_the_servers_round_budgets() -> None:
    samples = [{"op_type": "add", "environment": {"measure_s": 1.0}} for _ in range(12)]
    # 8 first-round samples then 4 adaptive ones; a 6 s budget gives the first round 4 s (8/12).
    cut = budget_cut(samples, minutes=0.1, first_round_samples=8, adaptive_samples=4)
    # First round: samples until 4 s were spent (the fourth reaches it); the adaptive round then
    # keeps sampling until the whole 6 s are spent.
    assert len(cut) == 6
    half_second = [{**s, "environment": {"measure_s": 1.5}} for s in samples]
    # 1.5 + 1.5 + 1.5 = 4.5 s >= 4 s after three; adaptive: 4.5 + 1.5 = 6 s after one more.
    assert len(budget_cut(half_second, minutes=0.1, first_round_samples=8, adaptive_samples=4)) == 4
    # Without an adaptive round the first round gets the whole budget.
    assert len(budget_cut(samples, minutes=0.1, first_round_samples=12, adaptive_samples=0)) == 6
    # Samples without measure_s cost nothing: all kept.
    free = [{"op_type": "add", "config": {}} for _ in range(5)]
    assert len(budget_cut(free, minutes=0.1, first_round_samples=5, adaptive_samples=0)) == 5
