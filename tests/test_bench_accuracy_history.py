"""bench.accuracy's network history: runs recorded per device and file, compared by median."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import zoo
from bench.accuracy import NetworkResult, record_history, report


def _result(name: str, measured_ms: float, predicted_ms: float) -> NetworkResult:
    return NetworkResult(name, zoo.NETWORKS[name].family, measured_ms, None, None, predicted_ms)


def test_history_keeps_runs_per_device_and_file(tmp_path: Path) -> None:
    shas = {"vgg_w16_64": "vgg-v1", "resnet20_32": "resnet-v1"}
    path = tmp_path / "history.json"
    first = [_result("vgg_w16_64", 3.0, 3.1), _result("resnet20_32", 2.0, 2.2)]
    record_history(path, "vm-cpu", "t1", first, shas, 4)
    record_history(path, "phone", "t2", [_result("vgg_w16_64", 9.0, 9.0)], shas)
    shas["resnet20_32"] = "resnet-v2"  # a changed definition starts its own history
    second = [_result("vgg_w16_64", 3.4, 3.1), _result("resnet20_32", 2.5, 2.2)]
    runs = record_history(path, "vm-cpu", "t3", second, shas, 5)
    assert runs == {"vgg_w16_64": [3.0, 3.4], "resnet20_32": [2.5]}
    assert len(json.loads(path.read_text())) == 3
    # The same device name on other silicon starts its own history.
    moved = record_history(path, "vm-cpu", "t4", second, shas, 6, cpu="EPYC; L3 32768K")
    assert moved == {"vgg_w16_64": [3.4], "resnet20_32": [2.5]}
    # Another host with the same silicon (a new boot) starts its own history too, and the same
    # boot pools again.
    other_host = record_history(path, "vm-cpu", "t5", first, shas, 6, "EPYC; L3 32768K", "b2")
    assert other_host == {"vgg_w16_64": [3.0], "resnet20_32": [2.0]}
    again = record_history(path, "vm-cpu", "t6", second, shas, 6, "EPYC; L3 32768K", "b2")
    assert again == {"vgg_w16_64": [3.0, 3.4], "resnet20_32": [2.0, 2.5]}

    document = report(second, {"mode": "test"}, tmp_path / "accuracy.json", runs)
    pooled = document["summary"]["ours_vs_median_of_runs"]
    assert pooled["runs_per_network"] == 1
    # vgg: 3.1 against the median 3.2 is -3.1%; resnet: 2.2 against 2.5 is -12%.
    assert pooled["mape_pct"] == pytest.approx((100 / 32 + 12.0) / 2)
    assert pooled["within_5_pct"] == 50.0
    rows = {n["name"]: n for n in document["networks"]}
    assert rows["vgg_w16_64"]["median_of_runs_ms"] == pytest.approx(3.2)


def test_report_prints_the_network_extra_curve(tmp_path: Path) -> None:
    from bench import accuracy

    run = {
        "mode": "test",
        "chain_extra": {
            "param_bytes": [1e6, 9.5e6, 17.3e6],
            "ratio": [0.0, 0.036, 0.153],
            "probes": 29,
            "chain_mape_without": 0.029,
            "chain_mape_with": 0.015,
        },
    }
    with accuracy.console.capture() as captured:
        document = report([_result("vgg_w16_64", 3.0, 3.1)], run, tmp_path / "a.json", {})
    text = captured.get()
    assert "from 29 conv_chain probes: 1.0 MB +0.0%, 9.5 MB +3.6%, 17.3 MB +15.3%" in text
    assert "2.9% without, 1.5% with it" in text
    assert document["run"]["chain_extra"]["probes"] == 29


def test_networks_are_measured_in_rounds_and_scored_on_their_fastest(tmp_path: Path) -> None:
    from bench.accuracy import SampleCache, fastest_round, round_orders

    assert round_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    # Two slow rounds (the host slowed for a while) do not move the measured latency.
    fastest_ms, measurement, rounds_ms = fastest_round(
        [(3.2, {"canary_ratio": 1.01}), (3.6, {"canary_ratio": 1.2}), (3.1, {"canary_ratio": 1.0})]
    )
    assert (fastest_ms, rounds_ms) == (3.1, [3.2, 3.6, 3.1])
    assert measurement == {"canary_ratio": 1.0}  # the round the latency came from
    with pytest.raises(ValueError):
        fastest_round([])

    slow_first = NetworkResult(
        "vgg_w16_64", "plain_cnn", 3.0, None, None, 3.0, rounds_ms=[3.6, 3.0, 3.4]
    )
    assert slow_first.error_pct == 0.0
    assert slow_first.first_round_error_pct == pytest.approx(100 * (3.0 - 3.6) / 3.6)
    assert slow_first.median_round_error_pct == pytest.approx(100 * (3.0 - 3.4) / 3.4)
    assert slow_first.rounds_spread_pct == pytest.approx(100 * 0.6 / 3.0)
    document = report([slow_first], {"mode": "test"}, tmp_path / "a.json", {})
    assert document["summary"]["ours"]["within_5_pct"] == 100.0
    assert document["summary"]["ours_first_round"]["within_5_pct"] == 0.0
    assert document["summary"]["ours_median_round"]["within_10_pct"] == 0.0
    assert document["networks"][0]["rounds_ms"] == [3.6, 3.0, 3.4]
    # A single measurement gets no round rows and no spread.
    single = report([_result("vgg_w16_64", 3.0, 3.1)], {"mode": "test"}, tmp_path / "b.json", {})
    assert "ours_first_round" not in single["summary"]
    assert "ours_median_round" not in single["summary"]
    assert single["networks"][0]["rounds_spread_pct"] is None

    # The offline cache keeps every round; one written before rounds reads as one round.
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({"samples": {}, "networks": {"vgg x": {"median_ms": 2.0}}}))
    cache = SampleCache(path)
    flatbuffer = b"not a model"
    assert cache.network("vgg", flatbuffer) == []
    cache.put_network("vgg", flatbuffer, [{"median_ms": 2.0}, {"median_ms": 2.2}])
    cache.save()
    assert SampleCache(path).network("vgg", flatbuffer) == [{"median_ms": 2.0}, {"median_ms": 2.2}]
    cache.networks[f"vgg {zoo.sha256(flatbuffer)}"] = {"median_ms": 1.5}
    assert cache.network("vgg", flatbuffer) == [{"median_ms": 1.5}]


def test_first_and_median_round_are_scored_at_each_rounds_own_speed(tmp_path: Path) -> None:
    # 2.0 ms at the reference speed; the fastest round (3.0 ms) ran at speed 1.5 (its state),
    # the others at 1.0 and 1.2: carried to the reference speed they are 3.2 / 1.0 = 3.2,
    # 3.0 / 1.5 = 2.0 and 3.12 / 1.2 = 2.6, whose median is 2.6.
    result = NetworkResult(
        "vgg_w16_64",
        "plain_cnn",
        3.0,
        None,
        None,
        predicted_ms=2.0 * 1.5,
        rounds_ms=[3.2, 3.0, 3.12],
        speed=1.5,
        rounds_speed=[1.0, 1.5, 1.2],
    )
    assert result.error_pct == pytest.approx(0.0)
    assert result.first_round_error_pct == pytest.approx(100 * (2.0 - 3.2) / 3.2)
    assert result.median_round_error_pct == pytest.approx(100 * (2.0 - 2.6) / 2.6)
    # Without per-round speeds (results written before them) every round takes the fastest's.
    legacy = NetworkResult(
        "vgg_w16_64", "plain_cnn", 3.0, None, None, 3.0, rounds_ms=[3.2, 3.0, 3.12], speed=1.5
    )
    assert legacy.median_round_error_pct == pytest.approx(100 * (3.0 - 3.12) / 3.12)
    document = report([result], {"mode": "test"}, tmp_path / "r.json", {})
    assert document["networks"][0]["rounds_speed"] == [1.0, 1.5, 1.2]


def test_network_result_takes_each_rounds_speed_from_its_state() -> None:
    from bench.accuracy import _network_result
    from models.timemodel import NetworkPrediction

    rounds = [{"state_canary_ms": 0.1}, {"state_canary_ms": 0.12}, {"state_canary_ms": 0.11}]
    result = _network_result(
        "vgg_w16_64",
        b"",
        ({}, {}),
        measured_ms=3.0,
        p10_ms=None,
        p90_ms=None,
        prediction=NetworkPrediction(total_ms=2.0, overhead_ms=0.0, ops=[]),
        baselines={},
        measurement=rounds[1],
        rounds_ms=[3.1, 3.0, 3.3],
        reference_canary_ms=0.1,
        rounds_measurement=rounds,
    )
    assert result.speed == pytest.approx(1.2)
    assert result.rounds_speed == pytest.approx([1.0, 1.2, 1.1])
    assert result.rounds_measurement[2] == {"state_canary_ms": 0.11}
