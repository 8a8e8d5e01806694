"""bench.memory_state: does a network's time follow a reload probe rather than the canary?"""

from __future__ import annotations

import pytest

from bench import memory_state


def test_correlation_needs_three_points_and_two_moving_series():
    assert memory_state.correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert memory_state.correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert memory_state.correlation([1.0, 2.0], [1.0, 2.0]) is None
    assert memory_state.correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) is None
    assert memory_state.correlation([1.0, 2.0, 3.0], [1.0, 2.0]) is None


def test_a_network_that_follows_the_probe_and_not_the_canary():
    rounds = {
        "cnn": {
            "network_ms": [2.0, 2.2, 2.1, 2.4],
            "probe_ms": [1.0, 1.1, 1.05, 1.2],  # the probe moved as the network did
            "canary_ms": [0.10, 0.10, 0.11, 0.10],
        }
    }
    (row,) = memory_state.summarize(rounds, layers_ms=0.8)
    assert row["r_probe"] == pytest.approx(1.0)
    assert row["r_canary"] is not None and abs(row["r_canary"]) < 0.5
    assert row["network_spread"] == pytest.approx(0.2)
    assert row["probe_spread"] == pytest.approx(0.2)
    assert row["canary_spread"] == pytest.approx(0.1)
    assert row["probe_extra"] == pytest.approx([0.25, 0.375, 0.3125, 0.5])
    assert row["network_ms"] == rounds["cnn"]["network_ms"]


def test_runs_are_compared_by_their_medians():
    def run(network, probe, canary):
        return {"networks": [{"name": "cnn", "network_ms": network, "probe_ms": probe,
                              "canary_ms": canary}]}  # fmt: skip

    runs = [
        run([2.0, 2.1, 2.0], [1.0, 1.0, 1.1], [0.1, 0.1, 0.1]),
        run([2.4, 2.4, 2.5], [1.2, 1.2, 1.3], [0.1, 0.1, 0.1]),
        run([2.2, 2.2, 2.3], [1.1, 1.1, 1.1], [0.1, 0.1, 0.11]),
    ]
    (row,) = memory_state.across_runs(runs)
    assert row["network_ms"] == [2.0, 2.4, 2.2] and row["probe_ms"] == [1.0, 1.2, 1.1]
    assert row["network_spread"] == pytest.approx(0.2)
    assert row["r_probe"] == pytest.approx(1.0)
    assert row["r_canary"] is None  # the canary's medians did not move
