"""bench.prefix_composition: where in a network running its ops together costs."""

from __future__ import annotations

import pytest

from bench import prefix_composition
from models.features import OpInstance, cost_features
from models.timemodel import DeviceTimeModel

LAYERS = [
    ("input", "InputLayer"),
    ("conv", "Conv2D"),
    ("add_1", "Add"),
    ("conv_2", "Conv2D"),
    ("add_2", "Add"),
    ("add_3", "Add"),
    ("add_4", "Add"),
    ("pool", "GlobalAveragePooling2D"),
    ("dense", "Dense"),
]


def test_cuts_are_additions_spread_evenly_ending_at_the_last():
    assert prefix_composition.cut_points(LAYERS, 2) == ["add_2", "add_4"]
    assert prefix_composition.cut_points(LAYERS, 4) == ["add_1", "add_2", "add_3", "add_4"]
    assert prefix_composition.cut_points(LAYERS, 9) == ["add_1", "add_2", "add_3", "add_4"]
    assert prefix_composition.cut_points(LAYERS, 0) == []
    assert prefix_composition.cut_points([("conv", "Conv2D")], 3) == []


def _prefix(cut, whole, alone, param_bytes, predicted=None, predicted_ops=None):
    row = {"cut": cut, "network_ms": [whole + 0.1, whole], "sum_alone_ms": alone,
           "param_bytes": param_bytes}  # fmt: skip
    if predicted is not None:
        row["predicted_ms"], row["predicted_ops_ms"] = predicted, predicted_ops
    return row


def test_segments_are_the_differences_of_consecutive_prefixes():
    rows = prefix_composition.segments(
        [
            _prefix("add_2", 1.0, 1.0, 1e5, 0.9, 0.9),
            _prefix("full", 2.3, 2.0, 5e6, 2.1, 1.9),
        ]
    )
    assert [(r["from"], r["to"]) for r in rows] == [("input", "add_2"), ("add_2", "full")]
    assert rows[0]["ratio"] == pytest.approx(1.0) and rows[0]["model_ratio"] == pytest.approx(1.0)
    # The late stretch: 1.3 ms whole against 1.0 ms alone; the model added 0.2 over its 1.0.
    assert rows[1]["whole_ms"] == pytest.approx(1.3) and rows[1]["alone_ms"] == pytest.approx(1.0)
    assert rows[1]["ratio"] == pytest.approx(1.3) and rows[1]["model_ratio"] == pytest.approx(1.2)
    assert rows[1]["param_bytes"] == pytest.approx(4.9e6)
    assert "model_ratio" not in prefix_composition.segments([_prefix("full", 1, 1, 0)])[0]


def test_the_model_ratio_is_what_its_network_terms_add_to_its_ops():
    conv = {"h": 7, "w": 7, "cin": 64, "cout": 64, "kh": 1, "kw": 1, "stride": 1,
            "padding": "same", "activation": "relu"}  # fmt: skip
    act = {"h": 7, "w": 7, "c": 64}
    ops = [
        OpInstance(0, "conv2d", conv, cost_features("conv2d", conv), "CONV_2D"),
        OpInstance(1, "hard_swish", act, cost_features("hard_swish", act), "HARD_SWISH"),
    ]
    # No trees: both ops priced by the fallback rates. A flat 10% extra curve within the cache
    # applies to the op with weights only.
    model = DeviceTimeModel({}, 0.01, chain_extra=([0.0, 1e9], [0.1, 0.1]))
    network_ms, ops_ms = prefix_composition.model_ratio(model, ops)
    conv_ms = model.predict_op("conv2d", conv, ops[0].features)[0]
    assert ops_ms == pytest.approx(0.01 + conv_ms + model.predict_op("hard_swish", act)[0])
    assert network_ms == pytest.approx(ops_ms + 0.1 * conv_ms)
