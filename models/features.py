"""Cost features of op configurations, and the ops of a .tflite file with their configurations.

``cost_features`` gives FLOPs (one multiply-add counts 2) and float32 bytes of inputs, outputs and
parameters. ``parse_tflite`` walks a TFLite flatbuffer and returns one :class:`OpInstance` per op
the runtime executes; a Keras 3 LSTM/GRU (a ``WHILE`` loop) comes back as one ``lstm``/``gru`` op.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator

from models.opspace import FLOAT32_BYTES, chain_layers, fill_defaults, output_hw

COST_FEATURES: tuple[str, ...] = ("flops", "input_bytes", "output_bytes", "param_bytes")

# Arithmetic per element of element-wise activations (counted operations, not cycles):
# relu = max, relu6 = max+min, hard_swish = x * relu6(x + 3) / 6, logistic/tanh ~ exp + add + div.
_ACTIVATION_FLOPS_PER_ELEMENT: dict[str, int] = {
    "relu": 1,
    "relu6": 2,
    "hard_swish": 4,
    "logistic": 3,
    "tanh": 3,
}
# Softmax per element: subtract max, exp, sum, divide.
_SOFTMAX_FLOPS_PER_ELEMENT = 4
# Gates per recurrent cell (Keras: LSTM i, f, c, o; GRU z, r, h).
_LSTM_GATES = 4
_GRU_GATES = 3


def _features(
    flops: float, input_elems: float, output_elems: float, params: float
) -> dict[str, float]:
    return {
        "flops": float(flops),
        "input_bytes": float(input_elems * FLOAT32_BYTES),
        "output_bytes": float(output_elems * FLOAT32_BYTES),
        "param_bytes": float(params * FLOAT32_BYTES),
    }


def cost_features(op_type: str, config: Mapping[str, Any]) -> dict[str, float]:
    """FLOPs and float32 bytes (input, output, parameter) of one op configuration.

    ``config`` uses the variables of :mod:`models.opspace`; defaults are filled but ranges are not
    checked (use :func:`models.opspace.validate_config` for that).
    """
    c = fill_defaults(op_type, config)
    if op_type == "conv2d":
        oh, ow = output_hw(c["h"], c["w"], c["kh"], c["kw"], c["stride"], c["padding"])
        macs = oh * ow * c["cout"] * c["cin"] * c["kh"] * c["kw"]
        weights = c["kh"] * c["kw"] * c["cin"] * c["cout"] + c["cout"]
        return _features(2 * macs, c["h"] * c["w"] * c["cin"], oh * ow * c["cout"], weights)
    if op_type == "depthwise_conv2d":
        oh, ow = output_hw(c["h"], c["w"], c["kh"], c["kw"], c["stride"], c["padding"])
        cout = c["cin"] * c["multiplier"]
        macs = oh * ow * cout * c["kh"] * c["kw"]
        weights = c["kh"] * c["kw"] * cout + cout
        return _features(2 * macs, c["h"] * c["w"] * c["cin"], oh * ow * cout, weights)
    if op_type == "fully_connected":
        macs = c["rows"] * c["cin"] * c["cout"]
        weights = c["cin"] * c["cout"] + c["cout"]
        return _features(2 * macs, c["rows"] * c["cin"], c["rows"] * c["cout"], weights)
    if op_type in ("max_pool2d", "avg_pool2d"):
        oh, ow = output_hw(c["h"], c["w"], c["kh"], c["kw"], c["stride"], c["padding"])
        # One compare (max) or add (avg) per window element.
        window_ops = oh * ow * c["c"] * c["kh"] * c["kw"]
        return _features(window_ops, c["h"] * c["w"] * c["c"], oh * ow * c["c"], 0)
    if op_type == "mean":
        n = c["h"] * c["w"] * c["c"]
        return _features(n, n, c["c"], 0)
    if op_type in ("add", "mul", "sub"):
        n = c["h"] * c["w"] * c["c"]
        second = c["c"] if c["broadcast"] else n
        return _features(n, n + second, n, 0)
    if op_type == "concatenation":
        n = c["h"] * c["w"] * (c["c1"] + c["c2"])
        return _features(0, n, n, 0)
    if op_type == "pad":
        p = c["pad"]
        return _features(
            0, c["h"] * c["w"] * c["c"], (c["h"] + 2 * p) * (c["w"] + 2 * p) * c["c"], 0
        )
    if op_type == "softmax":
        n = c["rows"] * c["c"]
        return _features(_SOFTMAX_FLOPS_PER_ELEMENT * n, n, n, 0)
    if op_type in _ACTIVATION_FLOPS_PER_ELEMENT:
        n = c["h"] * c["w"] * c["c"]
        return _features(_ACTIVATION_FLOPS_PER_ELEMENT[op_type] * n, n, n, 0)
    if op_type in ("lstm", "gru"):
        gates = _LSTM_GATES if op_type == "lstm" else _GRU_GATES
        u, cin, t = c["units"], c["cin"], c["seq_len"]
        # Kernel (cin x gates*u), recurrent kernel (u x gates*u), bias; Keras 3 GRU has two biases.
        biases = 2 if op_type == "gru" else 1
        weights = gates * u * (cin + u) + biases * gates * u
        macs = t * gates * u * (cin + u)
        # return_sequences: the loop's output is every step's h; else the last step's h only.
        outputs = t * u if c.get("return_sequences", 0) else u
        return _features(2 * macs, t * cin, outputs, weights)
    if op_type == "invoke_overhead":
        return _features(0, 0, 0, 0)
    if op_type == "conv_chain":
        layers = [cost_features("conv2d", layer) for layer in chain_layers(c)]
        return {
            "flops": sum(f["flops"] for f in layers),
            "input_bytes": layers[0]["input_bytes"],
            "output_bytes": layers[-1]["output_bytes"],
            "param_bytes": sum(f["param_bytes"] for f in layers),
        }
    raise ValueError(f"no cost features for op type {op_type!r}")


def tiled_flops(flops: float, width: int, tile: int) -> float:
    """FLOPs as if ``width`` were rounded up to a multiple of ``tile`` (kernels run whole tiles)."""
    if width <= 0:
        return 0.0
    return float(flops) * (math.ceil(width / tile) * tile) / width


class TFLiteParseError(ValueError):
    """The bytes are not a TFLite flatbuffer, or it is malformed."""


@dataclass
class OpInstance:
    """One op as the runtime executes it: its op type, configuration and cost features.

    ``fallback`` is True when the op has no op type of its own in :mod:`models.opspace` (RESHAPE,
    quantized ops, ...); ``config`` then holds the folded shape ``h, w, c`` where it could be read.
    ``extra`` holds the op's tensor ids (``inputs``, ``outputs``) so that fusions can be detected.
    """

    index: int
    op_type: str
    config: dict[str, Any]
    features: dict[str, float]
    tflite_op: str
    fallback: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# TFLite flatbuffer parsing
# ---------------------------------------------------------------------------------------------

_OP_NAMES: dict[int, str] = {
    v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
}
# Bytes per element of each TensorType (FLOAT32, FLOAT16, INT32, UINT8, INT64, STRING, BOOL,
# INT16, COMPLEX64, INT8, FLOAT64, ...); unknown types count 4.
_TYPE_BYTES: dict[int, int] = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 1, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8}
_FLOAT32 = 0
# FusedActivationFunction: NONE, RELU, RELU_N1_TO_1, RELU6, TANH, SIGN_BIT.
_FUSED_ACTIVATIONS: dict[int, str] = {0: "none", 1: "relu", 2: "relu6", 3: "relu6", 4: "relu"}
_ELEMENTWISE = {"ADD": "add", "MUL": "mul", "SUB": "sub"}
_ACTIVATION_OPS = {
    "HARD_SWISH": "hard_swish",
    "LOGISTIC": "logistic",
    "TANH": "tanh",
    "RELU": "relu",
    "RELU6": "relu6",
}
# The TFLite file identifier at bytes 4..8 of every model.
_IDENTIFIER = b"TFL3"


@dataclass
class _Tensor:
    shape: tuple[int, ...]
    type: int
    constant: bool
    data: bytes

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.elements * _TYPE_BYTES.get(self.type, 4)


@dataclass
class _Op:
    name: str
    inputs: list[_Tensor | None]
    outputs: list[_Tensor]
    options: Any
    input_ids: list[int]
    output_ids: list[int]


class _Graph:
    """Plain-Python view of one subgraph: tensors and operators."""

    def __init__(self, model: Any, index: int) -> None:
        graph = model.Subgraphs(index)
        self.tensors: list[_Tensor] = []
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            buffer = (
                model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
            )
            data = (
                buffer.DataAsNumpy().tobytes()
                if buffer is not None and buffer.DataLength()
                else b""
            )
            self.tensors.append(_Tensor(shape, int(tensor.Type()), bool(data), data))
        self.inputs = [int(i) for i in graph.InputsAsNumpy()] if graph.InputsLength() else []
        self.ops: list[_Op] = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            name = _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                custom = code.CustomCode()
                name = f"CUSTOM_{custom.decode(errors='replace')}" if custom else name
            in_ids = _indices(op.InputsAsNumpy, op.InputsLength())
            out_ids = _indices(op.OutputsAsNumpy, op.OutputsLength())
            ins = [self.tensors[j] if j >= 0 else None for j in in_ids]
            outs = [self.tensors[j] for j in out_ids]
            self.ops.append(_Op(name, ins, outs, op.BuiltinOptions(), in_ids, out_ids))


def _indices(getter: Callable[[], Any], length: int) -> list[int]:
    return [int(j) for j in getter()] if length else []


def _options(op: _Op, cls: Any) -> Any:
    if op.options is None:
        return None
    out = cls()
    out.Init(op.options.Bytes, op.options.Pos)
    return out


def _fold(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(h, w, c) of a tensor: NHWC with batch folded into h; other ranks: h=1, w=rest, c=last."""
    if len(shape) == 4:
        return shape[0] * shape[1], shape[2], shape[3]
    if not shape:
        return 1, 1, 1
    return 1, int(np.prod(shape[:-1])) if len(shape) > 1 else 1, shape[-1]


def _activation(options: Any) -> str:
    if options is None:
        return "none"
    return _FUSED_ACTIVATIONS.get(int(options.FusedActivationFunction()), "none")


def _padding(options: Any) -> str:
    # tflite Padding enum: SAME = 0, VALID = 1.
    return "valid" if options is not None and int(options.Padding()) == 1 else "same"


def _generic_features(op: _Op) -> dict[str, float]:
    """Byte counts straight from the tensors; FLOPs as one operation per output element."""
    inputs = [t for t in op.inputs if t is not None]
    return {
        "flops": float(sum(t.elements for t in op.outputs)),
        "input_bytes": float(sum(t.nbytes for t in inputs if not t.constant)),
        "output_bytes": float(sum(t.nbytes for t in op.outputs)),
        "param_bytes": float(sum(t.nbytes for t in inputs if t.constant)),
    }


def _first(op: _Op) -> _Tensor:
    tensor = op.inputs[0] if op.inputs else None
    if tensor is None:
        raise TFLiteParseError(f"{op.name} has no first input tensor")
    return tensor


def _conv_window(
    op: _Op, options_type: Any
) -> tuple[dict[str, Any], tuple[int, int, int, int]] | None:
    """The configuration shared by CONV_2D and DEPTHWISE_CONV_2D, and the raw 4-D weight shape
    (OHWI for conv, 1HW(cin*multiplier) for depthwise); None where the weights are not 4-D."""
    opts = _options(op, options_type)
    h, w, cin = _fold(_first(op).shape)
    weights = op.inputs[1]
    if weights is None or len(weights.shape) != 4:
        return None
    d0, kh, kw, d3 = weights.shape
    stride = int(opts.StrideW() if h == 1 else opts.StrideH()) if opts else 1
    config = {
        "h": h,
        "w": w,
        "cin": cin,
        "kh": kh,
        "kw": kw,
        "stride": stride,
        "padding": _padding(opts),
        "activation": _activation(opts),
    }
    return config, (d0, kh, kw, d3)


def _known_config(op: _Op) -> tuple[str, dict[str, Any]] | None:
    """The op type and configuration of an op the time model knows, else None."""
    name = op.name
    if name == "CONV_2D":
        window = _conv_window(op, tflite.Conv2DOptions)
        if window is None:
            return None
        config, (cout, _, _, _) = window
        return "conv2d", {**config, "cout": cout}
    if name == "DEPTHWISE_CONV_2D":
        window = _conv_window(op, tflite.DepthwiseConv2DOptions)
        if window is None:
            return None
        config, (_, _, _, cout) = window
        config = {**config, "multiplier": max(1, cout // max(1, config["cin"]))}
        return "depthwise_conv2d", config
    if name == "FULLY_CONNECTED":
        opts = _options(op, tflite.FullyConnectedOptions)
        weights = op.inputs[1]
        if weights is None or len(weights.shape) != 2:
            return None
        cout, cin = weights.shape
        rows = max(1, _first(op).elements // max(1, cin))
        return "fully_connected", {
            "rows": rows,
            "cin": cin,
            "cout": cout,
            "activation": _activation(opts),
        }
    if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        opts = _options(op, tflite.Pool2DOptions)
        h, w, c = _fold(_first(op).shape)
        if opts is None:
            return None
        stride = int(opts.StrideW() if h == 1 else opts.StrideH())
        config = {
            "h": h,
            "w": w,
            "c": c,
            "kh": int(opts.FilterHeight()),
            "kw": int(opts.FilterWidth()),
            "stride": stride,
            "padding": _padding(opts),
        }
        return ("max_pool2d" if name == "MAX_POOL_2D" else "avg_pool2d"), config
    if name == "MEAN":
        h, w, c = _fold(_first(op).shape)
        return "mean", {"h": h, "w": w, "c": c}
    if name in _ELEMENTWISE:
        a, b = [*op.inputs, None, None][:2]
        if a is None or b is None:
            return None
        h, w, c = _fold(op.outputs[0].shape)
        return _ELEMENTWISE[name], {
            "h": h,
            "w": w,
            "c": c,
            "broadcast": int(a.elements != b.elements),
        }
    if name == "CONCATENATION":
        parts = [t for t in op.inputs if t is not None]
        opts = _options(op, tflite.ConcatenationOptions)
        out = op.outputs[0]
        h, w, c = _fold(out.shape)
        axis = int(opts.Axis()) if opts else -1
        if axis < 0:
            axis += len(out.shape)
        if len(out.shape) and axis == len(out.shape) - 1:
            c1 = parts[0].shape[-1] if parts[0].shape else 1
        else:  # not on channels: keep the bytes, express the first part as channels
            c1 = max(1, round(parts[0].elements / max(1, h * w)))
        # More than two inputs fold into c2 = the sum of all but the first.
        return "concatenation", {"h": h, "w": w, "c1": c1, "c2": max(1, c - c1)}
    if name == "PAD":
        h, w, c = _fold(_first(op).shape)
        oh, ow, _ = _fold(op.outputs[0].shape)
        return "pad", {"h": h, "w": w, "c": c, "pad": max(0, (max(oh - h, ow - w) + 1) // 2)}
    if name == "SOFTMAX":
        shape = _first(op).shape
        c = shape[-1] if shape else 1
        return "softmax", {"rows": max(1, _first(op).elements // max(1, c)), "c": c}
    if name in _ACTIVATION_OPS:
        h, w, c = _fold(_first(op).shape)
        return _ACTIVATION_OPS[name], {"h": h, "w": w, "c": c}
    if name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        opts = _options(op, tflite.UnidirectionalSequenceLSTMOptions)
        shape = _first(op).shape
        weights = (
            op.inputs[4] if len(op.inputs) > 4 else None
        )  # input-to-output weights [units, cin]
        if len(shape) != 3 or weights is None or len(weights.shape) != 2:
            return None
        seq_len = shape[0] if opts is not None and opts.TimeMajor() else shape[1]
        out_shape = op.outputs[0].shape if op.outputs else ()
        returns = int(len(out_shape) == 3 and seq_len > 1 and seq_len in out_shape[:2])
        return "lstm", {
            "seq_len": seq_len,
            "cin": shape[2],
            "units": weights.shape[0],
            "return_sequences": returns,
        }
    return None


def _recurrent_config(graphs: list[_Graph], op: _Op) -> tuple[str, dict[str, Any]] | None:
    """Recognise a Keras 3 LSTM/GRU converted to WHILE: (op type, config), else None.

    The loop carries the step counters, an output accumulator, the state tensors ``[1, units]``
    (LSTM: h and c; GRU: h) and the input sequence ``[seq_len, 1, cin]``. The body's recurrent
    FULLY_CONNECTED has ``gates * units`` rows: 4 for LSTM, 3 for GRU.
    """
    opts = _options(op, tflite.WhileOptions)
    if opts is None:
        return None
    body_index = int(opts.BodySubgraphIndex())
    if not 0 <= body_index < len(graphs):
        return None
    body = graphs[body_index]
    inputs = [t for t in op.inputs if t is not None]
    states = [t for t in inputs if len(t.shape) == 2 and t.shape[0] == 1]
    sequences = [t for t in inputs if len(t.shape) == 3]
    if not states or not sequences:
        return None
    units = states[0].shape[1]
    sequence = sequences[-1]  # the accumulator comes first, the input sequence last
    seq_len, cin = sequence.shape[0] * sequence.shape[1], sequence.shape[2]
    # The output accumulator is [seq_len, 1, units] when the layer returns sequences (the body
    # then appends each step's h to it), [1, 1, units] when only the last state is returned.
    accumulator = sequences[0] if len(sequences) >= 2 else None
    returns = int(accumulator is not None and accumulator.shape[0] * accumulator.shape[1] > 1)
    gate_rows = [
        o.inputs[1].shape[0]
        for o in body.ops
        if o.name == "FULLY_CONNECTED" and o.inputs[1] is not None and len(o.inputs[1].shape) == 2
    ]
    gates = max(gate_rows) // units if gate_rows and units else (4 if len(states) >= 2 else 3)
    config = {"seq_len": seq_len, "cin": cin, "units": units, "return_sequences": returns}
    if gates == 4 or (not gate_rows and len(states) >= 2):
        return "lstm", config
    if gates == 3:
        return "gru", config
    return None


def _load_graphs(data: bytes) -> list[_Graph]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TFLiteParseError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise TFLiteParseError("not a TFLite model: the file identifier 'TFL3' is missing")
    try:
        model = tflite.Model.GetRootAs(data, 0)
        count = model.SubgraphsLength()
        if count < 1:
            raise TFLiteParseError("malformed TFLite model: no subgraphs")
        return [_Graph(model, i) for i in range(count)]
    except TFLiteParseError:
        raise
    except (
        struct.error,
        IndexError,
        ValueError,
        TypeError,
        AttributeError,
        UnicodeDecodeError,
    ) as exc:
        raise TFLiteParseError(f"malformed TFLite model: {exc}") from exc


def parse_tflite(data: bytes) -> list[OpInstance]:
    """The ops of the main subgraph of a .tflite model, in execution order.

    Ops of a known op type carry the configuration of :mod:`models.opspace` and its
    :func:`cost_features`. A ``WHILE`` that implements a Keras LSTM/GRU becomes one ``lstm``/``gru``
    op (the ops of its cond and body subgraphs are not listed). Every other op, and every op on
    non-float32 tensors (quantized models), comes back with ``fallback=True``, ``op_type`` the
    lower-case TFLite name and byte features read from its tensors. Raises
    :class:`TFLiteParseError` for bytes that are not a TFLite model or are malformed.
    """
    graphs = _load_graphs(data)
    out: list[OpInstance] = []
    for index, op in enumerate(graphs[0].ops):
        try:
            known = _recurrent_config(graphs, op) if op.name == "WHILE" else _known_config(op)
            first = op.inputs[0] if op.inputs else None
            quantized = first is not None and first.type != _FLOAT32 and op.name != "WHILE"
        except (struct.error, IndexError, ValueError, TypeError, AttributeError) as exc:
            raise TFLiteParseError(f"malformed operator {index} ({op.name}): {exc}") from exc
        # Tensor ids let the predictor see what the runtime fuses (PAD into conv, RELU into conv).
        links: dict[str, Any] = {"inputs": op.input_ids, "outputs": op.output_ids}
        if known is not None and not quantized:
            op_type, config = known
            features = cost_features(op_type, config)
            out.append(OpInstance(index, op_type, config, features, op.name, extra=links))
            continue
        if first is not None and first.shape:
            h, w, c = _fold(first.shape)
            config = {"h": h, "w": w, "c": c}
        else:
            config = {}
        extra = {"config_as": known[0], "config": known[1]} if known is not None else {}
        extra.update(links)
        features = cost_features(*known) if known is not None else _generic_features(op)
        out.append(
            OpInstance(
                index, op.name.lower(), config, features, op.name, fallback=True, extra=extra
            )
        )
    return out


__all__ = [
    "COST_FEATURES",
    "OpInstance",
    "TFLiteParseError",
    "cost_features",
    "parse_tflite",
    "tiled_flops",
]
