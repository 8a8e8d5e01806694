"""The op-model builder: every op type builds a .tflite that LiteRT loads and runs, with the
output shape and TFLite operator the config promises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from agent.builder import RECURRENT_OP_TYPES, build_op_model, expected_output_shape
from models.opspace import OP_TYPES, TFLITE_OPS, sample_configs

# One small config per op type, touching the options that matter (padding, stride, broadcast).
SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "conv2d": {
        "h": 12,
        "w": 10,
        "cin": 5,
        "cout": 7,
        "kh": 3,
        "kw": 3,
        "stride": 2,
        "padding": "same",
        "activation": "relu",
    },
    "depthwise_conv2d": {
        "h": 11,
        "w": 11,
        "cin": 6,
        "multiplier": 2,
        "kh": 3,
        "kw": 3,
        "stride": 1,
        "padding": "valid",
        "activation": "relu6",
    },
    "fully_connected": {"rows": 3, "cin": 17, "cout": 9, "activation": "none"},
    "max_pool2d": {"h": 9, "w": 9, "c": 4, "kh": 2, "kw": 2, "stride": 2, "padding": "valid"},
    "avg_pool2d": {"h": 9, "w": 9, "c": 4, "kh": 3, "kw": 3, "stride": 2, "padding": "same"},
    "mean": {"h": 5, "w": 6, "c": 8},
    "add": {"h": 4, "w": 5, "c": 6, "broadcast": 0},
    "mul": {"h": 4, "w": 5, "c": 6, "broadcast": 1},
    "sub": {"h": 4, "w": 5, "c": 6, "broadcast": 1},
    "concatenation": {"h": 4, "w": 5, "c1": 3, "c2": 5},
    "pad": {"h": 4, "w": 5, "c": 3, "pad": 2},
    "softmax": {"rows": 2, "c": 10},
    "hard_swish": {"h": 3, "w": 4, "c": 5},
    "logistic": {"h": 3, "w": 4, "c": 5},
    "tanh": {"h": 3, "w": 4, "c": 5},
    "relu": {"h": 3, "w": 4, "c": 5},
    "relu6": {"h": 3, "w": 4, "c": 5},
    "lstm": {"seq_len": 6, "cin": 4, "units": 8, "return_sequences": 0},
    "gru": {"seq_len": 6, "cin": 4, "units": 8, "return_sequences": 1},
    "invoke_overhead": {},
    "conv_chain": {"h": 3, "w": 3, "c": 8, "m": 24, "depth": 3},
}


def _run(model: bytes) -> tuple[tuple[int, ...], list[str], Interpreter]:
    """Load, fill inputs, invoke; return the output shape and the executed op names."""
    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], rng.random(detail["shape"]).astype(np.float32))
    interpreter.invoke()
    output = interpreter.get_output_details()[0]
    assert np.isfinite(interpreter.get_tensor(output["index"])).all()
    op_names = [op["op_name"] for op in interpreter._get_ops_details()]
    return tuple(int(d) for d in output["shape"]), op_names, interpreter


def test_every_op_type_has_a_config_here() -> None:
    assert set(SMALL_CONFIGS) == set(OP_TYPES)


@pytest.mark.parametrize("op_type", OP_TYPES)
def test_op_model_loads_invokes_with_right_output(op_type: str) -> None:
    config = SMALL_CONFIGS[op_type]
    model = build_op_model(op_type, config)
    assert model[4:8] == b"TFL3"  # file identifier
    shape, op_names, _ = _run(model)
    assert shape == expected_output_shape(op_type, config)
    assert TFLITE_OPS[op_type] in op_names


def test_direct_models_are_float32_and_delegated_to_xnnpack() -> None:
    _, op_names, interpreter = _run(build_op_model("conv2d", SMALL_CONFIGS["conv2d"]))
    assert "DELEGATE" in op_names  # the default CPU path took the op
    assert all(d["dtype"] == np.float32 for d in interpreter.get_input_details())


@pytest.mark.parametrize("op_type", [t for t in OP_TYPES if t not in RECURRENT_OP_TYPES])
def test_sampled_campaign_configs_build_and_run(op_type: str) -> None:
    for config in sample_configs(op_type, 3, seed=7):
        shape, _, _ = _run(build_op_model(op_type, config))
        assert shape == expected_output_shape(op_type, config), config


def test_builds_are_deterministic() -> None:
    config = SMALL_CONFIGS["fully_connected"]
    assert build_op_model("fully_connected", config) == build_op_model("fully_connected", config)


def test_weights_have_the_converter_layout() -> None:
    config = {**SMALL_CONFIGS["conv2d"], "cin": 5, "cout": 7}
    _, _, interpreter = _run(build_op_model("conv2d", config))
    shapes = {
        d["name"]: tuple(int(x) for x in d["shape"]) for d in interpreter.get_tensor_details()
    }
    assert shapes["filter"] == (7, 3, 3, 5)  # OHWI
    assert shapes["bias"] == (7,)


@pytest.mark.parametrize(
    ("op_type", "config", "message"),
    [
        ("conv3d", {}, "unknown op_type"),
        ("conv2d", {"h": 8}, "lacks variable"),
        ("conv2d", {**SMALL_CONFIGS["conv2d"], "padding": "full"}, "padding"),
        ("conv2d", {**SMALL_CONFIGS["conv2d"], "kh": 20, "padding": "valid"}, "no output"),
        ("add", {**SMALL_CONFIGS["add"], "broadcast": 2}, "broadcast"),
    ],
)
def test_bad_configs_raise_value_error(op_type: str, config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_op_model(op_type, config)


def test_conv_chain_is_its_layers_in_order() -> None:
    from models.features import parse_tflite
    from models.opspace import chain_layers

    config = SMALL_CONFIGS["conv_chain"]
    ops = parse_tflite(build_op_model("conv_chain", config))
    assert [op.op_type for op in ops] == ["conv2d"] * 3
    assert [op.config for op in ops] == chain_layers(config)


# invoke_overhead is a plain 1-element ADD: the parser rightly reads it back as ``add``; a
# conv_chain reads back as its conv2d layers (above).
@pytest.mark.parametrize(
    "op_type", [t for t in OP_TYPES if t not in ("invoke_overhead", "conv_chain")]
)
def test_parse_tflite_round_trips_the_config(op_type: str) -> None:
    features = pytest.importorskip("models.features")
    if not hasattr(features, "parse_tflite"):
        pytest.skip("models.features.parse_tflite not written yet")
    config = SMALL_CONFIGS[op_type]
    ops = features.parse_tflite(build_op_model(op_type, config))
    measured = [op for op in ops if not op.fallback]
    assert len(measured) == 1, [(op.op_type, op.config) for op in ops]
    assert measured[0].op_type == op_type
    assert {k: measured[0].config[k] for k in config} == config
