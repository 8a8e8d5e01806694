"""Single-op .tflite models, one per op configuration, for measurement on a device.

Every op type of ``docs/internals.md`` except the recurrent ones is written directly as a
TFLite flatbuffer (schema version 3) with the ``flatbuffers`` builder and the ``tflite`` package's
generated builder functions: TFLiteConverter takes 0.16-0.44 s per single-conv model, about as long
as the timed runs themselves, while writing the flatbuffer takes milliseconds.
``bench/builder_parity.py`` checks that the directly written models time like converter-built ones.

Layout, as the TFLite converter emits it: activations NHWC with batch 1, conv filter OHWI
``[cout, kh, kw, cin]``, depthwise filter ``[1, kh, kw, cin * multiplier]``, fully-connected
weights ``[cout, cin]``, bias ``[cout]``. The op's activation inputs are graph inputs; weights are
constant buffers filled with seeded random float32 values.

``lstm`` and ``gru`` are Keras 3 layers converted by TensorFlow (imported lazily), cached on disk.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import tflite

from models.opspace import OP_TYPES, chain_layers

# TFLite flatbuffer schema version and file identifier (tensorflow/lite/schema/schema.fbs).
TFLITE_SCHEMA_VERSION = 3
TFLITE_FILE_IDENTIFIER = b"TFL3"
# XNNPACK and the TFLite arena read constant buffers in place; 16 bytes is the alignment the
# TFLite converter forces on buffer data (flatbuffer_export.cc, ForceVectorAlignment(16)).
_BUFFER_ALIGNMENT_BYTES = 16
# Fixed seed: the same config always yields byte-identical models (same sha256, cacheable).
_WEIGHT_SEED = 20180101

RECURRENT_OP_TYPES = frozenset({"lstm", "gru"})

_ACTIVATIONS = {
    "none": tflite.ActivationFunctionType.NONE,
    "relu": tflite.ActivationFunctionType.RELU,
    "relu6": tflite.ActivationFunctionType.RELU6,
}
_PADDINGS = {"same": tflite.Padding.SAME, "valid": tflite.Padding.VALID}
_ELEMENTWISE = {
    "hard_swish": tflite.BuiltinOperator.HARD_SWISH,
    "logistic": tflite.BuiltinOperator.LOGISTIC,
    "tanh": tflite.BuiltinOperator.TANH,
    "relu": tflite.BuiltinOperator.RELU,
    "relu6": tflite.BuiltinOperator.RELU6,
}

OptionsWriter = Callable[[flatbuffers.Builder], int]


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None  # None: an activation (graph input or op output)


@dataclass(frozen=True)
class _Graph:
    """One operator (or a chain of them) and its tensors: inputs/outputs index ``tensors``."""

    builtin_code: int
    tensors: tuple[_Tensor, ...]
    op_inputs: tuple[int, ...]
    op_outputs: tuple[int, ...]
    options_type: int = tflite.BuiltinOptions.NONE
    write_options: OptionsWriter | None = None
    # Further operators of the same code and options, each (inputs, outputs): a chain whose
    # model output is the last operator's output.
    more_ops: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()

    @property
    def model_outputs(self) -> tuple[int, ...]:
        return self.more_ops[-1][1] if self.more_ops else self.op_outputs


def build_op_model(op_type: str, config: Mapping[str, Any]) -> bytes:
    """Return a float32 .tflite model holding one op of ``op_type`` with ``config``.

    Raises ``ValueError`` for an unknown op type, a missing config variable or a config with no
    valid output (e.g. a ``valid`` kernel larger than its input).
    """
    if op_type not in OP_TYPES:
        raise ValueError(f"unknown op_type {op_type!r}; known: {', '.join(OP_TYPES)}")
    try:
        if op_type in RECURRENT_OP_TYPES:
            return _recurrent_model(
                op_type,
                int(config["seq_len"]),
                int(config["cin"]),
                int(config["units"]),
                bool(int(config.get("return_sequences", 0))),
            )
        return _serialize(_graph(op_type, config))
    except KeyError as missing:
        raise ValueError(f"{op_type} config lacks variable {missing}") from None


def expected_output_shape(op_type: str, config: Mapping[str, Any]) -> tuple[int, ...]:
    """The output tensor shape the model of ``build_op_model(op_type, config)`` must produce."""
    if op_type in RECURRENT_OP_TYPES:
        # Keras return_sequences=True: every step's hidden state; else the last step's.
        if int(config.get("return_sequences", 0)):
            return (1, int(config["seq_len"]), int(config["units"]))
        return (1, int(config["units"]))
    graph = _graph(op_type, config)
    return graph.tensors[graph.model_outputs[0]].shape


# ---------------------------------------------------------------------------- graph per op type


def _graph(op_type: str, c: Mapping[str, Any]) -> _Graph:
    rng = np.random.default_rng(_WEIGHT_SEED)
    tensors: tuple[_Tensor, ...]
    ops = tflite.BuiltinOperator
    kinds = tflite.BuiltinOptions
    if op_type == "conv2d":
        h, w, cin, cout = int(c["h"]), int(c["w"]), int(c["cin"]), int(c["cout"])
        kh, kw, stride = int(c["kh"]), int(c["kw"]), int(c["stride"])
        padding, act = _padding(c["padding"]), _activation(c["activation"])
        oh, ow = _window_out(c)
        tensors = (
            _Tensor("input", (1, h, w, cin)),
            _Tensor(
                "filter", (cout, kh, kw, cin), _weights(rng, (cout, kh, kw, cin), kh * kw * cin)
            ),
            _Tensor("bias", (cout,), _weights(rng, (cout,), 1)),
            _Tensor("output", (1, oh, ow, cout)),
        )
        return _Graph(
            ops.CONV_2D,
            tensors,
            (0, 1, 2),
            (3,),
            kinds.Conv2DOptions,
            _conv2d_options(padding, stride, act),
        )
    if op_type == "depthwise_conv2d":
        h, w, cin, mult = int(c["h"]), int(c["w"]), int(c["cin"]), int(c["multiplier"])
        kh, kw, stride = int(c["kh"]), int(c["kw"]), int(c["stride"])
        padding, act = _padding(c["padding"]), _activation(c["activation"])
        oh, ow = _window_out(c)
        cout = cin * mult

        def dw_options(b: flatbuffers.Builder) -> int:
            tflite.DepthwiseConv2DOptionsStart(b)
            tflite.DepthwiseConv2DOptionsAddPadding(b, padding)
            tflite.DepthwiseConv2DOptionsAddStrideW(b, stride)
            tflite.DepthwiseConv2DOptionsAddStrideH(b, stride)
            tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, mult)
            tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, act)
            tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
            tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
            return int(tflite.DepthwiseConv2DOptionsEnd(b))

        tensors = (
            _Tensor("input", (1, h, w, cin)),
            _Tensor("filter", (1, kh, kw, cout), _weights(rng, (1, kh, kw, cout), kh * kw)),
            _Tensor("bias", (cout,), _weights(rng, (cout,), 1)),
            _Tensor("output", (1, oh, ow, cout)),
        )
        return _Graph(
            ops.DEPTHWISE_CONV_2D,
            tensors,
            (0, 1, 2),
            (3,),
            kinds.DepthwiseConv2DOptions,
            dw_options,
        )
    if op_type == "fully_connected":
        rows, cin, cout = int(c["rows"]), int(c["cin"]), int(c["cout"])
        act = _activation(c["activation"])

        def fc_options(b: flatbuffers.Builder) -> int:
            tflite.FullyConnectedOptionsStart(b)
            tflite.FullyConnectedOptionsAddFusedActivationFunction(b, act)
            tflite.FullyConnectedOptionsAddWeightsFormat(
                b, tflite.FullyConnectedOptionsWeightsFormat.DEFAULT
            )
            tflite.FullyConnectedOptionsAddKeepNumDims(b, False)
            return int(tflite.FullyConnectedOptionsEnd(b))

        tensors = (
            _Tensor("input", (rows, cin)),
            _Tensor("weights", (cout, cin), _weights(rng, (cout, cin), cin)),
            _Tensor("bias", (cout,), _weights(rng, (cout,), 1)),
            _Tensor("output", (rows, cout)),
        )
        return _Graph(
            ops.FULLY_CONNECTED, tensors, (0, 1, 2), (3,), kinds.FullyConnectedOptions, fc_options
        )
    if op_type in ("max_pool2d", "avg_pool2d"):
        h, w, ch = int(c["h"]), int(c["w"]), int(c["c"])
        kh, kw, stride = int(c["kh"]), int(c["kw"]), int(c["stride"])
        padding = _padding(c["padding"])
        oh, ow = _window_out(c)

        def pool_options(b: flatbuffers.Builder) -> int:
            tflite.Pool2DOptionsStart(b)
            tflite.Pool2DOptionsAddPadding(b, padding)
            tflite.Pool2DOptionsAddStrideW(b, stride)
            tflite.Pool2DOptionsAddStrideH(b, stride)
            tflite.Pool2DOptionsAddFilterWidth(b, kw)
            tflite.Pool2DOptionsAddFilterHeight(b, kh)
            tflite.Pool2DOptionsAddFusedActivationFunction(b, tflite.ActivationFunctionType.NONE)
            return int(tflite.Pool2DOptionsEnd(b))

        code = ops.MAX_POOL_2D if op_type == "max_pool2d" else ops.AVERAGE_POOL_2D
        tensors = (_Tensor("input", (1, h, w, ch)), _Tensor("output", (1, oh, ow, ch)))
        return _Graph(code, tensors, (0,), (1,), kinds.Pool2DOptions, pool_options)
    if op_type == "mean":
        h, w, ch = int(c["h"]), int(c["w"]), int(c["c"])

        def mean_options(b: flatbuffers.Builder) -> int:
            tflite.ReducerOptionsStart(b)
            # keep_dims=False, as Keras GlobalAveragePooling2D converts.
            tflite.ReducerOptionsAddKeepDims(b, False)
            return int(tflite.ReducerOptionsEnd(b))

        tensors = (
            _Tensor("input", (1, h, w, ch)),
            _Tensor("axis", (2,), np.array([1, 2], dtype=np.int32)),
            _Tensor("output", (1, ch)),
        )
        return _Graph(ops.MEAN, tensors, (0, 1), (2,), kinds.ReducerOptions, mean_options)
    if op_type in ("add", "mul", "sub"):
        h, w, ch, broadcast = int(c["h"]), int(c["w"]), int(c["c"]), int(c["broadcast"])
        if broadcast not in (0, 1):
            raise ValueError(f"{op_type}: broadcast must be 0 or 1, got {broadcast}")
        second = (1, 1, 1, ch) if broadcast else (1, h, w, ch)
        tensors = (
            _Tensor("input_a", (1, h, w, ch)),
            _Tensor("input_b", second),
            _Tensor("output", (1, h, w, ch)),
        )
        code, kind, writer = _binary_op(op_type)
        return _Graph(code, tensors, (0, 1), (2,), kind, writer)
    if op_type == "concatenation":
        h, w, c1, c2 = int(c["h"]), int(c["w"]), int(c["c1"]), int(c["c2"])

        def concat_options(b: flatbuffers.Builder) -> int:
            tflite.ConcatenationOptionsStart(b)
            tflite.ConcatenationOptionsAddAxis(b, 3)  # channels of NHWC
            tflite.ConcatenationOptionsAddFusedActivationFunction(
                b, tflite.ActivationFunctionType.NONE
            )
            return int(tflite.ConcatenationOptionsEnd(b))

        tensors = (
            _Tensor("input_a", (1, h, w, c1)),
            _Tensor("input_b", (1, h, w, c2)),
            _Tensor("output", (1, h, w, c1 + c2)),
        )
        return _Graph(
            ops.CONCATENATION, tensors, (0, 1), (2,), kinds.ConcatenationOptions, concat_options
        )
    if op_type == "pad":
        h, w, ch, pad = int(c["h"]), int(c["w"]), int(c["c"]), int(c["pad"])
        if pad < 0:
            raise ValueError(f"pad: pad must be >= 0, got {pad}")
        paddings = np.array([[0, 0], [pad, pad], [pad, pad], [0, 0]], dtype=np.int32)

        def pad_options(b: flatbuffers.Builder) -> int:
            tflite.PadOptionsStart(b)
            return int(tflite.PadOptionsEnd(b))

        tensors = (
            _Tensor("input", (1, h, w, ch)),
            _Tensor("paddings", (4, 2), paddings),
            _Tensor("output", (1, h + 2 * pad, w + 2 * pad, ch)),
        )
        return _Graph(ops.PAD, tensors, (0, 1), (2,), kinds.PadOptions, pad_options)
    if op_type == "softmax":
        rows, ch = int(c["rows"]), int(c["c"])

        def softmax_options(b: flatbuffers.Builder) -> int:
            tflite.SoftmaxOptionsStart(b)
            tflite.SoftmaxOptionsAddBeta(b, 1.0)
            return int(tflite.SoftmaxOptionsEnd(b))

        tensors = (_Tensor("input", (rows, ch)), _Tensor("output", (rows, ch)))
        return _Graph(ops.SOFTMAX, tensors, (0,), (1,), kinds.SoftmaxOptions, softmax_options)
    if op_type in _ELEMENTWISE:
        h, w, ch = int(c["h"]), int(c["w"]), int(c["c"])
        tensors = (_Tensor("input", (1, h, w, ch)), _Tensor("output", (1, h, w, ch)))
        return _Graph(_ELEMENTWISE[op_type], tensors, (0,), (1,))
    if op_type == "conv_chain":
        return _chain_graph(c, rng)
    if op_type == "invoke_overhead":
        tensors = (_Tensor("input_a", (1,)), _Tensor("input_b", (1,)), _Tensor("output", (1,)))
        code, kind, writer = _binary_op("add")
        return _Graph(code, tensors, (0, 1), (2,), kind, writer)
    raise ValueError(f"no flatbuffer builder for op_type {op_type!r}")


def _chain_graph(c: Mapping[str, Any], rng: np.random.Generator) -> _Graph:
    """``depth`` 1x1 CONV_2Ds in a row (``models.opspace.chain_layers``), weights of their own."""
    layers = chain_layers(c)
    h, w = int(c["h"]), int(c["w"])
    tensors = [_Tensor("input", (1, h, w, layers[0]["cin"]))]
    operators: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for i, layer in enumerate(layers):
        cin, cout = layer["cin"], layer["cout"]
        source = len(tensors) - 1
        tensors += [
            _Tensor(f"filter{i}", (cout, 1, 1, cin), _weights(rng, (cout, 1, 1, cin), cin)),
            _Tensor(f"bias{i}", (cout,), _weights(rng, (cout,), 1)),
            _Tensor(f"output{i}", (1, h, w, cout)),
        ]
        n = len(tensors)
        operators.append(((source, n - 3, n - 2), (n - 1,)))

    (first_in, first_out), *rest = operators
    return _Graph(
        tflite.BuiltinOperator.CONV_2D,
        tuple(tensors),
        first_in,
        first_out,
        tflite.BuiltinOptions.Conv2DOptions,
        _conv2d_options(tflite.Padding.SAME, 1, tflite.ActivationFunctionType.NONE),
        tuple(rest),
    )


def _conv2d_options(padding: int, stride: int, activation: int) -> OptionsWriter:
    """Writer of CONV_2D options (no dilation), shared by single convs and chains."""

    def write(b: flatbuffers.Builder) -> int:
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, padding)
        tflite.Conv2DOptionsAddStrideW(b, stride)
        tflite.Conv2DOptionsAddStrideH(b, stride)
        tflite.Conv2DOptionsAddFusedActivationFunction(b, activation)
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        return int(tflite.Conv2DOptionsEnd(b))

    return write


def _binary_op(op_type: str) -> tuple[int, int, OptionsWriter]:
    none = tflite.ActivationFunctionType.NONE
    if op_type == "add":

        def add_options(b: flatbuffers.Builder) -> int:
            tflite.AddOptionsStart(b)
            tflite.AddOptionsAddFusedActivationFunction(b, none)
            return int(tflite.AddOptionsEnd(b))

        return tflite.BuiltinOperator.ADD, tflite.BuiltinOptions.AddOptions, add_options
    if op_type == "mul":

        def mul_options(b: flatbuffers.Builder) -> int:
            tflite.MulOptionsStart(b)
            tflite.MulOptionsAddFusedActivationFunction(b, none)
            return int(tflite.MulOptionsEnd(b))

        return tflite.BuiltinOperator.MUL, tflite.BuiltinOptions.MulOptions, mul_options

    def sub_options(b: flatbuffers.Builder) -> int:
        tflite.SubOptionsStart(b)
        tflite.SubOptionsAddFusedActivationFunction(b, none)
        return int(tflite.SubOptionsEnd(b))

    return tflite.BuiltinOperator.SUB, tflite.BuiltinOptions.SubOptions, sub_options


def _padding(name: object) -> int:
    if name not in _PADDINGS:
        raise ValueError(f"padding must be one of {sorted(_PADDINGS)}, got {name!r}")
    return int(_PADDINGS[str(name)])


def _activation(name: object) -> int:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return int(_ACTIVATIONS[str(name)])


def _window_out(c: Mapping[str, Any]) -> tuple[int, int]:
    """Output height and width of a windowed op (convolutions, pools) from its config."""
    stride, padding = int(c["stride"]), c["padding"]
    return (
        _spatial_out(int(c["h"]), int(c["kh"]), stride, padding),
        _spatial_out(int(c["w"]), int(c["kw"]), stride, padding),
    )


def _spatial_out(size: int, kernel: int, stride: int, padding: object) -> int:
    """Output length along one spatial axis, as TFLite computes it (ComputeOutSize)."""
    if stride < 1 or kernel < 1 or size < 1:
        raise ValueError(f"size, kernel and stride must be >= 1, got {size}, {kernel}, {stride}")
    out = math.ceil(size / stride) if padding == "same" else (size - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"kernel {kernel} with {padding} padding leaves no output of size {size}")
    return out


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Uniform random float32 in +-1/sqrt(fan_in): normal-range values, no denormal slow paths."""
    scale = np.float32(1.0 / math.sqrt(max(fan_in, 1)))
    values = rng.random(shape, dtype=np.float32) * np.float32(2.0) - np.float32(1.0)
    return values * scale


# ---------------------------------------------------------------------------- serialization


def _serialize(graph: _Graph) -> bytes:
    """Write ``graph`` (one operator or a chain of one code) as a one-subgraph TFLite model."""
    weight_bytes = sum(t.data.nbytes for t in graph.tensors if t.data is not None)
    b = flatbuffers.Builder(weight_bytes + 4096)

    # Buffer 0 is the empty sentinel every activation tensor points at (schema.fbs convention).
    buffer_offsets = [_empty_buffer(b)]
    buffer_index: list[int] = []
    for tensor in graph.tensors:
        if tensor.data is None:
            buffer_index.append(0)
            continue
        raw = np.ascontiguousarray(tensor.data).tobytes()
        b.StartVector(1, len(raw), _BUFFER_ALIGNMENT_BYTES)
        b.head -= len(raw)
        b.Bytes[b.head : b.head + len(raw)] = raw
        data = b.EndVector()
        tflite.BufferStart(b)
        tflite.BufferAddData(b, data)
        buffer_offsets.append(tflite.BufferEnd(b))
        buffer_index.append(len(buffer_offsets) - 1)

    tensor_offsets = []
    for tensor, buffer in zip(graph.tensors, buffer_index, strict=True):
        name = b.CreateString(tensor.name)
        shape = b.CreateNumpyVector(np.asarray(tensor.shape, dtype=np.int32))
        dtype = tflite.TensorType.FLOAT32
        if tensor.data is not None and tensor.data.dtype == np.int32:
            dtype = tflite.TensorType.INT32
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, dtype)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, name)
        tensor_offsets.append(tflite.TensorEnd(b))

    operators = []
    for inputs, outputs in ((graph.op_inputs, graph.op_outputs), *graph.more_ops):
        op_inputs = b.CreateNumpyVector(np.asarray(inputs, dtype=np.int32))
        op_outputs = b.CreateNumpyVector(np.asarray(outputs, dtype=np.int32))
        options = graph.write_options(b) if graph.write_options is not None else None
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, 0)
        tflite.OperatorAddInputs(b, op_inputs)
        tflite.OperatorAddOutputs(b, op_outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, graph.options_type)
            tflite.OperatorAddBuiltinOptions(b, options)
        operators.append(tflite.OperatorEnd(b))

    graph_inputs = [i for i in graph.op_inputs if graph.tensors[i].data is None]
    sg_tensors = _offset_vector(b, tensor_offsets)
    sg_inputs = b.CreateNumpyVector(np.asarray(graph_inputs, dtype=np.int32))
    sg_outputs = b.CreateNumpyVector(np.asarray(graph.model_outputs, dtype=np.int32))
    sg_operators = _offset_vector(b, operators)
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, sg_tensors)
    tflite.SubGraphAddInputs(b, sg_inputs)
    tflite.SubGraphAddOutputs(b, sg_outputs)
    tflite.SubGraphAddOperators(b, sg_operators)
    tflite.SubGraphAddName(b, sg_name)
    subgraph = tflite.SubGraphEnd(b)

    tflite.OperatorCodeStart(b)
    # The int8 field holds codes below 127; larger ones set it to PLACEHOLDER_FOR_GREATER_OP_CODES.
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(graph.builtin_code, 127))
    tflite.OperatorCodeAddBuiltinCode(b, graph.builtin_code)
    tflite.OperatorCodeAddVersion(b, 1)
    opcode = tflite.OperatorCodeEnd(b)

    opcodes = _offset_vector(b, [opcode])
    subgraphs = _offset_vector(b, [subgraph])
    buffers = _offset_vector(b, buffer_offsets)
    description = b.CreateString("fdiot single-op model")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, TFLITE_SCHEMA_VERSION)
    tflite.ModelAddOperatorCodes(b, opcodes)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddBuffers(b, buffers)
    model = tflite.ModelEnd(b)
    b.Finish(model, file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(b.Output())


def _empty_buffer(b: flatbuffers.Builder) -> int:
    tflite.BufferStart(b)
    return int(tflite.BufferEnd(b))


def _offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return int(b.EndVector())


# ---------------------------------------------------------------------------- recurrent layers


def _recurrent_model(
    op_type: str, seq_len: int, cin: int, units: int, return_sequences: bool = False
) -> bytes:
    """Keras 3 ``LSTM``/``GRU`` on ``(seq_len, cin)`` converted by TFLiteConverter, float32.

    ``return_sequences`` as in Keras: stacked layers output every step, which the converter
    turns into a loop that appends each step's state to an accumulator (costlier per step).

    Conversion takes seconds, so models are cached under ``FDIOT_HOME/cache/op_models`` keyed by
    op type, config and TensorFlow version.
    """
    if min(seq_len, cin, units) < 1:
        raise ValueError(f"{op_type}: seq_len, cin and units must be >= 1")
    import tensorflow as tf  # heavy: only the recurrent op types need it

    # The key of return_sequences=False is unchanged so that cached models stay valid.
    returns = "-rs" if return_sequences else ""
    key = f"{op_type}-s{seq_len}-c{cin}-u{units}{returns}-tf{tf.__version__}"
    cache_file = _cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}-{key}.tflite"
    if cache_file.exists():
        return cache_file.read_bytes()

    tf.keras.utils.set_random_seed(_WEIGHT_SEED)
    layer_type = tf.keras.layers.LSTM if op_type == "lstm" else tf.keras.layers.GRU
    inputs = tf.keras.Input(shape=(seq_len, cin), batch_size=1)
    layer = layer_type(units, return_sequences=return_sequences)
    keras_model = tf.keras.Model(inputs, layer(inputs))
    model = bytes(tf.lite.TFLiteConverter.from_keras_model(keras_model).convert())
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_suffix(".part")
    partial.write_bytes(model)
    partial.replace(cache_file)  # atomic: two agents may build the same config at once
    return model


def _cache_dir() -> Path:
    from fdiot.settings import get_settings

    return get_settings().home / "cache" / "op_models"
