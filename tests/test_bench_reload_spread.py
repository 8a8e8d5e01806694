"""bench.reload_spread: the reload rate's bootstrap spread within one campaign."""

from __future__ import annotations

import numpy as np

from bench import reload_spread
from models.timemodel import ChainProbe, DeviceTimeModel

CACHE_BYTES = 2e6


def _probe(
    layers_ms: float, rate_ps: float, layer_bytes: float = 1e6, depth: int = 4
) -> ChainProbe:
    """A probe beyond the cache (depth layers of layer_bytes) paying rate_ps per weight byte."""
    params = [layer_bytes] * depth
    return ChainProbe(layers_ms + rate_ps * 1e-9 * sum(params), layers_ms, params, True)


def _model() -> DeviceTimeModel:
    return DeviceTimeModel({}, 0.01, cache_bytes=CACHE_BYTES, dram_ms_per_param_byte=3e-8)


def test_probes_that_agree_give_a_tight_rate():
    probes = [_probe(0.5 + 0.1 * i, 20.0) for i in range(8)]
    rates = reload_spread.bootstrap_rates(probes, _model(), resamples=50)
    assert len(rates) == 50
    assert np.allclose(rates, 20.0)


def test_probes_that_disagree_spread_the_rate_and_probes_within_the_cache_stay():
    probes = [_probe(0.5, rate) for rate in (10.0, 15.0, 20.0, 25.0, 30.0, 35.0)]
    within = ChainProbe(0.2, 0.2, [0.4e6, 0.4e6], True)  # 0.8 MB: nothing reloaded
    rates = reload_spread.bootstrap_rates([*probes, within], _model(), resamples=200)
    assert 10.0 <= min(rates) < 20.0 < 25.0 < max(rates) <= 35.0
    assert np.std(rates) > 1.0


def test_no_cache_size_no_rate():
    model = DeviceTimeModel({}, 0.01)
    assert reload_spread.bootstrap_rates([_probe(0.5, 20.0)], model, resamples=10) == []
