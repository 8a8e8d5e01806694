"""DeviceTimeModel on synthetic samples: fitting, CV metrics, network prediction, export."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from models.evaluation import fit_baselines, mape, within_fraction
from models.features import OpInstance, cost_features
from models.opspace import chain_layers, channel_sweep_configs, sample_configs
from models.plots import conv_channel_plot_png
from models.timemodel import (
    CHAIN_EXTRA_SEGMENTS,
    MIN_RELOAD_PROBES,
    SPEED_STATE_WINDOW,
    DeviceTimeModel,
    build_design,
    canary_floor_ms,
    chain_extra_from_probes,
    chain_probe_times,
    chain_reload_bytes,
    dense_equivalent,
    estimate_chain_extra,
    estimate_reload_rate,
    estimate_weight_streaming,
    fastest_per_config,
    feature_names,
    fit_device_model,
    fit_tree,
    is_quiet,
    monotone_segments,
    op_feature_vector,
    quiet_samples,
    robust_weights,
    speed_at,
    speed_states_ms,
    split_feature_names,
    strided_pointwise,
    tap_steps,
    uses_narrow_gemm,
    working_set_bytes,
)

OVERHEAD_MS = 0.02


def _latency(op_type, config, rng):
    f = cost_features(op_type, config)
    if op_type == "invoke_overhead":
        return OVERHEAD_MS
    if op_type == "conv2d":  # 32-wide output-channel tiles, as on the evidence host
        t = 1e-8 * f["flops"] * np.ceil(config["cout"] / 32) * 32 / config["cout"]
    else:
        t = 1e-8 * f["flops"] + 1e-7 * (f["input_bytes"] + f["output_bytes"])
    return (OVERHEAD_MS + 0.005 + t) * rng.normal(1.0, 0.01)


def _samples(counts, seed=0, extra=()):
    rng = np.random.default_rng(seed)
    out = []
    configs = [(op, c) for op, n in counts.items() for c in sample_configs(op, n, seed)]
    for op_type, config in [*configs, *extra]:
        out.append({
            "op_type": op_type, "config": config, "features": cost_features(op_type, config),
            "latency": {"median_ms": _latency(op_type, config, rng)},
        })  # fmt: skip
    return out


@pytest.fixture(scope="module")
def samples():
    sweep = [("conv2d", c) for c in channel_sweep_configs(low=40, high=90)]
    return _samples({"conv2d": 150, "add": 40, "invoke_overhead": 5}, extra=sweep)


@pytest.fixture(scope="module")
def fitted(samples):
    return fit_device_model(samples, cv=3)


def test_fit_reports_cv_metrics(samples, fitted):
    model, metrics = fitted
    assert model.overhead_ms == pytest.approx(OVERHEAD_MS)
    conv = metrics["per_op_type"]["conv2d"]
    # 150 drawn + 51 swept convs, less those with one output pixel (fitted as dense layers).
    one_pixel = sum(dense_equivalent(s["op_type"], s["config"]) is not None for s in samples)
    assert metrics["convs_fitted_as_dense"] == one_pixel
    assert conv["samples"] == 201 - one_pixel
    assert conv["cv_mape"] < 0.05 and conv["within_10pct"] > 0.9
    assert "add" in metrics["per_op_type"] and "invoke_overhead" not in metrics["per_op_type"]


def test_repeated_cv_averages_splits_with_different_seeds(samples, fitted):
    _, one = fitted
    adds = [s for s in samples if s["op_type"] in ("add", "invoke_overhead")]
    _, repeated = fit_device_model(adds, cv=3, cv_repeats=3)
    _, single = fit_device_model(adds, cv=3)
    add = repeated["per_op_type"]["add"]
    assert len(add["cv_mape_splits"]) == 3 and len(set(add["cv_mape_splits"])) > 1
    assert add["cv_mape"] == pytest.approx(np.mean(add["cv_mape_splits"]))
    # The first split is the seed-0 split a single cross-validation reports.
    assert add["cv_mape_splits"][0] == pytest.approx(single["per_op_type"]["add"]["cv_mape"])
    assert one["per_op_type"]["add"]["cv_mape_splits"] == [one["per_op_type"]["add"]["cv_mape"]]


def test_predicts_the_channel_step(fitted):
    model, _ = fitted
    base = {"h": 56, "w": 56, "cin": 64, "kh": 3, "kw": 3}
    t48, t64, t65 = (model.predict_op("conv2d", {**base, "cout": c})[0] for c in (48, 64, 65))
    assert t64 == pytest.approx(t48, rel=0.05)
    assert t65 > 1.3 * t64


def test_network_prediction_sums_ops_and_handles_fusions(fitted):
    model, _ = fitted
    conv = {"h": 28, "w": 28, "cin": 16, "cout": 32, "kh": 3, "kw": 3, "stride": 1,
            "padding": "valid", "activation": "none"}  # fmt: skip
    relu = {"h": 26, "w": 26, "c": 32}
    ops = [
        OpInstance(0, "pad", {"h": 26, "w": 26, "c": 16, "pad": 1}, {"flops": 0.0,
                   "input_bytes": 43264.0, "output_bytes": 50176.0, "param_bytes": 0.0}, "PAD",
                   extra={"inputs": [0, 1], "outputs": [2]}),
        OpInstance(1, "conv2d", conv, cost_features("conv2d", conv), "CONV_2D",
                   extra={"inputs": [2, 3, 4], "outputs": [5]}),
        OpInstance(2, "relu", relu, cost_features("relu", relu), "RELU",
                   extra={"inputs": [5], "outputs": [6]}),
        OpInstance(3, "reshape", {"h": 1, "w": 676, "c": 32}, {"flops": 0.0,
                   "input_bytes": 86528.0, "output_bytes": 86528.0, "param_bytes": 0.0},
                   "RESHAPE", fallback=True, extra={"inputs": [6], "outputs": [7]}),
        OpInstance(4, "gather", {"h": 1, "w": 1, "c": 32}, {"flops": 32.0, "input_bytes": 128.0,
                   "output_bytes": 128.0, "param_bytes": 0.0}, "GATHER", fallback=True,
                   extra={"inputs": [7], "outputs": [8]}),
    ]  # fmt: skip
    net = model.predict_network(ops)
    assert net.overhead_ms == model.overhead_ms
    assert net.total_ms == pytest.approx(net.overhead_ms + sum(p.predicted_ms for p in net.ops))
    by_index = {p.index: p for p in net.ops}
    assert by_index[0].predicted_ms == 0.0 and "pad" in by_index[0].note
    assert by_index[2].predicted_ms == 0.0 and "clamp" in by_index[2].note
    assert by_index[1].predicted_ms > 0 and not by_index[1].fallback
    assert by_index[4].fallback and by_index[4].predicted_ms > 0
    assert json.loads(json.dumps(net.to_dict()))["ops"][1]["op_type"] == "conv2d"


def test_json_round_trip_and_rules(fitted, samples):
    model, _ = fitted
    again = DeviceTimeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    config = samples[0]["config"]
    assert again.predict_op("conv2d", config) == model.predict_op("conv2d", config)
    assert "flops_cout_tile32" in model.rules("conv2d")
    assert "no tree" in model.rules("lstm")
    assert set(model.to_dict()["op_types"]) == {"conv2d", "add"}


def test_baselines_share_the_interface(samples):
    ops = [OpInstance(0, "conv2d", samples[0]["config"], samples[0]["features"], "CONV_2D")]
    baselines = fit_baselines(samples, cv=2)
    assert set(baselines) == {"flops", "linear", "random_forest", "gradient_boosting", "paper_tree"}
    for model in baselines.values():
        assert model.predict_network(ops).total_ms > 0


def test_baselines_leave_the_disturbed_samples_out_like_the_tree(samples):
    # Every other conv sample 4x slow and flagged: a baseline fitted on them would predict ~2.5x.
    marked = [
        {
            **s,
            "latency": {"median_ms": 4 * s["latency"]["median_ms"]},
            "environment": {"quiet": False},
        }
        if s["op_type"] == "conv2d" and i % 2 == 0
        else s
        for i, s in enumerate(samples)
    ]
    clean, _ = quiet_samples(marked)
    assert len(clean) < len(marked)
    conv = next(s for s in clean if s["op_type"] == "conv2d")
    ops = [OpInstance(0, "conv2d", conv["config"], conv["features"], "CONV_2D")]
    on_marked = fit_baselines(marked, cv=2)["flops"].predict_network(ops).total_ms
    on_clean = fit_baselines(clean, cv=2)["flops"].predict_network(ops).total_ms
    assert on_marked == pytest.approx(on_clean, rel=1e-9)


def test_random_forest_baseline_is_unbiased_in_sample(samples):
    # Regression: 1/y**2 row weights made every forest leaf the mean of its fastest sample, and
    # the forest under-predicted every network by 17-99%.
    forest = fit_baselines(samples, cv=2)["random_forest"]
    convs = [s for s in samples if s["op_type"] == "conv2d"]
    measured = [s["latency"]["median_ms"] for s in convs]
    predicted = [
        forest.predict_network(
            [OpInstance(0, "conv2d", s["config"], s["features"], "CONV_2D")]
        ).total_ms
        for s in convs
    ]
    assert mape(measured, predicted) < 0.15
    assert abs(np.median(np.log(np.array(predicted) / np.array(measured)))) < 0.05


def test_metrics_helpers():
    assert mape([1.0, 2.0], [1.1, 1.8]) == pytest.approx(0.1)
    assert within_fraction([1.0, 2.0, 4.0], [1.05, 2.5, 4.0], 0.1) == pytest.approx(2 / 3)


def test_conv_plot_is_a_png(fitted, samples):
    model, _ = fitted
    png = conv_channel_plot_png(samples, model)
    assert png.startswith(b"\x89PNG")
    assert conv_channel_plot_png(samples[:20], model).startswith(b"\x89PNG")


def _dense_samples():
    """Batch-1 dense layers: 30 GB/s while the weights fit a 6 MB cache, 10 GB/s beyond it."""
    out = []
    for cin in (256, 512, 768, 1024, 1536, 2048, 3072, 4096):
        for cout in (128, 256, 512, 1024, 2048):
            config = {"rows": 1, "cin": cin, "cout": cout, "activation": "none"}
            features = cost_features("fully_connected", config)
            gb_per_s = 30.0 if features["param_bytes"] <= 6e6 else 10.0
            op_ms = features["param_bytes"] / (gb_per_s * 1e6)
            out.append({"op_type": "fully_connected", "config": config, "features": features,
                        "latency": {"median_ms": OVERHEAD_MS + op_ms}})  # fmt: skip
    return out


def test_weight_streaming_is_fitted_from_dense_samples():
    cache_bytes, dram_rate = estimate_weight_streaming(_dense_samples(), OVERHEAD_MS)
    assert cache_bytes is not None and dram_rate is not None
    assert 4e6 < cache_bytes < 9e6
    assert dram_rate == pytest.approx(1 / 10e6, rel=0.05)  # ms per byte at 10 GB/s
    small = [s for s in _dense_samples() if s["features"]["param_bytes"] <= 6e6]
    assert estimate_weight_streaming(small, OVERHEAD_MS) == (None, None)  # no knee: no regime


def test_networks_beyond_the_cache_stream_their_weights():
    model, metrics = fit_device_model(
        [*_dense_samples(), {"op_type": "invoke_overhead", "config": {},
                             "latency": {"median_ms": OVERHEAD_MS}}], cv=2,
    )  # fmt: skip
    assert metrics["cache_bytes"] is not None

    def dense(index, cin, cout):
        config = {"rows": 1, "cin": cin, "cout": cout, "activation": "none"}
        return OpInstance(
            index, "fully_connected", config, cost_features("fully_connected", config), "FC"
        )

    # Four 4 MB layers: each fits the cache alone, the network (16 MB) does not.
    layers = [dense(i, 1024, 1024) for i in range(4)]
    alone = model.predict_network(layers[:1]).total_ms - model.overhead_ms
    together = model.predict_network(layers)
    assert together.total_ms - model.overhead_ms == pytest.approx(4 * 3 * alone, rel=0.2)
    assert all("DRAM" in op.note for op in together.ops)
    assert DeviceTimeModel.from_dict(model.to_dict()).cache_bytes == model.cache_bytes


# What the synthetic device's LSTM layers pay per weight byte and step once their weights exceed
# its 6 MB cache (_dense_samples): every step reads them all again.
STEP_RELOAD_MS_PER_BYTE = 5e-8


def _lstm_ms(config: dict[str, int]) -> float:
    """1 us per step plus 10 ps per FLOP; beyond the cache, the weights reloaded at each step."""
    features = cost_features("lstm", config)
    op_ms = 1e-3 * config["seq_len"] + 1e-8 * features["flops"]
    if features["param_bytes"] > 6e6:
        op_ms += STEP_RELOAD_MS_PER_BYTE * config["seq_len"] * features["param_bytes"]
    return op_ms


def _lstm_samples(units=(16, 32, 64, 128, 256, 384, 512, 768, 1024)):
    """A grid of LSTM layers, none with 4.2-6 MB of weights: the dense samples place the knee
    anywhere between their sizes around 6 MB (4.19 and 6.29 MB)."""
    out = []
    for u in units:
        for cin in (8, 64, 256, 512):
            for seq in (8, 32, 128):
                config = {"cin": cin, "units": u, "seq_len": seq, "return_sequences": 0}
                if 4.2e6 < cost_features("lstm", config)["param_bytes"] <= 6e6:
                    continue
                out.append({"op_type": "lstm", "config": config,
                            "features": cost_features("lstm", config),
                            "latency": {"median_ms": OVERHEAD_MS + _lstm_ms(config)}})  # fmt: skip
    return out


OVERHEAD_SAMPLE = {
    "op_type": "invoke_overhead",
    "config": {},
    "latency": {"median_ms": OVERHEAD_MS},
}


def test_recurrent_layers_beyond_the_cache_reload_their_weights_at_every_step():
    """LSTM layers past the cache are fitted apart from the tree, as a rate per weight byte and
    step; those within it keep a tree of their own."""
    lstm = _lstm_samples()
    model, metrics = fit_device_model([*_dense_samples(), *lstm, OVERHEAD_SAMPLE], cv=3)
    assert metrics["per_op_type"]["lstm"]["streamed_samples"] == 30  # 10 configs x 3 lengths
    rate = metrics["step_reload_ms_per_param_byte"]["lstm"]
    assert rate == pytest.approx(STEP_RELOAD_MS_PER_BYTE, rel=0.2)
    for config in (
        {"cin": 128, "units": 640, "seq_len": 64, "return_sequences": 0},  # 12.6 MB: beyond
        {"cin": 32, "units": 200, "seq_len": 50, "return_sequences": 0},  # 0.7 MB: within
    ):
        predicted, fallback = model.predict_op("lstm", config)
        assert not fallback
        assert predicted == pytest.approx(_lstm_ms(config), rel=0.1)
    assert metrics["per_op_type"]["lstm"]["cv_mape"] < 0.1
    assert "at every step" in model.rules("lstm")
    again = DeviceTimeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.step_reload_ms_per_param_byte == model.step_reload_ms_per_param_byte


def test_too_few_recurrent_layers_beyond_the_cache_get_the_dram_floor_per_step():
    """With fewer than MIN_STREAMED_STEP_SAMPLES layers past the cache there is no rate; such a
    layer still takes at least its weights' DRAM time at every step."""
    beyond = [s for s in _lstm_samples(units=(768,)) if s["config"]["cin"] == 8][:2]
    model, metrics = fit_device_model(
        [*_dense_samples(), *_lstm_samples(units=(16, 32, 64, 128, 256)), *beyond,
         OVERHEAD_SAMPLE], cv=3,
    )  # fmt: skip
    assert "lstm" not in metrics["step_reload_ms_per_param_byte"]
    assert model.dram_ms_per_param_byte is not None
    config = {"cin": 128, "units": 1024, "seq_len": 100, "return_sequences": 0}
    floor_ms = model.dram_ms_per_param_byte * 100 * cost_features("lstm", config)["param_bytes"]
    assert model.predict_op("lstm", config)[0] >= floor_ms


# The reload time of the synthetic device: 100 ps per weight byte (10 GB/s) once a chain's
# weights exceed its 6 MB cache.
RELOAD_MS_PER_BYTE = 1e-7


def _chain_probes(cache_bytes, rate=RELOAD_MS_PER_BYTE):
    rng = np.random.default_rng(5)
    out = []
    for config in sample_configs("conv_chain", 40, seed=2):
        layers = chain_layers(config)
        params = [cost_features("conv2d", x)["param_bytes"] for x in layers]
        convs_ms = sum(_latency("conv2d", x, rng) - OVERHEAD_MS for x in layers)
        measured = OVERHEAD_MS + convs_ms + rate * chain_reload_bytes(params, cache_bytes)
        out.append({"op_type": "conv_chain", "config": config,
                    "features": cost_features("conv_chain", config),
                    "latency": {"median_ms": measured}})  # fmt: skip
    return out


def test_reload_rate_needs_min_reload_probes_beyond_the_cache(samples):
    """A rate from as few as MIN_RELOAD_PROBES probes beyond the knee (most campaigns of the
    second development VM had 2-4 there), none from fewer."""
    without, _ = fit_device_model([*samples, *_dense_samples()], cv=2)
    assert without.cache_bytes is not None
    cache_bytes = float(without.cache_bytes)
    probes = _chain_probes(cache_bytes)

    def beyond(probe: dict[str, Any]) -> bool:
        params = [cost_features("conv2d", x)["param_bytes"] for x in chain_layers(probe["config"])]
        return chain_reload_bytes(params, cache_bytes) > 0

    inside = [p for p in probes if not beyond(p)]
    outside = [p for p in probes if beyond(p)]
    assert len(outside) > MIN_RELOAD_PROBES
    few = estimate_reload_rate([*inside, *outside[:MIN_RELOAD_PROBES]], without)
    assert few["probes_beyond_cache"] == MIN_RELOAD_PROBES
    assert few["ms_per_param_byte"] == pytest.approx(RELOAD_MS_PER_BYTE, rel=0.35)
    too_few = estimate_reload_rate([*inside, *outside[: MIN_RELOAD_PROBES - 1]], without)
    assert too_few["ms_per_param_byte"] is None


def test_weight_reload_rate_is_fitted_from_chain_probes_and_priced_in_networks(samples):
    base = [*samples, *_dense_samples()]
    without, _ = fit_device_model(base, cv=2)
    assert without.reload_ms_per_param_byte is None  # no probes: no reload term
    model, metrics = fit_device_model([*base, *_chain_probes(without.cache_bytes)], cv=2)
    reload = metrics["weight_reload"]
    assert reload["probes"] == 40 and reload["probes_beyond_cache"] >= 10
    assert model.reload_ms_per_param_byte == pytest.approx(RELOAD_MS_PER_BYTE, rel=0.25)
    assert reload["chain_mape_with"] < 0.5 * reload["chain_mape_without"]
    assert "conv_chain" not in metrics["per_op_type"]  # a probe, not an op type to predict

    def conv(index, cin, cout):
        config = {"h": 3, "w": 3, "cin": cin, "cout": cout, "kh": 1, "kw": 1, "stride": 1,
                  "padding": "same", "activation": "none"}  # fmt: skip
        return OpInstance(index, "conv2d", config, cost_features("conv2d", config), "CONV_2D")

    small = [conv(i, 256, 256) for i in range(4)]  # 1 MB of weights: stays in the cache
    large = [conv(i, 768, 768) for i in range(4)]  # 9.4 MB: each op reloads its 2.4 MB
    assert all(op.note == "" for op in model.predict_network(small).ops)
    together = model.predict_network(large)
    reloaded = large[0].features["param_bytes"] * model.reload_ms_per_param_byte
    alone = without.predict_network(large[:1]).total_ms - without.overhead_ms
    assert together.ops[0].predicted_ms == pytest.approx(max(alone + reloaded, 0.0), rel=0.3)
    assert all("reload" in op.note for op in together.ops)
    # Dense layers in a network beyond the cache: the DRAM floor, no reload on top.
    fc = {"rows": 1, "cin": 1024, "cout": 1024, "activation": "none"}
    dense_net = [
        OpInstance(i, "fully_connected", fc, cost_features("fully_connected", fc), "FC")
        for i in range(4)
    ]
    assert model.streams_weights(dense_net)
    alone = model.predict_op("fully_connected", fc, dense_net[0].features)[0]
    assert model.dram_ms_per_param_byte is not None
    floor = model.dram_ms_per_param_byte * dense_net[0].features["param_bytes"]
    for op in model.predict_network(dense_net).ops:
        assert op.reload_ms == 0.0
        assert op.predicted_ms == pytest.approx(max(alone, floor))
    restored = DeviceTimeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored.reload_ms_per_param_byte == model.reload_ms_per_param_byte
    assert "reloaded" in model.to_dict()["network_rules"]


def test_reload_rate_uses_the_probes_layers_measured_alone(samples):
    model, _ = fit_device_model([*samples, *_dense_samples()], cv=2)
    assert model.cache_bytes is not None

    def predicted(layer):
        return model.predict_op("conv2d", layer, cost_features("conv2d", layer))[0]

    # The trees under-predict these layers by a third; measured alone they show their real time.
    singles, probes = {}, []
    for config in sample_configs("conv_chain", 40, seed=2):
        layers = chain_layers(config)
        for layer in layers:
            singles[json.dumps(layer, sort_keys=True)] = {
                "op_type": "conv2d", "config": layer,
                "latency": {"median_ms": model.overhead_ms + 1.5 * predicted(layer)},
            }  # fmt: skip
        params = [cost_features("conv2d", x)["param_bytes"] for x in layers]
        reload_ms = RELOAD_MS_PER_BYTE * chain_reload_bytes(params, model.cache_bytes)
        measured = model.overhead_ms + sum(1.5 * predicted(x) for x in layers) + reload_ms
        probes.append({"op_type": "conv_chain", "config": config,
                       "latency": {"median_ms": measured}})  # fmt: skip
    paired = estimate_reload_rate(probes, model, list(singles.values()))
    assert paired["probes_with_singles"] == 40 and paired["probes_beyond_cache"] >= 10
    assert paired["ms_per_param_byte"] == pytest.approx(RELOAD_MS_PER_BYTE, rel=1e-6)
    assert paired["chain_mape_with"] == pytest.approx(0.0, abs=1e-9)
    # Without the singles the rate also absorbs the trees' error on the layers.
    alone = estimate_reload_rate(probes, model)
    assert alone["probes_with_singles"] == 0
    assert alone["ms_per_param_byte"] > 1.1 * RELOAD_MS_PER_BYTE  # 1.25x here


# The synthetic device's network extra: a share of the layers' time growing with the chain's
# weight bytes, 8% at 5 MB.
CHAIN_EXTRA_RATIO = 0.08
CHAIN_EXTRA_AT_BYTES = 5e6


def _true_extra(param_bytes: float) -> float:
    return CHAIN_EXTRA_RATIO * param_bytes / CHAIN_EXTRA_AT_BYTES


def _chain_extra_probes(
    model: DeviceTimeModel, outlier_bytes: float | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """conv_chain probes whose layers were also measured alone, slower whole by the curve above;
    the probe nearest ``outlier_bytes`` (if given) 40 points slower still (a busy L3)."""
    singles: dict[str, dict[str, Any]] = {}
    probes: list[dict[str, Any]] = []
    totals: list[float] = []
    for config in sample_configs("conv_chain", 40, seed=3):
        layers = chain_layers(config)
        layer_ms = []
        for layer in layers:
            ms = model.predict_op("conv2d", layer, cost_features("conv2d", layer))[0]
            singles[json.dumps(layer, sort_keys=True)] = {
                "op_type": "conv2d", "config": layer,
                "latency": {"median_ms": model.overhead_ms + ms},
            }  # fmt: skip
            layer_ms.append(ms)
        params = sum(cost_features("conv2d", x)["param_bytes"] for x in layers)
        measured_ms = (model.overhead_ms + sum(layer_ms)) * (1.0 + _true_extra(params))
        probes.append(
            {"op_type": "conv_chain", "config": config, "latency": {"median_ms": measured_ms}}
        )
        totals.append(float(params))
    if outlier_bytes is not None:
        odd = int(np.argmin(np.abs(np.array(totals) - outlier_bytes)))
        probes[odd]["latency"] = {"median_ms": probes[odd]["latency"]["median_ms"] * 1.4}
    return probes, list(singles.values())


def test_monotone_segments_fit_a_ramp_exactly_and_never_fall():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    knots, levels = monotone_segments(x, 0.5 + 2.0 * x, np.ones_like(x), 3)
    assert knots == pytest.approx([1.0, 3.0, 5.0, 7.0])  # the quantiles of x
    assert levels == pytest.approx([2.5, 6.5, 10.5, 14.5])
    # Falling data: the best non-decreasing fit is flat (at the weighted mean), never below 0.
    knots, levels = monotone_segments(x, 10.0 - x, np.ones_like(x), 3)
    assert levels == pytest.approx([6.0] * 4)
    _, levels = monotone_segments(x, -x, np.ones_like(x), 3)
    assert levels == pytest.approx([0.0] * 4)
    # Weights: the heavy points decide; equal x: one knot.
    _, levels = monotone_segments(x, np.where(x > 4, 1.0, 0.0), np.where(x > 4, 1e6, 1.0), 1)
    assert levels[-1] == pytest.approx(1.0, abs=1e-3)
    knots, levels = monotone_segments(np.full(4, 2.0), np.full(4, 0.1), np.ones(4), 3)
    assert knots == [2.0] and levels == pytest.approx([0.1])


def test_one_slow_chain_probe_does_not_set_the_curve_where_it_lies(samples):
    """A probe timed while the neighbours filled the L3 (+40% here) is set aside by the robust
    pass: on the 2026-11-30 14:32 campaign such a probe at 13.3 MB put +41% on every 14 MB network
    under the isotonic curve of before, and on 2026-12-01 one at 1.29 MB (+82%) put +7.4% on the
    networks of 1.2-2.2 MB under the least-squares curve."""
    model, _ = fit_device_model([*samples, *_dense_samples()], cv=2)
    assert model.cache_bytes is not None

    def jittered(probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # 0.3% of timing noise: on probes exactly on the ramp the residuals' MAD is rounding
        # error, and whether a probe beside the slow one is set aside would be too.
        for i, probe in enumerate(probes):
            probe["latency"]["median_ms"] *= 1.0 + 0.003 * np.sin(7.0 * i)
        return probes

    clean, singles = _chain_extra_probes(model)
    fitted = estimate_chain_extra(jittered(clean), model, singles)
    top = max(fitted["param_bytes"])
    probes, singles = _chain_extra_probes(model, outlier_bytes=top)
    fitted_odd = estimate_chain_extra(jittered(probes), model, singles)
    knots, ratios = fitted_odd["param_bytes"], fitted_odd["ratio"]
    at_top = float(np.interp(top, knots, ratios))
    assert fitted_odd["probes_set_aside"] == 1 and fitted["probes_set_aside"] == 0
    assert at_top == pytest.approx(_true_extra(top), abs=5e-3)  # the ramp of the clean probes
    without_pass = chain_extra_from_probes(
        chain_probe_times(probes, model, singles), model, robust=False
    )
    assert float(np.interp(top, without_pass["param_bytes"], without_pass["ratio"])) > at_top + 0.02


def test_network_extra_curve_is_fitted_from_chain_probes_within_the_cache(samples):
    model, _ = fit_device_model([*samples, *_dense_samples()], cv=2)
    assert model.cache_bytes is not None and model.chain_extra is None  # no probes: no curve
    probes, singles = _chain_extra_probes(model)
    within = [
        p for p in probes
        if sum(cost_features("conv2d", x)["param_bytes"] for x in chain_layers(p["config"]))
        <= model.cache_bytes
    ]  # fmt: skip
    assert len(within) >= 10 and len(within) < len(probes)  # the others are left out
    fitted = estimate_chain_extra(probes, model, singles)
    assert fitted["probes"] == len(within)
    knots, ratios = fitted["param_bytes"], fitted["ratio"]
    assert np.all(np.diff(knots) >= 0) and np.all(np.diff(ratios) >= 0)  # non-decreasing
    assert len(knots) == CHAIN_EXTRA_SEGMENTS + 1
    assert fitted["chain_mape_with"] == pytest.approx(0.0, abs=1e-6)  # a ramp: fitted exactly
    assert fitted["chain_mape_without"] > 0.01
    curve = DeviceTimeModel(model.trees, model.overhead_ms, chain_extra=(knots, ratios))
    for x in knots:
        assert curve.chain_extra_ratio(x) == pytest.approx(_true_extra(x), rel=1e-3)
    assert estimate_chain_extra(probes[:5], model, singles)["param_bytes"] is None  # too few

    # fit_device_model fits it and prices it in networks within the cache.
    with_probes, metrics = fit_device_model([*samples, *_dense_samples(), *probes, *singles], cv=2)
    assert metrics["chain_extra"]["probes"] == len(within)
    assert with_probes.chain_extra_ratio(3e6) == pytest.approx(_true_extra(3e6), rel=0.05)
    top = max(knots)  # flat beyond the last probe
    assert with_probes.chain_extra_ratio(2 * top) == pytest.approx(_true_extra(top), rel=0.05)

    def conv(index, cin, cout):
        config = {"h": 3, "w": 3, "cin": cin, "cout": cout, "kh": 1, "kw": 1, "stride": 1,
                  "padding": "same", "activation": "none"}  # fmt: skip
        return OpInstance(index, "conv2d", config, cost_features("conv2d", config), "CONV_2D")

    network = [conv(i, 512, 512) for i in range(4)]  # 4.2 MB of weights, within the cache
    assert not with_probes.streams_weights(network)
    priced = with_probes.predict_network(network)
    net_bytes = sum(op.features["param_bytes"] for op in network)
    net_ratio = with_probes.chain_extra_ratio(net_bytes)
    assert net_ratio == pytest.approx(_true_extra(min(net_bytes, top)), rel=0.05)
    for op, prediction in zip(network, priced.ops, strict=True):
        alone = with_probes.predict_op("conv2d", op.config, op.features)[0]
        assert prediction.reload_ms == pytest.approx(net_ratio * alone)
        assert prediction.predicted_ms == pytest.approx(alone + prediction.reload_ms)
        assert "reload" in prediction.note
    small = with_probes.predict_network(network[:1])  # 1 MB: a smaller share
    small_ratio = _true_extra(net_bytes / 4)
    expected_ms = priced.ops[0].reload_ms * small_ratio / net_ratio
    assert small.ops[0].reload_ms == pytest.approx(expected_ms, rel=0.05)
    restored = DeviceTimeModel.from_dict(json.loads(json.dumps(with_probes.to_dict())))
    assert restored.chain_extra == with_probes.chain_extra
    assert restored.predict_network(network).total_ms == pytest.approx(priced.total_ms)
    assert "r(network param_bytes)" in with_probes.network_rules()
    # A model stored with the per-byte curve of before 2026-11-30 loads without a curve.
    old = with_probes.to_dict()
    old["chain_extra"] = {"param_bytes": [1e6, 5e6], "ms_per_param_byte": [0.0, 5e-8]}
    assert DeviceTimeModel.from_dict(old).chain_extra is None


@pytest.mark.parametrize(
    ("config", "dense_cin"),
    [
        ({"h": 1, "w": 1, "kh": 1, "kw": 1, "cin": 960, "padding": "same"}, 960),  # V3 head
        ({"h": 7, "w": 7, "kh": 7, "kw": 7, "cin": 64, "padding": "valid"}, 7 * 7 * 64),
        ({"h": 7, "w": 7, "kh": 7, "kw": 7, "cin": 64, "padding": "same"}, None),  # 49 pixels out
        ({"h": 5, "w": 5, "kh": 3, "kw": 3, "cin": 64, "padding": "valid"}, None),  # 9 pixels out
    ],
)
def test_dense_equivalent_convs(config, dense_cin):
    conv = {**config, "cout": 1280, "stride": 1, "activation": "relu"}
    dense = dense_equivalent("conv2d", conv)
    if dense_cin is None:
        assert dense is None
    else:
        assert dense == {"rows": 1, "cin": dense_cin, "cout": 1280, "activation": "relu"}
    assert dense_equivalent("depthwise_conv2d", {**conv, "multiplier": 1}) is None


def test_a_one_pixel_conv_is_priced_and_fitted_as_a_dense_layer(samples):
    """A 1x1 conv on a 1x1 map is the dense layer's kernel: the dense tree prices it and its
    samples train that tree, not the conv tree (whose other samples run a different kernel)."""
    heads: list[dict[str, Any]] = []
    for cin, cout in ((256, 512), (512, 1000), (960, 1280), (1024, 1024), (1280, 1000)):
        config = {"h": 1, "w": 1, "kh": 1, "kw": 1, "cin": cin, "cout": cout, "stride": 1,
                  "padding": "same", "activation": "none"}  # fmt: skip
        dense = dense_equivalent("conv2d", config)
        assert dense is not None
        heads.append({"op_type": "conv2d", "config": config,
                      "features": cost_features("conv2d", config),
                      "latency": {"median_ms": OVERHEAD_MS + cost_features(
                          "fully_connected", dense)["param_bytes"] / 30e6}})  # fmt: skip
    model, metrics = fit_device_model([*samples, *_dense_samples(), *heads], cv=2)
    drawn = sum(dense_equivalent(s["op_type"], s["config"]) is not None for s in samples)
    assert metrics["convs_fitted_as_dense"] == len(heads) + drawn
    conv_count = sum(s["op_type"] == "conv2d" for s in samples)
    assert metrics["per_op_type"]["conv2d"]["samples"] == conv_count - drawn
    assert metrics["per_op_type"]["fully_connected"]["samples"] == 40 + len(heads) + drawn
    head = heads[2]["config"]
    as_conv = model.predict_op("conv2d", head)[0]
    head_as_dense = dense_equivalent("conv2d", head)
    assert head_as_dense is not None
    assert as_conv == model.predict_op("fully_connected", head_as_dense)[0]
    op = OpInstance(0, "conv2d", head, cost_features("conv2d", head), "CONV_2D")
    (prediction,) = model.predict_ops([op])
    assert "dense layer of 960 inputs" in prediction.note
    assert prediction.predicted_ms == pytest.approx(as_conv)


def test_robust_weights_reject_contended_samples():
    rng = np.random.default_rng(0)
    resid = np.r_[rng.normal(0.0, 0.02, 200), 1.0, 2.0]  # two samples measured 2x and 3x slow
    factors = robust_weights(resid)
    assert np.all(factors[-2:] == 0.0)
    assert np.mean(factors[:200] > 0.5) > 0.9 and np.all((factors >= 0) & (factors <= 1))
    assert np.all(robust_weights(np.zeros(5)) == 1.0)  # no spread: nothing to reject


def test_robust_fit_ignores_a_slowed_sample(samples):
    conv = [s for s in samples if s["op_type"] == "conv2d"]
    _, y_clean, _ = build_design("conv2d", conv, OVERHEAD_MS)
    # One contended measurement (2x slow), as a time-shared core gives, of a typical op (the
    # median time). A sample alone in its corner of the configuration space is not told from a
    # real step by any residual test: the first draw of seed 0 (a 3x3 conv with cin = 4) is such.
    i = int(np.argsort(y_clean)[len(y_clean) // 2])
    slowed = [dict(s) for s in conv]
    slowed[i] = {**slowed[i], "latency": {"median_ms": 2 * slowed[i]["latency"]["median_ms"]}}
    X, y, names = build_design("conv2d", slowed, OVERHEAD_MS)
    rest = np.arange(len(y)) != i
    plain = fit_tree("conv2d", X, y, names, cv=0, overhead_ms=OVERHEAD_MS, robust_passes=0)
    robust = fit_tree("conv2d", X, y, names, cv=0, overhead_ms=OVERHEAD_MS, robust_passes=1)
    err_plain = mape(y_clean[rest], plain.predict(X[rest]))
    err_robust = mape(y_clean[rest], robust.predict(X[rest]))
    assert err_robust <= err_plain + 1e-9
    assert robust.predict(X[i : i + 1])[0] < 1.3 * y_clean[i]  # the quiet time, not the 2x


def test_depthwise_regime_features():
    base = {"h": 14, "w": 14, "cin": 32, "multiplier": 1, "kh": 3, "kw": 3, "stride": 1}
    names = feature_names("depthwise_conv2d")
    col = {n: i for i, n in enumerate(names)}
    plain = op_feature_vector("depthwise_conv2d", base)
    big = op_feature_vector("depthwise_conv2d", {**base, "kh": 7, "kw": 7})
    grouped = op_feature_vector("depthwise_conv2d", {**base, "multiplier": 2})
    assert plain[col["flops_multipass"]] == 0 and plain[col["grouped_steps"]] == 0
    assert big[col["flops_multipass"]] == big[col["flops"]] > 0 and big[col["grouped_steps"]] == 0
    # A multiplier runs as a grouped IGEMM: one step per output pixel, tap and input channel
    # (the multiplier padded to one 16-wide panel), and no depthwise tap_steps.
    assert grouped[col["grouped_steps"]] == 14 * 14 * 9 * 32
    assert grouped[col["tap_steps"]] == 0 and plain[col["tap_steps"]] > 0
    # ... whatever its kernel: a 7x7 grouped layer does not run the multi-pass depthwise kernel.
    grouped_7x7 = op_feature_vector("depthwise_conv2d", {**base, "multiplier": 2, "kh": 7, "kw": 7})
    assert grouped_7x7[col["flops_multipass"]] == 0 and grouped_7x7[col["grouped_steps"]] > 0
    wide = op_feature_vector("depthwise_conv2d", {**base, "multiplier": 17})
    assert wide[col["grouped_steps"]] == 2 * grouped[col["grouped_steps"]]
    # A channel count that is not a multiple of 8 pays a masked tail once per output pixel.
    assert plain[col["remainder_pixels"]] == 0 and grouped[col["remainder_pixels"]] == 0
    odd = op_feature_vector("depthwise_conv2d", {**base, "cin": 33})
    assert odd[col["remainder_pixels"]] == 14 * 14
    assert "remainder_pixels" not in feature_names("depthwise_conv2d", "paper")
    # ...and every tap step of it loads unaligned vectors: 3 of 16-channel tiles x 9 taps x pixels.
    assert odd[col["unaligned_steps"]] == odd[col["tap_steps"]] == 14 * 14 * 9 * 3
    assert plain[col["unaligned_steps"]] == 0 and grouped[col["unaligned_steps"]] == 0


def test_pooling_pays_per_output_pixel_and_for_a_channel_tail():
    pool = {"h": 16, "w": 16, "c": 32, "kh": 2, "kw": 2, "stride": 2, "padding": "valid"}
    for op_type in ("max_pool2d", "avg_pool2d"):
        col = {n: i for i, n in enumerate(feature_names(op_type))}
        even = op_feature_vector(op_type, pool)
        odd = op_feature_vector(op_type, {**pool, "c": 30})
        assert even[col["output_pixels"]] == odd[col["output_pixels"]] == 8 * 8
        assert even[col["remainder_pixels"]] == 0 and odd[col["remainder_pixels"]] == 8 * 8


def test_row_copies_are_priced_per_pixel():
    concat = feature_names("concatenation")
    row = op_feature_vector("concatenation", {"h": 7, "w": 5, "c1": 16, "c2": 24})
    assert row[concat.index("pixels")] == 35
    assert "pixels" in feature_names("pad") and "pixels" not in feature_names("add")
    assert "flops_multipass" not in feature_names("depthwise_conv2d", "paper")


def test_disturbed_samples_are_left_out_and_counted(samples):
    # Mark a third of the add samples disturbed and make them 3x slow: the fit must not see them.
    marked = []
    for i, s in enumerate(samples):
        if s["op_type"] == "add" and i % 3 == 0:
            slow = {"median_ms": 3 * s["latency"]["median_ms"]}
            s = {**s, "latency": slow, "environment": {"quiet": False, "canary_ratio": 1.8}}
        marked.append(s)
    kept, disturbed = quiet_samples(marked)
    assert disturbed == {"add": sum(1 for s in marked if not is_quiet(s))} and disturbed["add"] > 0
    assert len(kept) == len(marked) - disturbed["add"]
    model, metrics = fit_device_model(marked, cv=3)
    assert metrics["disturbed_samples"] == disturbed
    assert metrics["per_op_type"]["add"]["samples"] == len(
        [s for s in kept if s["op_type"] == "add"]
    )
    clean, _ = fit_device_model(samples, cv=3)
    add = next(s for s in samples if s["op_type"] == "add")
    ops = [OpInstance(0, "add", add["config"], add["features"], "ADD")]
    with_marked = model.predict_network(ops).total_ms
    assert with_marked == pytest.approx(clean.predict_network(ops).total_ms, rel=0.05)


def test_disturbed_samples_beyond_the_quiet_ones_reach_are_kept(samples):
    # The two largest convs flagged disturbed: nothing quiet is that large, so they stay (the
    # tree would otherwise price their regime from smaller ones); a smaller one goes.
    convs = sorted(
        (i for i, s in enumerate(samples) if s["op_type"] == "conv2d"),
        key=lambda i: working_set_bytes(samples[i]["features"]),
    )
    flagged = {convs[-1], convs[-2], convs[0]}
    marked = [
        {**s, "environment": {"quiet": False}} if i in flagged else s for i, s in enumerate(samples)
    ]
    kept, disturbed = quiet_samples(marked)
    assert disturbed == {"conv2d": 1}
    kept_ids = {id(s) for s in kept}
    assert {id(marked[convs[-1]]), id(marked[convs[-2]])} <= kept_ids
    assert id(marked[convs[0]]) not in kept_ids


def test_samples_are_rejudged_against_the_quietest_canary_of_all(samples):
    # The agent started in a slow state: its reference was 0.3 ms, so the add samples timed at a
    # 0.3 ms canary passed as quiet. A later fast state (0.15 ms) shows they were 2x slow.
    rejudged = []
    for i, s in enumerate(samples):
        canary_ms = 0.3 if s["op_type"] == "add" and i % 2 == 0 else 0.15
        environment = {"quiet": True, "canary_ratio": 1.0, "canary_ms": canary_ms}
        rejudged.append({**s, "environment": environment})
    adds = [s for s in rejudged if s["op_type"] == "add"]
    reach = max(
        working_set_bytes(s["features"]) for s in adds if s["environment"]["canary_ms"] < 0.3
    )
    # Slow ones larger than every quiet one stay (test_disturbed_samples_beyond_...).
    slow = sum(
        1
        for s in adds
        if s["environment"]["canary_ms"] == 0.3 and working_set_bytes(s["features"]) <= reach
    )
    # Without speed states (each sample against the floor of all):
    kept, disturbed = quiet_samples(rejudged, speed_normalise=False)
    assert disturbed == {"add": slow} and len(kept) == len(rejudged) - slow
    # 0.3 / 0.15 = 2.0: within a limit of 2, over one of 1.99; no limit keeps the agent's verdict.
    assert quiet_samples(rejudged, max_canary_ratio=2.0, speed_normalise=False)[1] == {}
    assert quiet_samples(rejudged, max_canary_ratio=1.99, speed_normalise=False)[1] == {"add": slow}
    assert quiet_samples(rejudged, max_canary_ratio=None, speed_normalise=False)[1] == {}
    _, metrics = fit_device_model(rejudged, cv=3, speed_normalise=False)
    assert metrics["disturbed_samples"] == {"add": slow}
    _, metrics = fit_device_model(rejudged, cv=3, max_canary_ratio=None, speed_normalise=False)
    assert metrics["disturbed_samples"] == {}
    # With them, every other sample 2x slow is no state but spikes, against the state around.
    assert quiet_samples(rejudged)[1] == {"add": slow}


def _shifted(samples, speed=1.16, start=0.5, seed=3):
    """``samples`` in a shuffled order of measurement, the host ``speed`` times slower as a
    whole (labels and canary) from the ``start`` share of them on: the fourth VM's 11:22 step."""
    order = np.random.default_rng(seed).permutation(len(samples))
    out = []
    for k, i in enumerate(order):
        s = samples[int(i)]
        factor = speed if k >= start * len(samples) else 1.0
        wobble = 1.0 + 0.02 * ((k % 5) - 2) / 2  # the canary's own noise, +-2%
        out.append(
            {
                **s,
                "latency": {**s["latency"], "median_ms": s["latency"]["median_ms"] * factor},
                "environment": {"quiet": True, "canary_ms": 0.43 * factor * wobble},
            }
        )
    return out


def test_labels_timed_in_a_slower_state_are_carried_to_the_reference_speed(samples):
    shifted = _shifted(samples)
    kept, disturbed = quiet_samples(shifted)
    # Only slow samples whose window straddles the step (no steady state there) are left out.
    assert 0 < sum(disturbed.values()) <= SPEED_STATE_WINDOW // 2
    assert len(kept) == len(shifted) - sum(disturbed.values())
    by_config = {(s["op_type"], json.dumps(s["config"], sort_keys=True)): s for s in samples}
    off = []
    for s in kept:
        original = by_config[(s["op_type"], json.dumps(s["config"], sort_keys=True))]
        off.append(s["latency"]["median_ms"] / original["latency"]["median_ms"] - 1.0)
    # Back at the speed they had before the step, within the canary's own noise.
    assert np.max(np.abs(off)) < 0.03
    # Without speed states the slow half is left out as disturbed.
    _, disturbed_old = quiet_samples(shifted, speed_normalise=False)
    assert sum(disturbed_old.values()) >= len(shifted) // 3
    _, metrics = fit_device_model(shifted, cv=3)
    _, reference = fit_device_model(samples, cv=3)
    conv, conv_reference = metrics["per_op_type"]["conv2d"], reference["per_op_type"]["conv2d"]
    assert conv["samples"] >= conv_reference["samples"] - SPEED_STATE_WINDOW // 2
    assert conv["cv_mape"] < conv_reference["cv_mape"] + 0.02
    assert metrics["speed"]["normalised"] and metrics["speed"]["samples_off_5pct"] > 0
    assert metrics["reference_canary_ms"] == pytest.approx(0.43, rel=0.03)


def test_a_moment_of_another_speed_inside_a_state_is_disturbed(samples):
    shifted = _shifted(samples, start=0.0)  # all in the slow state
    spiky = [dict(s) for s in shifted]
    spiky[40] = {**spiky[40], "environment": {"quiet": True, "canary_ms": 0.43 * 1.16 * 1.5}}
    spiky[41] = {**spiky[41], "environment": {"quiet": True, "canary_ms": 0.43}}  # a fast moment
    spiky[42] = {**spiky[42], "environment": {"quiet": True, "canary_ms": 0.5, "cpu_share": 0.5}}
    kept, disturbed = quiet_samples(spiky)
    assert len(kept) == len(spiky) - 3 and sum(disturbed.values()) == 3


def test_speed_states_are_the_median_canary_around_each_sample():
    timed = [{"environment": {"canary_ms": c}} for c in [1.0, 1.0, 5.0, 1.0, 1.0, 2.0, 2.0, 2.0]]
    timed.insert(3, {"environment": {}})
    assert speed_states_ms(timed, window=3, max_spread=None) == [
        1.0, 1.0, 1.0, None, 1.0, 1.0, 2.0, 2.0, 2.0
    ]  # fmt: skip
    # No steady state where the window spans a spike or a step.
    assert speed_states_ms(timed, window=3) == [1.0, None, None, None, None, None, None, 2.0, 2.0]
    assert speed_at({"state_canary_ms": 0.5}, 0.4) == pytest.approx(1.25)
    assert (
        speed_at({"canary_ms": 0.5}, 0.4) == 1.0 and speed_at({"state_canary_ms": 0.5}, None) == 1.0
    )
    both = {"canary_ms": 0.6, "state_canary_ms": 0.5}
    assert speed_at(both, 0.4, key="canary_ms") == pytest.approx(1.5)


def test_one_fast_canary_does_not_set_the_campaigns_floor(samples):
    """One canary of 0.108 ms among samples timed at 0.127-0.137 ms (third VM, 2026-12-01): as the
    floor it would have left every sample over 0.119 ms (1.1x) out; a low quantile keeps them."""
    timed = []
    for i, s in enumerate(samples):
        canary_ms = 0.108 if i == 7 else 0.127 + 0.010 * (i % 20) / 19
        timed.append({**s, "environment": {"quiet": True, "canary_ms": canary_ms}})
    floor = canary_floor_ms(timed)
    assert floor is not None and 0.127 <= floor < 0.130
    kept, disturbed = quiet_samples(timed, speed_normalise=False)
    assert disturbed == {} and len(kept) == len(timed)
    # With speed states the one fast canary is a moment off its steady state (0.108 < 0.127 / 1.1):
    # its label's speed is unknown, so that sample alone is set aside; the rest are kept.
    kept, disturbed = quiet_samples(timed)
    assert disturbed == {"conv2d": 1} and len(kept) == len(timed) - 1


def test_a_few_minutes_in_a_faster_state_do_not_set_the_campaigns_floor(samples):
    """Third VM, 2026-12-01 03:45: a campaign's canaries at 0.132 ms but for a 15% stretch at
    0.105-0.117 ms. A 5% quantile floor (0.109 ms) left 1377 of its 1506 samples out."""
    timed = []
    for i, s in enumerate(samples):
        fast = 0.60 <= i / len(samples) < 0.75
        canary_ms = 0.105 + 0.012 * (i % 7) / 6 if fast else 0.132 + 0.008 * (i % 9) / 8
        timed.append({**s, "environment": {"quiet": True, "canary_ms": canary_ms}})
    floor = canary_floor_ms(timed)
    assert floor is not None and floor >= 0.132
    kept, disturbed = quiet_samples(timed)
    assert disturbed == {} and len(kept) == len(timed)


def test_an_op_type_with_only_disturbed_samples_keeps_them():
    only = [{"op_type": "add", "config": {}, "environment": {"quiet": False}}] * 3
    kept, disturbed = quiet_samples(only)
    assert len(kept) == 3 and disturbed == {}


def test_gemm_tail_and_pad_features():
    names = feature_names("fully_connected")
    col = {n: i for i, n in enumerate(names)}
    row = op_feature_vector("fully_connected", {"rows": 1, "cin": 700, "cout": 690})
    assert row[col["gemm_tail16"]] == 2  # 690 = 43 * 16 + 2
    assert row[col["gemm_tail8"]] == 2 and row[col["gemm_tail32"]] == 18
    assert row[col["gemm_pad16"]] == pytest.approx(14 / 690)
    full = op_feature_vector("fully_connected", {"rows": 1, "cin": 700, "cout": 704})
    assert full[col["gemm_tail16"]] == 16 and full[col["gemm_pad16"]] == 0
    # An LSTM step's GEMM has 4 gates of `units` columns: units = 93 -> 372 columns, tail 4.
    lstm = {"seq_len": 8, "cin": 32, "units": 93, "return_sequences": 0}
    lstm_col = {n: i for i, n in enumerate(feature_names("lstm"))}
    assert op_feature_vector("lstm", lstm)[lstm_col["gemm_tail16"]] == 4
    assert "gemm_tail16" not in feature_names("fully_connected", "paper")
    # The narrow-kernel FLOPs: the op's FLOPs when XNNPACK runs its 8-wide kernel (690 pads 14
    # columns to 16, 6 to 8, and 14 is over 1% of 690).
    assert row[col["flops_nr2"]] == row[col["flops"]] > 0
    assert full[col["flops_nr2"]] == 0
    batched = op_feature_vector("fully_connected", {"rows": 4, "cin": 700, "cout": 690})
    assert batched[col["flops_nr2"]] == 0  # a 4-row GEMM showed no such step
    gru = {"seq_len": 8, "cin": 32, "units": 87, "return_sequences": 0}  # 3 * 87 = 261 columns
    assert op_feature_vector("gru", gru)[feature_names("gru").index("flops_nr2")] > 0


@pytest.mark.parametrize(
    ("width", "narrow"),
    [
        (8, True),  # under 16 columns
        (16, False),
        (520, True),  # pads 8 of 16, none of 8, and 8 > 1% of 520
        (523, False),  # pads 5 either way
        (524, False),  # pads 4 either way
        (300, False),  # 300 = 18 * 16 + 12: pads 4 either way, though the last panel is 3/4 empty
        (306, True),
        (856, False),  # pads 8 of 16, but 8 is under 1% of 856
        (865, True),  # pads 15 > 8.65
        (1857, False),  # pads 15 < 18.57
        (0, False),
    ],
)
def test_uses_narrow_gemm_follows_xnnpack(width: int, narrow: bool) -> None:
    # XNNPACK's rule; the widths from 300 up were measured at cin 512 (bench/composition.py):
    # the narrow ones run ~65 ps per weight byte, the others ~34.
    assert uses_narrow_gemm(width) is narrow


def test_output_pixels_feature():
    config = {"h": 15, "w": 15, "cin": 7, "multiplier": 1, "kh": 3, "kw": 3, "stride": 2}
    col = {n: i for i, n in enumerate(feature_names("depthwise_conv2d"))}
    assert op_feature_vector("depthwise_conv2d", config)[col["output_pixels"]] == 8 * 8
    valid = {**config, "padding": "valid"}
    assert op_feature_vector("depthwise_conv2d", valid)[col["output_pixels"]] == 7 * 7


def test_tap_steps_and_footprint_features():
    conv = {"h": 8, "w": 8, "cin": 3, "cout": 17, "kh": 3, "kw": 3, "stride": 1}
    col = {n: i for i, n in enumerate(feature_names("conv2d"))}
    row = op_feature_vector("conv2d", conv)
    assert row[col["tap_steps"]] == 8 * 8 * 9 * 2  # 17 output channels: two 16-wide panels
    working_set = sum(row[col[k]] for k in ("input_bytes", "output_bytes", "param_bytes"))
    assert row[col["footprint_bytes"]] == working_set + 8 * 8 * 9 * 8  # + a pointer per tap
    assert row[col["working_set_bytes"]] == working_set
    dw = {n: i for i, n in enumerate(feature_names("depthwise_conv2d"))}

    def dw_steps(**config: int) -> float:
        base = {"h": 1, "w": 16, "cin": 20, "multiplier": 1, "kh": 1, "kw": 5, "stride": 1}
        return float(op_feature_vector("depthwise_conv2d", {**base, **config})[dw["tap_steps"]])

    assert dw_steps() == 16 * 9 * 2  # 5 taps run the 9-tap kernel, 20 channels two 16-tiles
    assert dw_steps(kw=3) == 16 * 3 * 2
    assert dw_steps(h=5, kh=5, cin=9) == 5 * 16 * 25 * 2  # the 25-tap kernel takes 8 channels
    assert dw_steps(h=7, kh=7, kw=7, cin=18) == 7 * 16 * 49 * 3  # multi-pass, 8 channels
    for name in ("tap_steps", "footprint_bytes"):
        assert name not in feature_names("conv2d", "paper")


def test_patch_bytes_is_a_depthwise_split_variable():
    # The filter bytes a depthwise kernel reads per output pixel: taps x cin x multiplier floats.
    names = split_feature_names("depthwise_conv2d")
    assert "patch_bytes" in names
    col = {n: i for i, n in enumerate(feature_names("depthwise_conv2d"))}
    config = {"h": 14, "w": 14, "cin": 512, "multiplier": 1, "kh": 5, "kw": 5, "stride": 1}
    assert op_feature_vector("depthwise_conv2d", config)[col["patch_bytes"]] == 25 * 512 * 4
    doubled = {**config, "multiplier": 2, "kh": 3, "kw": 3}
    assert op_feature_vector("depthwise_conv2d", doubled)[col["patch_bytes"]] == 9 * 1024 * 4
    assert "patch_bytes" not in split_feature_names("conv2d")
    assert "patch_bytes" not in split_feature_names("depthwise_conv2d", "paper")


def test_tree_learns_a_cost_per_kernel_step():
    # Convolutions with few input channels cost per micro-kernel step (pixel x tap x 16-channel
    # panel) beyond their FLOPs, as on this host; the tiled model prices it with tap_steps.
    rng = np.random.default_rng(5)
    samples = []
    for _ in range(240):
        size = int(rng.integers(8, 64))
        config = {
            "h": size, "w": size, "kh": 3, "kw": 3, "stride": 1, "padding": "same",
            "cin": int(rng.choice([1, 2, 3, 4, 8, 16, 32, 64, 128])),
            "cout": int(rng.integers(8, 160)), "activation": "none",
        }  # fmt: skip
        ms = OVERHEAD_MS + 0.03e-6 * cost_features("conv2d", config)["flops"]
        ms += 2e-6 * tap_steps("conv2d", config)
        samples.append({"op_type": "conv2d", "config": config,
                        "latency": {"median_ms": ms * rng.normal(1.0, 0.01)}})  # fmt: skip
    samples += [{"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": OVERHEAD_MS}}]
    _, tiled = fit_device_model(samples, cv=3)
    _, paper = fit_device_model(samples, variant="paper", cv=3)
    assert tiled["per_op_type"]["conv2d"]["cv_mape"] < 0.03
    assert tiled["per_op_type"]["conv2d"]["cv_mape"] < paper["per_op_type"]["conv2d"]["cv_mape"]


def test_strided_pointwise_flops_feature():
    col = {n: i for i, n in enumerate(feature_names("conv2d"))}
    base = {"h": 28, "w": 28, "cin": 32, "cout": 48, "kh": 1, "kw": 1, "padding": "same"}

    def value(**config: int) -> float:
        return float(
            op_feature_vector("conv2d", {**base, **config})[col["strided_pointwise_flops"]]
        )

    strided = {**base, "stride": 2}
    assert value(stride=2) == cost_features("conv2d", strided)["flops"] > 0
    assert strided_pointwise(strided)
    assert value(stride=1) == 0.0  # a plain GEMM
    assert value(stride=2, kh=3, kw=3) == 0.0  # IGEMM like any kxk conv
    assert "strided_pointwise_flops" not in feature_names("conv2d", "paper")
    assert "strided_pointwise_flops" not in feature_names("depthwise_conv2d")


def test_tree_prices_strided_pointwise_convs_apart_from_the_plain_gemm():
    # Few 1x1 convs with a stride (fewer than a leaf needs) among many without, running 1.6x the
    # ms per FLOP (XNNPACK's IGEMM path against its GEMM; on the third VM they came out 14% slower
    # than predicted). Without the strided_pointwise_flops term they are off by 21%.
    rng = np.random.default_rng(11)
    samples = []
    for i in range(260):
        stride = 2 if i % 20 == 0 else 1
        config: dict[str, Any] = {
            "h": int(rng.integers(7, 96)), "w": int(rng.integers(7, 96)),
            "kh": 1, "kw": 1, "stride": stride, "padding": "same",
            "cin": int(rng.integers(16, 256)), "cout": int(rng.integers(16, 256)),
            "activation": "none",
        }  # fmt: skip
        f = cost_features("conv2d", config)
        rate = 1.6 if stride > 1 else 1.0
        ms = OVERHEAD_MS + rate * 0.05e-6 * f["flops"] + 2e-8 * f["output_bytes"]
        samples.append({"op_type": "conv2d", "config": config, "features": f,
                        "latency": {"median_ms": ms * rng.normal(1.0, 0.01)}})  # fmt: skip
    samples += [{"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": OVERHEAD_MS}}]
    _, metrics = fit_device_model(samples, cv=3, keep_predictions=True)
    rows = metrics["per_op_type"]["conv2d"]["cv_predictions"]
    strided = [
        abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows if r["config"]["stride"] > 1
    ]
    assert len(strided) == 13
    assert np.mean(strided) < 0.05


def test_tree_learns_the_narrow_gemm_kernel():
    # Dense batch-1 layers that XNNPACK runs with its 8-wide kernel run at half speed (as
    # measured on this host, docs/internals.md); the model must price it through the leaf term
    # flops_nr2 (or a split on gemm_tail16), which the paper's form has no way to do.
    rng = np.random.default_rng(3)
    samples = []
    for _ in range(240):
        config = {
            "rows": 1,
            "cin": int(rng.integers(64, 1024)),
            "cout": int(rng.integers(64, 1024)),
        }
        ns_per_weight = 0.26 if uses_narrow_gemm(config["cout"]) else 0.13
        ms = OVERHEAD_MS + ns_per_weight * 1e-6 * config["cin"] * config["cout"]
        samples.append({"op_type": "fully_connected", "config": config,
                        "latency": {"median_ms": ms * rng.normal(1.0, 0.01)}})  # fmt: skip
    samples += [{"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": OVERHEAD_MS}}]
    model, metrics = fit_device_model(samples, cv=3)
    rules = model.rules("fully_connected")
    assert "flops_nr2" in rules or "gemm_tail16" in rules
    assert metrics["per_op_type"]["fully_connected"]["cv_mape"] < 0.05
    _, paper = fit_device_model(samples, variant="paper", cv=3)
    assert paper["per_op_type"]["fully_connected"]["cv_mape"] > 0.1


def test_a_version_fitted_before_new_columns_still_predicts(samples, monkeypatch):
    # A model version stored by older code (here: before conv2d had output_pixels) must keep
    # predicting with its own columns after an upgrade, not fall back.
    config = {"h": 28, "w": 28, "cin": 32, "cout": 48, "kh": 3, "kw": 3, "stride": 1}
    with monkeypatch.context() as patch:
        patch.setattr("models.timemodel._PER_PIXEL_OPS", frozenset())
        old, _ = fit_device_model(samples, cv=2)
        old_columns = old.trees["conv2d"].feature_names
        assert old_columns is not None and "output_pixels" not in old_columns
        before = old.predict_op("conv2d", config)
    stored = DeviceTimeModel.from_dict(json.loads(json.dumps(old.to_dict())))
    assert stored.predict_op("conv2d", config) == pytest.approx(before)
    assert stored.predict_op("conv2d", config)[1] is False


def test_fastest_per_config_keeps_the_fastest_label_of_a_configuration():
    a, b = sample_configs("conv2d", 2, seed=4)
    samples = [
        {"op_type": "conv2d", "config": a, "latency": {"median_ms": 2.0}},
        {"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": 0.02}},
        {"op_type": "conv2d", "config": b, "latency": {"median_ms": 1.0}},
        {"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": 0.03}},
        {"op_type": "conv2d", "config": dict(a), "latency": {"median_ms": 1.5}},  # again
        {"op_type": "conv2d", "config": dict(b), "latency": {"median_ms": 1.02}},  # again
    ]
    kept, retimed = fastest_per_config(samples)
    # Order of first measurement; the overhead samples are a distribution and all stay.
    assert [(s["op_type"], s["latency"]["median_ms"]) for s in kept] == [
        ("conv2d", 1.5),
        ("invoke_overhead", 0.02),
        ("conv2d", 1.0),
        ("invoke_overhead", 0.03),
    ]
    assert retimed == {"conv2d": {"configs": 2, "faster_5pct": 1, "median_change_pct": -12.5}}
    assert fastest_per_config(kept)[1] == {}


def test_a_configuration_timed_again_counts_once_with_its_fastest_label(samples, fitted):
    slow_twin = [
        {**s, "latency": {"median_ms": 1.4 * s["latency"]["median_ms"]}}
        for s in samples
        if s["op_type"] == "conv2d"
    ][:20]
    _, metrics = fit_device_model([*slow_twin, *samples], cv=3)
    assert metrics["samples"] == fitted[1]["samples"]
    assert metrics["retimed"]["conv2d"]["configs"] == 20
    assert metrics["retimed"]["conv2d"]["faster_5pct"] == 20
    assert metrics["per_op_type"]["conv2d"]["cv_mape"] == pytest.approx(
        fitted[1]["per_op_type"]["conv2d"]["cv_mape"]
    )


def test_tiled_trees_choose_a_smoothing_constant_and_the_paper_form_has_none():
    from models.timemodel import TREE_SMOOTHING, feature_names, make_regressor

    names = feature_names("conv2d")
    tiled = make_regressor("conv2d", names)
    assert tiled.smoothing == TREE_SMOOTHING and 0.0 in TREE_SMOOTHING
    paper = make_regressor("conv2d", feature_names("conv2d", "paper"), variant="paper")
    assert paper.smoothing == 0.0


def test_error_band_weights_each_op_types_cv_error_by_its_time():
    from models.timemodel import ErrorBand, NetworkPrediction, OpPrediction, error_band

    per_op: dict[str, dict[str, Any]] = {
        "conv2d": {"cv_mape": 0.04},
        "add": {"cv_mape": 0.10},
        "lstm": {"cv_mape": None},
    }
    prediction = NetworkPrediction(
        5.0,
        0.1,
        [
            OpPrediction(0, "conv2d", {}, 3.0, False),
            OpPrediction(1, "conv2d", {}, 1.0, False),
            OpPrediction(2, "add", {}, 0.4, False),
            OpPrediction(3, "lstm", {}, 0.3, False),  # a tree too small to cross-validate
            OpPrediction(4, "reshape", {}, 0.2, True),  # a fallback
        ],
    )
    assert prediction.by_op_type_ms() == pytest.approx(
        {"conv2d": 4.0, "add": 0.4, "lstm": 0.3, "reshape": 0.2}
    )
    band = error_band(prediction.by_op_type_ms(), per_op)
    # (4.0 ms x 4% + 0.4 ms x 10%) / 4.4 ms; lstm and reshape are outside the band.
    assert band.expected_error_pct == pytest.approx((4.0 * 4 + 0.4 * 10) / 4.4)
    assert band.unvalidated_ms == pytest.approx(0.5)
    assert error_band({"reshape": 0.2}, per_op) == ErrorBand(None, 0.2)
