"""The benchmark zoo: a fixed set of real networks that build and convert to valid TFLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import zoo

# Two of the cheapest networks to build and convert (a few seconds each).
CHEAP = ("har_conv1d_512x9", "vgg_w16_64")


def test_zoo_covers_the_families_the_issue_asks_for() -> None:
    assert len(zoo.NETWORKS) >= 16
    assert {spec.family for spec in zoo.NETWORKS.values()} == set(zoo.FAMILIES)
    assert all(spec.holdout for spec in zoo.NETWORKS.values())


@pytest.mark.parametrize("name", CHEAP)
def test_cheap_networks_convert_to_tflite_and_are_cached(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo, "cache_dir", lambda: tmp_path)
    flatbuffer = zoo.build_tflite(name)
    assert flatbuffer[4:8] == zoo.TFLITE_MAGIC
    cached = list(tmp_path.glob(f"{name}-{zoo.definition_key(name)}-tf*.tflite"))
    assert len(cached) == 1
    assert cached[0].read_bytes() == flatbuffer
    # A second call is served from the cache, byte for byte.
    assert zoo.build_tflite(name) == flatbuffer

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    assert input_detail["shape"][0] == 1  # batch-1 inputs, as edge inference runs


def test_error_summary_counts_misses_and_shares() -> None:
    from bench.accuracy import error_summary

    # Errors in percent: two within 5%, one within 10%, one beyond, one network not predicted.
    summary = error_summary([-4.0, 3.0, 9.5, -30.0, None])
    assert summary["count"] == 5
    assert summary["predicted"] == 4
    assert summary["mape_pct"] == pytest.approx((4.0 + 3.0 + 9.5 + 30.0) / 4)
    assert summary["within_5_pct"] == pytest.approx(40.0)
    assert summary["within_10_pct"] == pytest.approx(60.0)
    assert summary["max_error_pct"] == pytest.approx(30.0)


def test_measurement_cost_sums_what_the_samples_record() -> None:
    from bench.accuracy import measurement_cost

    samples: list[dict[str, Any]] = [
        {"environment": {"attempts": 1, "canary_polls": 1, "measure_s": 0.5}},
        {
            "environment": {
                "attempts": 3,
                "canary_polls": 4,
                "measure_s": 2.0,
                "loads": 2,
                "load_medians_ms": [1.2, 1.0],
            }
        },
        {"latency": {"median_ms": 1.0}},  # an older sample: no environment, not counted
    ]
    cost = measurement_cost(samples)
    assert cost["measuring_s"] == pytest.approx(2.5)
    assert cost["attempts_per_sample"] == pytest.approx(2.0)
    assert cost["samples_remeasured"] == 1
    assert cost["canary_polls_per_sample"] == pytest.approx(2.5)
    assert cost["samples_in_loads"] == 1 and cost["load_spread"] == pytest.approx(0.2)
    assert measurement_cost([{"environment": {"attempts": 1}}])["measuring_s"] is None


def test_demo_networks_are_zoo_networks() -> None:
    from fdiot.demo import DEMO_NETWORKS

    assert set(DEMO_NETWORKS) <= set(zoo.NETWORKS)
