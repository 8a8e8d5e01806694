"""bench.speed_states and the speed scaling of network predictions (bench.accuracy)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import speed_states
from bench.accuracy import _network_result
from models import timemodel


def _metrics(rows: list[tuple[int, float, float]], samples: int) -> dict[str, Any]:
    """Metrics as fit_device_model keeps them: conv2d's out-of-fold (config, label, prediction)."""
    predictions = [
        {"config": {"cout": c}, "measured_ms": label, "predicted_ms": predicted}
        for c, label, predicted in rows
    ]
    return {
        "samples": samples,
        "disturbed_samples": {"conv2d": 10 - samples},
        "per_op_type": {
            "conv2d": {"samples": samples, "cv_mape": 0.1, "cv_predictions": predictions}
        },
    }


def test_variants_are_scored_on_the_configurations_off_fits_against_its_labels():
    off = _metrics([(8, 1.0, 1.2), (16, 2.0, 2.0)], samples=2)
    # The speed-state fit has more configurations and its own labels; only 8 and 16 are scored,
    # against off's labels: 1.1 / 1.0 and 2.2 / 2.0, both 10% off.
    states = _metrics([(8, 1.01, 1.1), (16, 2.02, 2.2), (32, 4.0, 9.0)], samples=3)
    summary = speed_states.summarize({"off": off, "window_15": states}, ["conv2d"])
    assert summary["off"]["per_op_type"]["conv2d"]["on_off_configs"] == pytest.approx(0.1)
    window = summary["window_15"]
    assert window["per_op_type"]["conv2d"]["on_off_configs"] == pytest.approx(0.1)
    assert window["per_op_type"]["conv2d"]["off_configs_predicted"] == 2
    assert window["samples"] == 3 and window["disturbed"] == 7


def test_the_window_is_restored_after_a_variant():
    saved = timemodel.SPEED_STATE_WINDOW
    with speed_states.state_window(3):
        assert timemodel.SPEED_STATE_WINDOW == 3
    assert saved == timemodel.SPEED_STATE_WINDOW


def test_a_network_is_predicted_at_the_speed_it_was_timed_at():
    prediction = {"total_ms": 10.0, "ops": [{"op_type": "conv2d", "predicted_ms": 9.5}]}
    result = _network_result(
        "vgg_w16_64",
        b"",
        ({"conv2d": 1}, {}),
        measured_ms=11.6,
        p10_ms=None,
        p90_ms=None,
        prediction=prediction,
        baselines={},
        measurement={"state_canary_ms": 0.50, "canary_ms": 0.46},
        reference_canary_ms=0.4,
    )
    assert result.speed == pytest.approx(1.25)
    assert result.predicted_ms == pytest.approx(12.5)
    assert result.baselines_ms["ours_reference_speed"] == pytest.approx(10.0)
    # The ablation row scales by the network's own canary instead.
    assert result.baselines_ms["ours_canary_speed"] == pytest.approx(11.5)
    # A measurement without a state (agents before 2026-12-01) is taken at the reference speed.
    plain = _network_result(
        "vgg_w16_64",
        b"",
        ({"conv2d": 1}, {}),
        measured_ms=11.6,
        p10_ms=None,
        p90_ms=None,
        prediction=prediction,
        baselines={},
        measurement={"canary_ratio": 1.2},
        reference_canary_ms=0.4,
    )
    assert plain.speed == 1.0 and plain.predicted_ms == pytest.approx(10.0)


def test_the_fit_workers_network_validation_predicts_at_the_timed_speed():
    from types import SimpleNamespace

    from tests.helpers import tiny_tflite
    from worker.fitting import validate_on_networks

    class TenMs:
        def predict_network(self, ops: Any) -> Any:
            return SimpleNamespace(total_ms=10.0, by_op_type_ms=lambda: {"conv2d": 9.5})

    def job(state_canary_ms: float | None) -> Any:
        environment = {} if state_canary_ms is None else {"state_canary_ms": state_canary_ms}
        result = {"latency": {"median_ms": 12.0}, "environment": environment}
        return SimpleNamespace(id=1, model_name="n", model_bytes=tiny_tflite(), result=result)

    validation = validate_on_networks(TenMs(), [job(0.48), job(None)], reference_canary_ms=0.4)  # type: ignore[arg-type]
    slow, plain = validation["items"]
    assert slow["speed"] == pytest.approx(1.2) and slow["error_pct"] == pytest.approx(0.0)
    assert plain["speed"] == 1.0 and plain["error_pct"] == pytest.approx(100 * 2 / 12)
    assert "expected_error_pct" not in slow and validation["within_band_pct"] is None
    # With the fit's CV per op type, each network gets its band and the share within it: a
    # 10% band holds the exact one and not the one 16.7% off.
    banded = validate_on_networks(
        TenMs(),  # type: ignore[arg-type]
        [job(0.48), job(None)],
        reference_canary_ms=0.4,
        per_op_type={"conv2d": {"cv_mape": 0.10}},
    )
    assert [i["expected_error_pct"] for i in banded["items"]] == pytest.approx([10.0, 10.0])
    assert banded["within_band_pct"] == 50.0
