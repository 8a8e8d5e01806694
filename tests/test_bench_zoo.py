"""The benchmark zoo: a fixed set of real networks that build and convert to valid TFLite."""

from __future__ import annotations

from pathlib import Path

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


def test_demo_networks_are_zoo_networks() -> None:
    from fdiot.demo import DEMO_NETWORKS

    assert set(DEMO_NETWORKS) <= set(zoo.NETWORKS)
