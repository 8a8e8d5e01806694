"""Op configuration space: validation, samplers and campaign split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.features import cost_features
from models.opspace import (
    OP_TYPES,
    RETIME_MIN_EXCESS,
    ConfigError,
    adaptive_configs,
    chain_layers,
    channel_sweep_configs,
    default_campaign,
    relative_residuals,
    retime_configs,
    sample_configs,
    validate_config,
)

DOC_OP_TYPES = {
    "conv2d", "depthwise_conv2d", "fully_connected", "max_pool2d", "avg_pool2d", "mean", "add",
    "mul", "sub", "concatenation", "pad", "softmax", "hard_swish", "logistic", "tanh", "relu",
    "relu6", "lstm", "gru", "invoke_overhead", "conv_chain",
}  # fmt: skip


def test_op_types_match_internals_doc():
    assert set(OP_TYPES) == DOC_OP_TYPES


def test_validate_fills_defaults():
    config = validate_config("conv2d", {"h": 56, "cin": 64, "cout": 65, "kh": 3})
    assert config["w"] == 56 and config["kw"] == 3
    assert config["padding"] == "same" and config["activation"] == "none" and config["stride"] == 1


@pytest.mark.parametrize(
    ("op_type", "config", "field"),
    [
        ("conv2d", {"h": 56, "cin": 3, "cout": 1_000_000, "kh": 3}, "cout"),
        ("conv2d", {"h": 56, "cin": 3, "cout": 8, "kh": 3, "bogus": 1}, "bogus"),
        ("conv2d", {"h": 56, "cin": 3, "cout": 8, "kh": 3, "padding": "full"}, "padding"),
        ("conv2d", {"h": 56, "cin": 3, "cout": 8}, "kh"),
        ("conv2d", {"h": 2, "cin": 3, "cout": 8, "kh": 3, "padding": "valid"}, "kh"),
        ("conv2d", {"h": 512, "cin": 4096, "cout": 8, "kh": 1}, "cin"),
        ("fully_connected", {"cin": 4096, "cout": 4096 + 1}, "cout"),
        ("lstm", {"seq_len": 0, "cin": 3, "units": 8}, "seq_len"),
        ("add", {"h": 7, "c": 8.5}, "c"),
        ("nonsense", {}, "op_type"),
    ],
)
def test_validate_rejects_with_field(op_type, config, field):
    with pytest.raises(ConfigError) as info:
        validate_config(op_type, config)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("op_type", OP_TYPES)
def test_samples_are_valid_deterministic_and_affordable(op_type):
    configs = sample_configs(op_type, 40, seed=3)
    assert len(configs) == 40
    assert configs == sample_configs(op_type, 40, seed=3)
    for config in configs:
        assert validate_config(op_type, config) == config
        # Each sample stays cheap to profile (a few ms on one core at most).
        assert cost_features(op_type, config)["flops"] <= 4e8


def test_conv_samples_cover_real_network_widths():
    configs = sample_configs("conv2d", 600, seed=0)
    couts = [c["cout"] for c in configs]
    assert any(c % 8 != 0 for c in couts)  # pruned-looking widths
    assert sum(c & (c - 1) == 0 for c in couts) > 60  # powers of two
    assert {1, 3, 5, 7} <= {c["kh"] for c in configs}
    assert {1, 2} == {c["stride"] for c in configs}
    assert min(c["h"] for c in configs) <= 7 and max(c["h"] for c in configs) >= 112
    big = [c for c in configs if c["h"] >= 112]
    small = [c for c in configs if c["h"] <= 14]
    assert max(c["cout"] for c in big) < max(c["cout"] for c in small)


def test_conv_samples_include_network_stems():
    """First layers (RGB 3x3 at stride 2, 8-64 channels on both sides of the 16-wide panel) are
    drawn on purpose: the generic draw left the tree without a leaf for them."""
    configs = sample_configs("conv2d", 600, seed=0)
    stems = [
        c
        for c in configs
        if c["cin"] == 3 and c["kh"] == 3 and c["stride"] == 2 and 8 <= c["cout"] <= 64
    ]
    assert len(stems) >= 15
    assert any(c["cout"] <= 16 for c in stems) and any(c["cout"] > 16 for c in stems)
    assert {c["h"] for c in stems} & {96, 128, 224}


def test_conv_chain_probes_span_the_cache_in_real_widths():
    configs = sample_configs("conv_chain", 60, seed=0)
    weights_mb = [cost_features("conv_chain", c)["param_bytes"] / 1e6 for c in configs]
    # Both sides of any last-level cache from 1 to 16 MB, as far as mobile CNNs' weights go.
    assert min(weights_mb) < 1.0 and max(weights_mb) > 16.0
    assert all(c["c"] % 8 == 0 and c["m"] % 8 == 0 for c in configs)
    layers = chain_layers({"h": 3, "c": 16, "m": 48, "depth": 3})
    assert [(x["cin"], x["cout"]) for x in layers] == [(16, 48), (48, 16), (16, 48)]
    assert {(x["kh"], x["stride"], x["h"], x["w"]) for x in layers} == {(1, 1, 3, 3)}
    total = sum(cost_features("conv2d", x)["param_bytes"] for x in layers)
    chain = {"h": 3, "c": 16, "m": 48, "depth": 3}
    assert cost_features("conv_chain", chain)["param_bytes"] == total


def test_default_campaign_sums_and_prioritises():
    split = default_campaign(3000)
    assert sum(split.values()) == 3000 and set(split) == set(OP_TYPES)
    assert split["conv2d"] > split["lstm"] > split["relu"]
    assert sum(default_campaign(7).values()) == 7


def test_depthwise_is_topped_up_beyond_a_broad_campaign():
    from models.opspace import BROAD_CAMPAIGN_SAMPLES, DEPTHWISE_TOP_UP_SAMPLES

    broad = default_campaign(BROAD_CAMPAIGN_SAMPLES)
    # Up to the broad size the split is by the weights alone: the demo's is unchanged.
    assert broad["depthwise_conv2d"] < broad["conv2d"]
    big = default_campaign(BROAD_CAMPAIGN_SAMPLES + 900)
    assert sum(big.values()) == BROAD_CAMPAIGN_SAMPLES + 900
    assert big["depthwise_conv2d"] == broad["depthwise_conv2d"] + 900
    assert all(big[t] == broad[t] for t in broad if t != "depthwise_conv2d")
    # Once depthwise has its top-up, the rest is split by the weights again.
    huge = default_campaign(BROAD_CAMPAIGN_SAMPLES + 5000)
    assert DEPTHWISE_TOP_UP_SAMPLES < huge["depthwise_conv2d"] < DEPTHWISE_TOP_UP_SAMPLES + 1000
    assert huge["conv2d"] > broad["conv2d"] + 800
    # Without depthwise among the op types, the surplus is split by the weights.
    no_dw = default_campaign(BROAD_CAMPAIGN_SAMPLES + 900, ["conv2d", "add"])
    assert sum(no_dw.values()) == BROAD_CAMPAIGN_SAMPLES + 900 and no_dw["conv2d"] > no_dw["add"]


def test_channel_sweep_is_dense_in_cout():
    sweep = channel_sweep_configs(low=48, high=81)
    assert [c["cout"] for c in sweep] == list(range(48, 82))
    assert {c["cin"] for c in sweep} == {64}


def test_adaptive_configs_probe_tile_boundaries():
    samples: list[dict[str, Any]] = [
        {"op_type": "conv2d", "config": c, "latency": {"median_ms": 1.0}}
        for c in channel_sweep_configs(low=40, high=90, step=2)
    ]
    errors = [0.5 if s["config"]["cout"] in (64, 66) else 0.01 for s in samples]
    new = adaptive_configs("conv2d", samples, 10, seed=0, relative_errors=errors)
    assert len(new) == 10
    assert all(24 <= c["cout"] <= 100 for c in new)
    assert any(c["cout"] in (64, 65) for c in new)


def test_rnn_samples_cover_stacked_layers():
    for op_type in ("lstm", "gru"):
        configs = sample_configs(op_type, 60, seed=0)
        assert {c["return_sequences"] for c in configs} == {0, 1}
    assert validate_config("lstm", {"seq_len": 8, "cin": 3, "units": 8})["return_sequences"] == 0
    with pytest.raises(ConfigError) as info:
        validate_config("gru", {"seq_len": 8, "cin": 3, "units": 8, "return_sequences": 2})
    assert info.value.field == "return_sequences"


def test_dense_samples_cover_weights_beyond_the_cache():
    configs = sample_configs("fully_connected", 200, seed=0)
    param_mb = [cost_features("fully_connected", c)["param_bytes"] / 2**20 for c in configs]
    assert max(param_mb) > 24 and max(param_mb) <= 40  # MLP layers of 6-10 M weights
    assert sum(mb > 8 for mb in param_mb) >= 20  # enough to split on cache fit


def test_relative_residuals_are_positive_where_a_sample_ran_slow():
    configs = sample_configs("add", 60, seed=2)
    latency_ms = [0.01 + 1e-7 * c["h"] * c["w"] for c in configs]
    latency_ms[7] *= 1.5  # timed in a busy stretch
    samples: list[dict[str, Any]] = [
        {"op_type": "add", "config": c, "latency": {"median_ms": ms}}
        for c, ms in zip(configs, latency_ms, strict=True)
    ]
    residuals = relative_residuals("add", samples, seed=0)
    assert int(np.argmax(residuals)) == 7 and residuals[7] > 0.2
    assert relative_residuals("add", samples[:9], seed=0).tolist() == [0.0] * 9


def test_retime_configs_takes_the_slowest_above_the_threshold_once_each():
    configs = sample_configs("conv2d", 6, seed=1)
    samples = [{"op_type": "conv2d", "config": c} for c in configs]
    samples.append({"op_type": "conv2d", "config": configs[4]})  # configs[4] measured twice
    residuals = [0.30, RETIME_MIN_EXCESS / 2, 0.10, -0.4, 0.50, 0.20, 0.45]
    # Worst first; configs[4] (0.50, 0.45) already has two measurements; configs[1] is within
    # the threshold, configs[3] ran fast.
    assert retime_configs(samples, residuals, 10) == [configs[0], configs[5], configs[2]]
    assert retime_configs(samples, residuals, 2) == [configs[0], configs[5]]
    assert retime_configs(samples, residuals, 0) == []
