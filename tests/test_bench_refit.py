"""bench/refit.py: a stored campaign refitted offline, its network terms scored on the networks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench import refit
from models.features import parse_tflite
from models.timemodel import DEFAULT_MAX_CANARY_RATIO, fit_device_model
from tests.helpers import tiny_tflite
from tests.test_models_timemodel import _chain_extra_probes, _dense_samples, _samples


@pytest.fixture(scope="module")
def campaign():
    """Synthetic samples with chain probes within the cache, one of them 40% slow."""
    base = [*_samples({"conv2d": 150, "add": 40, "invoke_overhead": 5}), *_dense_samples()]
    model, _ = fit_device_model(base, cv=2)
    assert model.cache_bytes is not None
    probes, singles = _chain_extra_probes(model, outlier_bytes=model.cache_bytes / 2)
    return [*base, *probes, *singles]


def test_variants_differ_only_in_the_network_extra_curve(campaign):
    models, curves = refit.variant_models(campaign, cv=2, seed=0)
    assert set(models) == set(refit.VARIANTS)
    assert curves["fitted"]["probes_set_aside"] >= 1  # the slow probe
    assert curves["extra_one_pass"]["probes_set_aside"] == 0
    assert models["no_extra"].chain_extra is None
    fitted, one_pass = models["fitted"].chain_extra, models["extra_one_pass"].chain_extra
    assert fitted is not None and one_pass is not None and fitted != one_pass
    assert models["fitted"].trees is models["no_extra"].trees  # same trees, other curve


def test_score_gives_each_variant_its_errors_against_both_rounds(campaign):
    models, _ = refit.variant_models(campaign, cv=2, seed=0)
    ops = parse_tflite(tiny_tflite())
    predicted = models["fitted"].predict_network(ops).total_ms
    networks = [{"name": "tiny", "family": "test", "measured_ms": predicted / 1.2,
                 "rounds_ms": [predicted / 1.2, predicted, predicted * 1.1]}]  # fmt: skip
    summary, rows = refit.score(models, networks, ops_of=lambda name: ops)
    assert rows[0]["error_pct"]["fitted"] == pytest.approx(20.0)
    assert rows[0]["median_round_error_pct"]["fitted"] == pytest.approx(0.0, abs=1e-9)
    assert summary["fitted"]["fastest_round"]["within_10_pct"] == 0.0
    assert summary["fitted"]["median_round"]["within_5_pct"] == 100.0
    assert np.isfinite(rows[0]["predicted_ms"]["no_extra"])
    assert rows[0]["predicted_ms"]["no_extra"] <= rows[0]["predicted_ms"]["fitted"] + 1e-12


def test_score_scales_the_prediction_to_each_rounds_speed(campaign):
    models, _ = refit.variant_models(campaign, cv=2, seed=0)
    ops = parse_tflite(tiny_tflite())
    predicted = models["fitted"].predict_network(ops).total_ms
    # The fastest round ran 10% slow and was timed at that speed; the median round, carried to
    # the reference speed by its own speed (1.25), is the prediction.
    networks = [{"name": "tiny", "family": "test", "measured_ms": predicted * 1.1, "speed": 1.1,
                 "rounds_ms": [predicted * 1.1, predicted * 1.25, predicted * 1.5],
                 "rounds_speed": [1.1, 1.25, 1.0]}]  # fmt: skip
    _, rows = refit.score(models, networks, ops_of=lambda name: ops)
    assert rows[0]["predicted_ms"]["fitted"] == pytest.approx(predicted * 1.1)
    assert rows[0]["error_pct"]["fitted"] == pytest.approx(0.0, abs=1e-9)
    # At the reference speed the rounds are 1.0, 1.0 and 1.5 times the prediction.
    assert rows[0]["median_round_error_pct"]["fitted"] == pytest.approx(0.0, abs=1e-9)
    # Without per-round speeds each round takes the fastest round's: median 1.25 / 1.1.
    del networks[0]["rounds_speed"]
    _, rows = refit.score(models, networks, ops_of=lambda name: ops)
    assert rows[0]["median_round_error_pct"]["fitted"] == pytest.approx(100 * (1.1 / 1.25 - 1))


def test_round_speeds_are_attached_from_the_jobs_that_timed_each_round():
    network = {"name": "tiny", "measured_ms": 1.0, "speed": 1.1, "rounds_ms": [1.2, 1.0, 1.3],
               "measurement": {"state_canary_ms": 0.11}}  # fmt: skip
    jobs = [
        {"model_name": "tiny.tflite",
         "result": {"median_ms": ms, "environment": {"state_canary_ms": state}}}
        for ms, state in ((1.2, 0.10), (1.0, 0.11), (1.3, 0.13), (9.9, 0.2))
    ]  # fmt: skip
    assert refit.attach_round_speeds([network], jobs) == 1
    assert network["rounds_speed"] == pytest.approx([1.0, 1.1, 1.3])
    # A round no job timed leaves the network as it was.
    other = {**network, "rounds_speed": None, "rounds_ms": [1.2, 1.05]}
    assert refit.attach_round_speeds([other], jobs) == 0
    assert other["rounds_speed"] is None


def test_load_labels_relabel_only_samples_timed_in_several_loads():
    two_loads: dict[str, Any] = {
        "op_type": "fully_connected",
        "latency": {"median_ms": 1.0, "p10_ms": 0.9},
        "environment": {"loads": 2, "load_medians_ms": [1.3, 1.0]},
    }
    flat: dict[str, Any] = {
        "op_type": "lstm",
        "median_ms": 2.0,
        "environment": {"load_medians_ms": [2.0, 2.4]},
    }
    one_load: dict[str, Any] = {
        "op_type": "conv2d",
        "latency": {"median_ms": 0.5},
        "environment": {"loads": 1},
    }
    samples: list[dict[str, Any]] = [two_loads, flat, one_load]
    first, changed = refit.load_labels(samples, "first")
    assert changed == 2
    assert first[0]["latency"] == {"median_ms": 1.3, "p10_ms": 0.9}
    assert first[1]["median_ms"] == 2.0 and first[2] == one_load
    mean, _ = refit.load_labels(samples, "mean")
    assert mean[0]["latency"]["median_ms"] == pytest.approx(1.15)
    assert mean[1]["median_ms"] == pytest.approx(2.2)
    fastest, _ = refit.load_labels(samples, "fastest")
    assert fastest[0]["latency"]["median_ms"] == 1.0 and fastest[1]["median_ms"] == 2.0
    stored, changed = refit.load_labels(samples, "stored")
    assert changed == 0 and stored == samples
    assert two_loads["latency"]["median_ms"] == 1.0  # the input is not touched
    with pytest.raises(ValueError, match="load label"):
        refit.load_labels(samples, "slowest")


def test_variant_curves_carry_the_fits_cv_per_op_type(campaign):
    _, curves = refit.variant_models(campaign, cv=2, seed=0)
    cv = curves["cv_by_op_type"]
    assert cv["conv2d"]["samples"] > 0 and 0 <= cv["conv2d"]["cv_mape"] < 1


def test_smoothing_option_sets_the_fitters_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.refit import parse_args, use_smoothing
    from models import timemodel

    monkeypatch.setattr(timemodel, "TREE_SMOOTHING", timemodel.TREE_SMOOTHING)
    default = list(timemodel.TREE_SMOOTHING)
    assert use_smoothing(None) == default
    args = parse_args(["--samples", "s.json", "--results", "r.json", "--smoothing", "0"])
    assert use_smoothing(args.smoothing) == [0.0]
    assert timemodel.make_regressor("conv2d", timemodel.feature_names("conv2d")).smoothing == (0.0,)


def test_max_canary_ratio_option_reaches_the_fitters_judgement(campaign):
    parse_args = refit.parse_args
    base = ["--samples", "s.json", "--results", "r.json"]
    assert parse_args(base).max_canary_ratio == DEFAULT_MAX_CANARY_RATIO
    assert parse_args([*base, "--max-canary-ratio", "none"]).max_canary_ratio is None
    assert parse_args([*base, "--max-canary-ratio", "1.25"]).max_canary_ratio == 1.25
    with pytest.raises(SystemExit):
        parse_args([*base, "--max-canary-ratio", "0.9"])
    # Half the add samples timed under a canary 1.5x the others': kept only without a limit.
    judged = [
        {**s, "environment": {"quiet": True, "canary_ms": 0.3 if i % 2 else 0.2}}
        if s["op_type"] == "add"
        else s
        for i, s in enumerate(campaign)
    ]
    _, strict = refit.variant_models(judged, cv=2, seed=0)
    _, loose = refit.variant_models(judged, cv=2, seed=0, max_canary_ratio=None)
    assert loose["cv_by_op_type"]["add"]["samples"] > strict["cv_by_op_type"]["add"]["samples"]


def test_p10_labels_and_networks_take_the_10th_percentile():
    samples: list[dict[str, Any]] = [
        {"latency": {"median_ms": 2.0, "p10_ms": 1.8}, "median_ms": 2.0, "p10_ms": 1.8},
        {"latency": {"median_ms": 3.0}},  # no p10 stored: kept as it is
    ]
    relabelled, changed = refit.p10_labels(samples)
    assert changed == 1
    assert relabelled[0]["latency"]["median_ms"] == 1.8 and relabelled[0]["median_ms"] == 1.8
    assert relabelled[1] == samples[1] and samples[0]["median_ms"] == 2.0  # copies
    networks = [
        # The fastest round (the second) keeps its p10 on the network, the others in their round.
        {"name": "a", "measured_ms": 1.0, "p10_ms": 0.9, "rounds_ms": [1.2, 1.0, 1.1],
         "rounds_speed": [1.0, 1.0, 1.0],
         "rounds_measurement": [{"p10_ms": 1.05}, {}, {"p10_ms": 0.95}]},
        # Rounds without their p10: only the fastest round's, and no round speeds.
        {"name": "b", "measured_ms": 2.0, "p10_ms": 1.7, "rounds_ms": [2.0, 2.4],
         "rounds_speed": [1.0, 1.1], "rounds_measurement": [{}, {}]},
        {"name": "c", "measured_ms": 3.0, "p10_ms": None},  # left out
    ]  # fmt: skip
    a, b = refit.p10_networks(networks)
    assert a["measured_ms"] == 0.9 and a["rounds_ms"] == [1.05, 0.9, 0.95]
    assert a["rounds_speed"] == [1.0, 1.0, 1.0]
    assert b["measured_ms"] == 1.7 and b["rounds_ms"] is None and "rounds_speed" not in b
    assert networks[0]["measured_ms"] == 1.0  # copies
    assert refit.parse_args(["--samples", "s", "--results", "r", "--label", "p10"]).label == "p10"
    with pytest.raises(SystemExit, match="--load-label stored"):
        refit.main(["--samples", "s", "--results", "r", "--label", "p10", "--load-label", "first"])


def test_pooled_samples_join_campaigns_and_refuse_a_sample_twice():
    first = [{"op_type": "add", "config": {"n": 1}, "latency": {"median_ms": 1.0}}]
    second = [{"op_type": "add", "config": {"n": 1}, "latency": {"median_ms": 1.1}}]
    pooled = refit.pooled_samples([first, second])
    assert [s["latency"]["median_ms"] for s in pooled] == [1.0, 1.1]
    with pytest.raises(ValueError, match="two dumps"):
        refit.pooled_samples([first, [*second, *first]])
    # Within one dump, equal samples are the campaign's own (invoke overheads of equal label).
    assert len(refit.pooled_samples([[*first, *first], second])) == 3
    args = refit.parse_args(["--samples", "a.json", "b.json", "--results", "r.json"])
    assert [str(p) for p in args.samples] == ["a.json", "b.json"]


def test_at_reference_takes_each_rounds_speed_against_the_refits_reference():
    networks = [
        {"name": "a", "speed": 1.1, "rounds_speed": [1.1, 1.3],
         "measurement": {"state_canary_ms": 0.22},
         "rounds_measurement": [{"state_canary_ms": 0.22}, {"state_canary_ms": 0.26}]},
        {"name": "b", "speed": 1.2, "measurement": {}},  # no speed state: kept
    ]  # fmt: skip
    a, b = refit.at_reference(networks, reference_canary_ms=0.2)
    assert a["speed"] == pytest.approx(1.1) and a["rounds_speed"] == pytest.approx([1.1, 1.3])
    a, b = refit.at_reference(networks, reference_canary_ms=0.1)  # a quieter pooled reference
    assert a["speed"] == pytest.approx(2.2) and a["rounds_speed"] == pytest.approx([2.2, 2.6])
    assert b["speed"] == 1.2 and networks[0]["speed"] == 1.1  # copies


def test_variant_curves_carry_the_fits_reference_canary(campaign):
    timed = [{**s, "environment": {"quiet": True, "canary_ms": 0.2 + 0.001 * (i % 7)}}
             for i, s in enumerate(campaign)]  # fmt: skip
    _, curves = refit.variant_models(timed, cv=2, seed=0)
    _, metrics = fit_device_model(timed, cv=2, seed=0)
    assert curves["reference_canary_ms"] == metrics["reference_canary_ms"] is not None
