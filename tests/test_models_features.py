"""Cost features and the TFLite parser, checked against models built with TensorFlow."""

from __future__ import annotations

import os

import pytest

from models.features import (
    OpInstance,
    TFLiteParseError,
    cost_features,
    parse_tflite,
    tiled_flops,
)


def test_conv_cost_features_match_internals_example():
    config = {"h": 56, "w": 56, "cin": 64, "cout": 65, "kh": 3, "kw": 3, "stride": 1,
              "padding": "same", "activation": "relu"}  # fmt: skip
    feats = cost_features("conv2d", config)
    assert feats == {
        "flops": 2 * 56 * 56 * 64 * 65 * 9,
        "input_bytes": 802816,
        "output_bytes": 815360,
        "param_bytes": 150020,
    }


def test_cost_features_of_other_ops():
    fc = cost_features("fully_connected", {"rows": 128, "cin": 64, "cout": 10})
    assert fc["flops"] == 2 * 128 * 64 * 10 and fc["param_bytes"] == (64 * 10 + 10) * 4
    dw = cost_features(
        "depthwise_conv2d", {"h": 48, "cin": 96, "kh": 3, "stride": 2, "padding": "same"}
    )
    assert dw["flops"] == 2 * 24 * 24 * 96 * 9 and dw["output_bytes"] == 24 * 24 * 96 * 4
    add = cost_features("add", {"h": 7, "w": 7, "c": 8, "broadcast": 1})
    assert add["input_bytes"] == (7 * 7 * 8 + 8) * 4
    lstm = cost_features("lstm", {"seq_len": 50, "cin": 9, "units": 64})
    assert lstm["flops"] == 2 * 50 * 4 * 64 * (9 + 64)
    assert tiled_flops(100.0, 65, 32) == pytest.approx(100.0 * 96 / 65)


def test_rejects_bytes_that_are_not_tflite():
    with pytest.raises(TFLiteParseError, match="TFL3"):
        parse_tflite(b"\x89PNG\r\n\x1a\n not a model")
    with pytest.raises(TFLiteParseError):
        parse_tflite(b"\x00\x00\x00\x00TFL3" + b"\xff" * 8)


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


def _convert(tf, model):
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


@pytest.fixture(scope="module")
def sensor_net(tf):
    """Conv1D + LSTM + GRU sensing model (batch 1: recurrent layers need a static batch)."""
    keras = tf.keras
    inp = keras.Input((64, 6), batch_size=1)
    x = keras.layers.Conv1D(30, 5, activation="relu")(inp)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.LSTM(24, return_sequences=True)(x)
    x = keras.layers.GRU(20)(x)
    x = keras.layers.Dense(5, activation="softmax")(x)
    return parse_tflite(_convert(tf, keras.Model(inp, x)))


@pytest.fixture(scope="module")
def small_cnn(tf):
    keras = tf.keras
    inp = keras.Input((32, 32, 3))
    x = keras.layers.ZeroPadding2D(1)(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu6")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Add()([x, y])
    a = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.Concatenate()([x, a])
    x = keras.layers.Activation("hard_swish")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10)(x)
    return parse_tflite(_convert(tf, keras.Model(inp, x)))


def test_sensor_net_ops(sensor_net):
    kinds = [op.op_type for op in sensor_net]
    assert kinds.count("lstm") == 1 and kinds.count("gru") == 1
    assert "while" not in kinds and "logistic" not in kinds  # loop bodies are not listed
    conv = next(op for op in sensor_net if op.op_type == "conv2d")
    assert conv.config == {"h": 1, "w": 64, "cin": 6, "cout": 30, "kh": 1, "kw": 5, "stride": 1,
                           "padding": "valid", "activation": "relu"}  # fmt: skip
    assert conv.features["flops"] == 2 * 60 * 30 * 6 * 5
    lstm = next(op for op in sensor_net if op.op_type == "lstm")
    # The LSTM feeds the GRU (return_sequences=True); the GRU returns its last state only.
    assert lstm.config == {"seq_len": 30, "cin": 30, "units": 24, "return_sequences": 1}
    assert not lstm.fallback and lstm.features["output_bytes"] == 30 * 24 * 4
    gru = next(op for op in sensor_net if op.op_type == "gru")
    assert gru.config == {"seq_len": 30, "cin": 24, "units": 20, "return_sequences": 0}
    assert gru.features["output_bytes"] == 20 * 4
    dense = next(op for op in sensor_net if op.op_type == "fully_connected")
    assert dense.config["cin"] == 20 and dense.config["cout"] == 5
    assert any(op.op_type == "softmax" for op in sensor_net)
    assert all(op.fallback for op in sensor_net if op.op_type in ("reshape", "expand_dims"))


def test_small_cnn_ops(small_cnn):
    by_type: dict[str, list[OpInstance]] = {}
    for op in small_cnn:
        by_type.setdefault(op.op_type, []).append(op)
    assert by_type["pad"][0].config == {"h": 32, "w": 32, "c": 3, "pad": 1}
    first = by_type["conv2d"][0]
    assert first.config["stride"] == 2 and first.config["padding"] == "valid"
    assert first.config["activation"] == "relu6"
    assert first.features["flops"] == 2 * 16 * 16 * 16 * 3 * 9
    assert by_type["depthwise_conv2d"][0].config["cin"] == 16
    assert by_type["add"][0].config["broadcast"] == 0
    assert by_type["concatenation"][0].config == {"h": 16, "w": 16, "c1": 16, "c2": 8}
    assert by_type["hard_swish"][0].config == {"h": 16, "w": 16, "c": 24}
    assert by_type["mean"][0].config == {"h": 16, "w": 16, "c": 24}
    assert [op.index for op in small_cnn] == list(range(len(small_cnn)))
