"""bench.repeatability's summary: spreads and shares computed from repeated network timings."""

from __future__ import annotations

import pytest

from bench.repeatability import PROBE_UNITS, summarize


def test_summary_spreads_and_bands():
    times = {"vgg_w16_64": [3.0, 3.06, 3.03], "mlp_1024_2048x2": [2.5, 2.9, 2.6]}
    probes = {"vgg_w16_64": [1.25, 1.30, 1.25], "mlp_1024_2048x2": [1.25, 1.25, 1.25]}
    result = summarize(times, probes)
    rows = {r["name"]: r for r in result["networks"]}
    assert rows["vgg_w16_64"]["spread"] == pytest.approx(0.02)
    assert rows["vgg_w16_64"]["median_ms"] == 3.03
    assert rows["vgg_w16_64"]["probe_spread"] == pytest.approx(0.04)
    assert rows["mlp_1024_2048x2"]["spread"] == pytest.approx(0.16)
    summary = result["summary"]
    assert summary["rounds"] == 3
    assert summary["share_spread_over_5pct"] == 0.5
    assert summary["share_spread_over_10pct"] == 0.5
    # 16 MiB of weights in 1.25 ms: 13.4 GB/s; the slowest probe gives the lower bound.
    assert summary["probe_gb_per_s_max"] == pytest.approx(PROBE_UNITS**2 * 4 / 1.25e-3 / 1e9)
    assert summary["probe_gb_per_s_min"] < summary["probe_gb_per_s_max"]
