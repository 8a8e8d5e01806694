"""Op configuration space: op types, their configuration variables, validation and samplers.

Every name here is the contract of ``docs/internals.md``: the sampler, the agent's builder, the
parser and the API use them verbatim. Spatial tensors are NHWC with batch 1; sizes are integers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OP_TYPES: tuple[str, ...] = (
    "conv2d",
    "depthwise_conv2d",
    "fully_connected",
    "max_pool2d",
    "avg_pool2d",
    "mean",
    "add",
    "mul",
    "sub",
    "concatenation",
    "pad",
    "softmax",
    "hard_swish",
    "logistic",
    "tanh",
    "relu",
    "relu6",
    "lstm",
    "gru",
    "invoke_overhead",
    "conv_chain",
)

# Op types measured as probes of the device rather than fitted as trees: the fixed cost of one
# invoke, and chains of 1x1 convolutions whose weights together exceed the cache (the time to
# reload weights that a network evicts between invokes, see models.timemodel).
PROBE_OP_TYPES: frozenset[str] = frozenset({"invoke_overhead", "conv_chain"})

# The TFLite builtin operator each op type is measured as (``WHILE`` for Keras 3 recurrent layers).
TFLITE_OPS: dict[str, str] = {
    "conv2d": "CONV_2D",
    "depthwise_conv2d": "DEPTHWISE_CONV_2D",
    "fully_connected": "FULLY_CONNECTED",
    "max_pool2d": "MAX_POOL_2D",
    "avg_pool2d": "AVERAGE_POOL_2D",
    "mean": "MEAN",
    "add": "ADD",
    "mul": "MUL",
    "sub": "SUB",
    "concatenation": "CONCATENATION",
    "pad": "PAD",
    "softmax": "SOFTMAX",
    "hard_swish": "HARD_SWISH",
    "logistic": "LOGISTIC",
    "tanh": "TANH",
    "relu": "RELU",
    "relu6": "RELU6",
    "lstm": "WHILE",
    "gru": "WHILE",
    "invoke_overhead": "ADD",
    "conv_chain": "CONV_2D",
}

PADDINGS: tuple[str, ...] = ("same", "valid")
ACTIVATIONS: tuple[str, ...] = ("none", "relu", "relu6")

# Largest single tensor (input, output or weights) a sample may have: 64 MiB of float32 holds every
# layer of the keras.applications networks at 224x224 and keeps a profiling child process small.
MAX_TENSOR_BYTES = 64 * 1024 * 1024
# Bytes per float32 element (all ops are profiled in float32).
FLOAT32_BYTES = 4

# Variable ranges (inclusive). Widths up to 4096 cover the widest dense layers of keras.applications
WIDTH = (1, 4096)
SPATIAL = (1, 512)
KERNEL = (1, 11)
STRIDE = (1, 4)
ROWS = (1, 4096)
SEQ_LEN = (1, 1024)
UNITS = (1, 2048)
MULTIPLIER = (1, 8)
PAD = (0, 16)
# Convolutions in one conv_chain probe: enough for weights of tens of MB at real widths.
CHAIN_DEPTH = (2, 32)


@dataclass(frozen=True)
class Variable:
    """One configuration variable: an integer range or a set of string choices, and a default."""

    name: str
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    default: int | str | None = None

    @property
    def categorical(self) -> bool:
        return bool(self.choices)


def _int(name: str, bounds: tuple[int, int], default: int | None = None) -> Variable:
    return Variable(name, bounds[0], bounds[1], default=default)


def _spatial_vars() -> tuple[Variable, ...]:
    # ``w`` defaults to ``h`` (square inputs), see _fill_defaults.
    return (_int("h", SPATIAL), _int("w", SPATIAL))


_PADDING = Variable("padding", choices=PADDINGS, default="same")
_ACTIVATION = Variable("activation", choices=ACTIVATIONS, default="none")
_HWC = (*_spatial_vars(), _int("c", WIDTH))

# Recurrent layers: ``return_sequences`` 1 when the layer outputs every step (stacked RNNs), which
# makes the converted loop append each step's state to a [seq_len, 1, units] accumulator.
_RECURRENT_VARS = (
    _int("seq_len", SEQ_LEN),
    _int("cin", WIDTH),
    _int("units", UNITS),
    _int("return_sequences", (0, 1), 0),
)

CONFIG_SPACE: dict[str, tuple[Variable, ...]] = {
    "conv2d": (
        *_spatial_vars(),
        _int("cin", WIDTH),
        _int("cout", WIDTH),
        _int("kh", KERNEL),
        _int("kw", KERNEL),
        _int("stride", STRIDE, 1),
        _PADDING,
        _ACTIVATION,
    ),
    "depthwise_conv2d": (
        *_spatial_vars(),
        _int("cin", WIDTH),
        _int("multiplier", MULTIPLIER, 1),
        _int("kh", KERNEL),
        _int("kw", KERNEL),
        _int("stride", STRIDE, 1),
        _PADDING,
        _ACTIVATION,
    ),
    "fully_connected": (
        _int("rows", ROWS, 1),
        _int("cin", WIDTH),
        _int("cout", WIDTH),
        _ACTIVATION,
    ),
    "max_pool2d": (*_HWC, _int("kh", KERNEL), _int("kw", KERNEL), _int("stride", STRIDE), _PADDING),
    "avg_pool2d": (*_HWC, _int("kh", KERNEL), _int("kw", KERNEL), _int("stride", STRIDE), _PADDING),
    "mean": _HWC,
    "add": (*_HWC, _int("broadcast", (0, 1), 0)),
    "mul": (*_HWC, _int("broadcast", (0, 1), 0)),
    "sub": (*_HWC, _int("broadcast", (0, 1), 0)),
    "concatenation": (*_spatial_vars(), _int("c1", WIDTH), _int("c2", WIDTH)),
    "pad": (*_HWC, _int("pad", PAD, 1)),
    "softmax": (_int("rows", ROWS, 1), _int("c", WIDTH)),
    "hard_swish": _HWC,
    "logistic": _HWC,
    "tanh": _HWC,
    "relu": _HWC,
    "relu6": _HWC,
    "lstm": _RECURRENT_VARS,
    "gru": _RECURRENT_VARS,
    "invoke_overhead": (),
    # ``depth`` 1x1 convolutions on h x w alternating c -> m -> c ... (no activation, same padding).
    "conv_chain": (
        *_spatial_vars(),
        _int("c", WIDTH),
        _int("m", WIDTH),
        _int("depth", CHAIN_DEPTH),
    ),
}

# Which variable to name when a tensor is too large: (input, output, weights).
_BOUND_FIELDS: dict[str, tuple[str, str, str]] = {
    "conv2d": ("cin", "cout", "cout"),
    "depthwise_conv2d": ("cin", "multiplier", "cin"),
    "fully_connected": ("cin", "cout", "cout"),
    "concatenation": ("c1", "c2", "c2"),
    "pad": ("c", "pad", "c"),
    "softmax": ("c", "c", "c"),
    "lstm": ("cin", "units", "units"),
    "gru": ("cin", "units", "units"),
    "conv_chain": ("c", "m", "m"),
}


class ConfigError(ValueError):
    """An op configuration that the farm cannot profile or predict; ``field`` names the variable."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def variable_names(op_type: str) -> tuple[str, ...]:
    """Names of the configuration variables of ``op_type`` in their canonical order."""
    _check_op_type(op_type)
    return tuple(v.name for v in CONFIG_SPACE[op_type])


def numeric_variable_names(op_type: str) -> tuple[str, ...]:
    """The integer-valued variables of ``op_type`` (usable for interval and multiple splits)."""
    _check_op_type(op_type)
    return tuple(v.name for v in CONFIG_SPACE[op_type] if not v.categorical)


def _check_op_type(op_type: str) -> None:
    if op_type not in CONFIG_SPACE:
        raise ConfigError("op_type", f"unknown op type {op_type!r}; known: {', '.join(OP_TYPES)}")


def fill_defaults(op_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` with defaults filled in, without range checks (``w=h``, ``kw=kh``...)."""
    _check_op_type(op_type)
    out: dict[str, Any] = dict(config)
    if "h" in out and "w" not in out:
        out["w"] = out["h"]
    if "kh" in out and "kw" not in out:
        out["kw"] = out["kh"]
    for var in CONFIG_SPACE[op_type]:
        if var.name not in out and var.default is not None:
            out[var.name] = var.default
    return out


def output_hw(h: int, w: int, kh: int, kw: int, stride: int, padding: str) -> tuple[int, int]:
    """Output height and width of a windowed op, as TensorFlow computes them."""
    if padding == "same":
        return math.ceil(h / stride), math.ceil(w / stride)
    return (h - kh) // stride + 1, (w - kw) // stride + 1


def validate_config(op_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Check one op configuration and return it normalised (defaults filled, Python ints).

    Raises :class:`ConfigError` naming the offending variable for an unknown op type or variable,
    a missing or out-of-range value, a window that does not fit a ``valid`` input, or a tensor
    larger than :data:`MAX_TENSOR_BYTES`.
    """
    _check_op_type(op_type)
    if not isinstance(config, Mapping):
        raise ConfigError("config", f"must be a mapping, got {type(config).__name__}")
    filled = fill_defaults(op_type, config)
    spec = {v.name: v for v in CONFIG_SPACE[op_type]}
    for name in filled:
        if name not in spec:
            raise ConfigError(
                name, f"unknown variable for {op_type}; expected {', '.join(spec) or 'none'}"
            )
    out: dict[str, Any] = {}
    for name, var in spec.items():
        if name not in filled:
            raise ConfigError(name, f"missing (required by {op_type})")
        value = filled[name]
        if var.categorical:
            if value not in var.choices:
                raise ConfigError(name, f"{value!r} is not one of {', '.join(var.choices)}")
            out[name] = str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ConfigError(name, f"must be an integer, got {value!r}")
        if int(value) != value:
            raise ConfigError(name, f"must be an integer, got {value!r}")
        number = int(value)
        if not var.low <= number <= var.high:
            raise ConfigError(name, f"{number} is outside {var.low}..{var.high}")
        out[name] = number
    if "padding" in out and out["padding"] == "valid":
        if out["kh"] > out["h"]:
            raise ConfigError("kh", f"kernel {out['kh']} exceeds input height {out['h']} (valid)")
        if out["kw"] > out["w"]:
            raise ConfigError("kw", f"kernel {out['kw']} exceeds input width {out['w']} (valid)")
    _check_memory(op_type, out)
    return out


def _check_memory(op_type: str, config: Mapping[str, Any]) -> None:
    # Imported here: features imports this module at load time.
    from models.features import cost_features

    feats = cost_features(op_type, config)
    in_field, out_field, param_field = _BOUND_FIELDS.get(op_type, ("c", "c", "c"))
    for key, field in (
        ("input_bytes", in_field),
        ("output_bytes", out_field),
        ("param_bytes", param_field),
    ):
        if feats[key] > MAX_TENSOR_BYTES:
            raise ConfigError(
                field,
                f"{key.replace('_bytes', '')} tensors need {feats[key] / 2**20:.0f} MiB, more than "
                f"the {MAX_TENSOR_BYTES / 2**20:.0f} MiB limit",
            )


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------

# Spatial sizes of the stages of ImageNet-style CNNs at 224 input, plus the 96/192 variants.
_STAGE_SIZES = (7, 14, 28, 56, 112, 224, 12, 24, 48, 96)
# FLOP caps per sample so one op takes a few to ~20 ms on one core at ~15-20 GFLOP/s (XNNPACK f32).
_MAX_FLOPS: dict[str, float] = {
    "conv2d": 3.5e8,
    "depthwise_conv2d": 1e8,
    "fully_connected": 2e8,
    "lstm": 1.5e8,
    "gru": 1.5e8,
    "conv_chain": 3.5e8,
}
# Cap on the output elements of memory-bound ops (~8 MB of float32 moved), same reason.
_MAX_ELEMENTS = 2_000_000
# Cap on dense weights: the widest MLP layers of the zoo's families hold 6-10 M weights (25-40 MB,
# far beyond a last-level cache); reading 40 MB at ~10 GB/s keeps a sample at ~4 ms per run.
_MAX_PARAM_BYTES = 40 * 2**20


def _width(rng: np.random.Generator, low: int, high: int) -> int:
    """A channel width in [low, high]: powers of two, multiples of 8 or odd (pruned) widths."""
    low, high = max(1, low), max(1, max(low, high))
    value = math.exp(rng.uniform(math.log(low), math.log(high + 1)))
    kind = rng.random()
    if kind < 0.35:  # powers of two: the widths of most hand-designed networks
        out = 2 ** round(math.log2(value))
    elif kind < 0.65:  # multiples of 8: MobileNet's make_divisible widths
        out = 8 * max(1, round(value / 8))
    else:  # arbitrary widths, like pruned networks
        out = round(value)
    return int(min(max(out, low), high))


def _stage(rng: np.random.Generator) -> tuple[int, int, int]:
    """A realistic (h, w, typical max channels) triple: few channels when spatial is large."""
    h = int(rng.choice(_STAGE_SIZES)) if rng.random() < 0.8 else int(rng.integers(7, 225))
    # Channels double as spatial halves: ~64 at 224, ~2048 at 7 (ResNet/MobileNet stages).
    max_c = int(np.clip(14336 / h, 32, 2048))
    return h, h, max_c


def _stage_1d(rng: np.random.Generator) -> tuple[int, int, int]:
    """A 1-D sensor-style layout: h = 1, sequence length w in 16..512."""
    w = int(2 ** rng.uniform(4, 9)) if rng.random() < 0.5 else int(rng.choice((32, 64, 128, 256)))
    return 1, w, 512


def _kernel(rng: np.random.Generator) -> int:
    return int(rng.choice((1, 3, 5, 7), p=(0.35, 0.45, 0.1, 0.1)))


# Share of the 2-D conv2d draws (85% of them, so 8.5% of all) that are a network's first layer
# (its "stem"): every image CNN has one, and with cin = 1-4 its GEMM depth (cin * kh * kw = 27 for
# 3x3 RGB) is so shallow that the kernel XNNPACK picks by output width shows: on this host a 3x3
# RGB conv costs 2.6 ns per output pixel and channel at cout = 8, 4.6 at cout = 16, and cout 20,
# 24 and 32 take the same time (two 16-wide panels) (`python -m bench.composition --sections
# stem`). The generic draw rarely lands there (3x3, stride 2, cout 8-64 from an RGB input): the
# tree priced cout = 16 stems 40% low.
_STEM_SHARE = 0.1
# Input sizes of image networks: CIFAR 32, the keras.applications sizes 96-224, and odd crops.
_STEM_SIZES = (32, 64, 96, 112, 128, 144, 160, 192, 224)


def _sample_stem(rng: np.random.Generator) -> dict[str, Any]:
    """A first conv layer: RGB (mostly), grey or RGBA input, 8-64 output channels."""
    h = int(rng.choice(_STEM_SIZES)) if rng.random() < 0.8 else int(rng.integers(32, 257))
    cin = int(rng.choice((3, 1, 4), p=(0.8, 0.1, 0.1)))
    cout = _width(rng, 8, 64)
    k = int(rng.choice((3, 5, 7), p=(0.75, 0.1, 0.15)))
    return {
        "h": h,
        "w": h,
        "cin": cin,
        "cout": cout,
        "kh": k,
        "kw": k,
        "stride": int(rng.choice((2, 1), p=(0.6, 0.4))),
        "padding": "same" if rng.random() < 0.8 else "valid",
        "activation": str(rng.choice(ACTIVATIONS)),
    }


def _sample_one(op_type: str, rng: np.random.Generator) -> dict[str, Any]:
    one_d = rng.random() < 0.15
    h, w, max_c = _stage_1d(rng) if one_d else _stage(rng)
    if op_type == "conv2d":
        if not one_d and rng.random() < _STEM_SHARE:
            return _sample_stem(rng)
        k = _kernel(rng)
        cin = 3 if (h >= 96 and rng.random() < 0.15) else _width(rng, max(1, max_c // 32), max_c)
        return {
            "h": h,
            "w": w,
            "cin": cin,
            "cout": _width(rng, max(1, max_c // 32), max_c),
            "kh": 1 if one_d else k,
            "kw": k,
            "stride": int(rng.choice((1, 2), p=(0.75, 0.25))),
            "padding": "same" if rng.random() < 0.8 else "valid",
            "activation": str(rng.choice(ACTIVATIONS)),
        }
    if op_type == "depthwise_conv2d":
        k = int(rng.choice((3, 5, 7), p=(0.7, 0.2, 0.1)))
        return {
            "h": h,
            "w": w,
            "cin": _width(rng, max(8, max_c // 16), max_c),
            # Multiplier 2 runs a ~10x slower kernel and is rare in real networks (Keras apps
            # use 1): a few samples let the tree split it off without starving the common case.
            "multiplier": 1 if rng.random() < 0.95 else 2,
            "kh": 1 if one_d else k,
            "kw": k,
            "stride": int(rng.choice((1, 2), p=(0.7, 0.3))),
            "padding": "same" if rng.random() < 0.85 else "valid",
            "activation": str(rng.choice(ACTIVATIONS)),
        }
    if op_type == "fully_connected":
        if rng.random() < 0.3:  # MLP / classifier-head layers at batch 1: weights of 1-40 MB
            return {
                "rows": 1,
                "cin": _width(rng, 512, 4096),
                "cout": _width(rng, 512, 4096),
                "activation": str(rng.choice(ACTIVATIONS)),
            }
        rows = 1 if rng.random() < 0.6 else _width(rng, 8, 256)
        return {
            "rows": rows,
            "cin": _width(rng, 8, 2048),
            "cout": _width(rng, 2, 2048),
            "activation": str(rng.choice(ACTIVATIONS)),
        }
    c = _width(rng, max(1, max_c // 16), max_c)
    if op_type in ("max_pool2d", "avg_pool2d"):
        k = int(rng.choice((2, 3)))
        return {
            "h": h,
            "w": w,
            "c": c,
            "kh": 1 if one_d else k,
            "kw": k,
            "stride": int(rng.choice((1, 2), p=(0.2, 0.8))),
            "padding": "valid" if rng.random() < 0.6 else "same",
        }
    if op_type == "mean":
        hm = 1 if one_d else int(rng.choice((1, 2, 3, 4, 6, 7, 8, 12, 14, 28)))
        return {"h": hm, "w": w if one_d else hm, "c": _width(rng, 16, 2048)}
    if op_type in ("add", "mul", "sub"):
        p_broadcast = {"add": 0.2, "mul": 0.6, "sub": 0.3}[op_type]  # SE blocks multiply by 1x1xC
        return {"h": h, "w": w, "c": c, "broadcast": int(rng.random() < p_broadcast)}
    if op_type == "concatenation":
        return {
            "h": h,
            "w": w,
            "c1": _width(rng, 1, max_c),
            "c2": _width(rng, 1, max_c),
        }
    if op_type == "pad":
        return {"h": h, "w": w, "c": c, "pad": int(rng.choice((1, 2, 3), p=(0.7, 0.2, 0.1)))}
    if op_type == "softmax":
        rows = 1 if rng.random() < 0.7 else _width(rng, 8, 256)
        return {"rows": rows, "c": _width(rng, 2, 1024)}
    if op_type in ("hard_swish", "logistic", "tanh", "relu", "relu6"):
        return {"h": h, "w": w, "c": c}
    if op_type in ("lstm", "gru"):
        seq = (
            int(2 ** rng.uniform(3, 8))
            if rng.random() < 0.6
            else int(rng.choice((16, 32, 64, 128)))
        )
        # Stacked sensing RNNs: every layer but the last returns sequences (about half of them).
        return {
            "seq_len": seq,
            "cin": _width(rng, 1, 256),
            "units": _width(rng, 8, 512),
            "return_sequences": int(rng.random() < 0.5),
        }
    if op_type == "invoke_overhead":
        return {}
    if op_type == "conv_chain":
        return _sample_chain(rng)
    raise ConfigError("op_type", f"no sampler for {op_type!r}")


# Weight totals of conv_chain probes (bytes), drawn log-uniform: from well inside a phone's or a
# desktop's last-level cache (0.5 MB) to several times the largest (8-32 MB), as far as the
# weights of the mobile CNNs of keras.applications go (14-22 MB at alpha 1).
_CHAIN_WEIGHT_BYTES = (0.5e6, 32e6)
# Spatial sizes of the late stages of mobile CNNs (input 96-224), where weights dominate.
_CHAIN_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14)


def _sample_chain(rng: np.random.Generator) -> dict[str, Any]:
    depth = int(rng.choice((4, 6, 8, 10, 12)))
    target = math.exp(rng.uniform(*np.log(_CHAIN_WEIGHT_BYTES)))
    # The spatial size within the FLOP cap (2 FLOPs per weight per pixel), so that heavy chains
    # are not rejected more often than light ones.
    pixels_cap = _MAX_FLOPS["conv_chain"] / (2 * target / FLOAT32_BYTES)
    h = int(rng.choice([s for s in _CHAIN_SIZES if s * s <= pixels_cap] or [1]))
    # Expansion ratios of inverted-residual blocks (MobileNetV2: 6) and plain stacks (1-4).
    ratio = float(rng.choice((1.0, 2.0, 3.0, 4.0, 6.0)))
    # Multiples of 8, as MobileNet's make_divisible widths: the probe measures reloading, not the
    # conv tree's harder odd-width corners.
    c = 8 * max(1, round(math.sqrt(target / (FLOAT32_BYTES * depth * ratio)) / 8))
    m = min(WIDTH[1], 8 * max(1, round(c * ratio / 8)))
    return {"h": h, "w": h, "c": min(c, WIDTH[1]), "m": m, "depth": depth}


def config_key(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A configuration as a hashable key: equal configurations, equal keys."""
    return tuple(sorted(config.items()))


def chain_layers(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conv2d configurations of a ``conv_chain`` probe, in order (c -> m -> c -> ...)."""
    c = fill_defaults("conv_chain", config)
    widths = [int(c["c"]) if i % 2 == 0 else int(c["m"]) for i in range(int(c["depth"]) + 1)]
    return [
        {
            "h": int(c["h"]),
            "w": int(c["w"]),
            "cin": cin,
            "cout": cout,
            "kh": 1,
            "kw": 1,
            "stride": 1,
            "padding": "same",
            "activation": "none",
        }
        for cin, cout in itertools.pairwise(widths)
    ]


def _affordable(op_type: str, config: Mapping[str, Any]) -> bool:
    from models.features import cost_features

    feats = cost_features(op_type, config)
    if feats["param_bytes"] > _MAX_PARAM_BYTES:
        return False
    if op_type in _MAX_FLOPS:
        return feats["flops"] <= _MAX_FLOPS[op_type]
    return feats["output_bytes"] / FLOAT32_BYTES <= _MAX_ELEMENTS


def sample_configs(op_type: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Draw ``n`` valid configurations of ``op_type`` from a distribution of real networks.

    Widths 1-2048 mixing powers of two, multiples of 8 and odd (pruned-looking) widths; spatial
    sizes 7-224 paired realistically with channels; kernels 1/3/5/7; strides 1-2; RNN sequence
    lengths 8-256 and units 8-512. Samples are capped in FLOPs or bytes so each one stays cheap.
    Deterministic for a given ``seed``.
    """
    _check_op_type(op_type)
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng([seed, OP_TYPES.index(op_type)])
    out: list[dict[str, Any]] = []
    while len(out) < n:
        for _ in range(100):  # rejection sampling; the caps reject well under half of the draws
            config = _sample_one(op_type, rng)
            try:
                config = validate_config(op_type, config)
            except ConfigError:
                continue
            if _affordable(op_type, config):
                break
        out.append(config)
    return out


# Share of a profiling budget per op type: convolutions and dense layers dominate real networks'
# time and have the richest behaviour; element-wise ops are simple (bandwidth-bound) lines;
# recurrent layers get a moderate share because each sample is a whole layer and costly to build.
CAMPAIGN_WEIGHTS: dict[str, float] = {
    "conv2d": 0.22,
    "depthwise_conv2d": 0.12,
    "fully_connected": 0.12,
    "max_pool2d": 0.03,
    "avg_pool2d": 0.03,
    "mean": 0.03,
    "add": 0.05,
    "mul": 0.04,
    "sub": 0.015,
    "concatenation": 0.03,
    "pad": 0.03,
    "softmax": 0.02,
    "hard_swish": 0.03,
    "logistic": 0.025,
    "tanh": 0.015,
    "relu": 0.02,
    "relu6": 0.02,
    "lstm": 0.055,
    "gru": 0.055,
    "invoke_overhead": 0.02,
    # ~64 of the first 2000 drawn samples (the adaptive round skips probes). Two numbers rest on
    # them: the reload time per byte on those beyond the cache knee (11 of 31 at a 6.8 MB knee on
    # the first VM, 2-6 of 30-33 at 15.6-23.7 MB on the second), and the top segment of the
    # network extra curve on the 8-10 that fall between 5 MB and the knee. Until 2026-11-30 it
    # was half this: two probes at 11 and 14 MB then set +32% for networks that paid +5.5-13.7%
    # (16:33 campaign); a curve from the probes of nine campaigns pooled put those networks at
    # 74% / 89% within 5% / 10% instead of 63% / 74%. The doubled probes and their layers cost
    # about 0.7 device minutes (0.4-0.5 s per sample there).
    "conv_chain": 0.032,
}


# Depthwise is topped up beyond a broad campaign: its tree's error falls with samples long after
# the others' do. `python -m bench.pooled_cv` on five campaigns of the second development VM (its
# labels 1.5% repeatable, bench/results/label_noise_vm2.json), CV MAPE: 7.3% at 298 samples (one
# campaign), 6.3% at 589, 5.8% at 881, 5.3% at 1165, 5.1% at 1480
# (bench/results/pooled_cv_vm2_depthwise.json); dense layers 6.9% at 301, 6.5% at 595
# (pooled_cv_vm2_dense.json; their labels move 4.4%). So a campaign's first BROAD_CAMPAIGN_SAMPLES
# are split by CAMPAIGN_WEIGHTS (every op type covered: the 800-sample demo stays as it was), and
# the samples beyond go to depthwise until it has DEPTHWISE_TOP_UP_SAMPLES, then by the weights
# again. The default campaign's first round (2960 samples) gets ~1200 depthwise; its adaptive
# round adds more where the error is (1420 in all in the 2026-11-30 11:35 run).
BROAD_CAMPAIGN_SAMPLES = 2000
DEPTHWISE_TOP_UP_SAMPLES = 1200


def default_campaign(total_samples: int, op_types: Sequence[str] | None = None) -> dict[str, int]:
    """Split a budget of ``total_samples`` across op types by importance (largest remainder).

    Every op type gets at least one sample when the budget allows; the counts sum to the budget.
    The first :data:`BROAD_CAMPAIGN_SAMPLES` are split by :data:`CAMPAIGN_WEIGHTS`; the samples
    beyond them top depthwise up to :data:`DEPTHWISE_TOP_UP_SAMPLES` (when it is chosen), and the
    rest are split by the weights again.
    """
    chosen = list(op_types) if op_types else list(OP_TYPES)
    for op_type in chosen:
        _check_op_type(op_type)
    if total_samples < 0:
        raise ValueError("total_samples must be >= 0")
    broad = min(total_samples, BROAD_CAMPAIGN_SAMPLES)
    floor_each = 1 if broad >= len(chosen) else 0
    counts = _split_by_weights(chosen, broad - floor_each * len(chosen))
    counts = {t: n + floor_each for t, n in counts.items()}
    surplus = total_samples - broad
    if "depthwise_conv2d" in counts:
        top_up = min(surplus, max(0, DEPTHWISE_TOP_UP_SAMPLES - counts["depthwise_conv2d"]))
        counts["depthwise_conv2d"] += top_up
        surplus -= top_up
    for op_type, n in _split_by_weights(chosen, surplus).items():
        counts[op_type] += n
    return counts


def _split_by_weights(op_types: Sequence[str], samples: int) -> dict[str, int]:
    """``samples`` split across ``op_types`` by :data:`CAMPAIGN_WEIGHTS` (largest remainder)."""
    weights = np.array([CAMPAIGN_WEIGHTS.get(t, 0.02) for t in op_types])
    raw = weights / weights.sum() * samples
    counts = np.floor(raw).astype(int)
    leftover = samples - int(counts.sum())
    for i in np.argsort(-(raw - counts), kind="stable")[:leftover]:
        counts[i] += 1
    return {t: int(c) for t, c in zip(op_types, counts, strict=True)}


# The variable swept by channel sweeps, per op type.
SWEEP_VARIABLE: dict[str, str] = {
    "conv2d": "cout",
    "depthwise_conv2d": "cin",
    "fully_connected": "cout",
    "lstm": "units",
    "gru": "units",
    "concatenation": "c2",
    "softmax": "c",
}
# The evidence sweep of DESIGN.md: 3x3 conv on 56x56x64, where time steps at cout 65.
DEFAULT_SWEEP_BASE: dict[str, Any] = {
    "h": 56,
    "w": 56,
    "cin": 64,
    "kh": 3,
    "kw": 3,
    "stride": 1,
    "padding": "same",
    "activation": "none",
}


def channel_sweep_configs(
    op_type: str = "conv2d",
    base: Mapping[str, Any] | None = None,
    *,
    low: int = 8,
    high: int = 128,
    step: int = 1,
    variable: str | None = None,
) -> list[dict[str, Any]]:
    """Configurations equal to ``base`` except the swept width (``cout`` for conv2d) in low..high.

    Dense sweeps show where time steps (tile sizes); adaptive rounds and the conv plot use them.
    """
    _check_op_type(op_type)
    var = variable or SWEEP_VARIABLE.get(op_type, "c")
    if base is None:
        if op_type != "conv2d":
            raise ValueError(f"no default sweep base for {op_type}; pass base=")
        base = DEFAULT_SWEEP_BASE
    out = []
    for value in range(max(1, low), high + 1, max(1, step)):
        config = dict(base)
        config[var] = value
        out.append(validate_config(op_type, config))
    return out


def relative_residuals(op_type: str, samples: Sequence[Mapping[str, Any]], seed: int) -> np.ndarray:
    """Cross-validated relative residual of each sample under a quick tree fit: (y - pred) / y,
    positive where the sample ran slower than predicted (all 0 with fewer than 10 samples)."""
    from sklearn.model_selection import KFold

    from models.timemodel import build_design, fit_weights, make_regressor

    X, y, names = build_design(op_type, samples)
    errors = np.zeros(len(y))
    if len(y) < 10:
        return errors
    weights = fit_weights(y, 0.0)
    folds = KFold(n_splits=min(5, len(y) // 2), shuffle=True, random_state=seed)
    for train, test in folds.split(X):
        reg = make_regressor(op_type, names, cv=0, seed=seed)
        reg.fit(X[train], y[train], sample_weight=weights[train])
        errors[test] = (y[test] - reg.predict(X[test])) / y[test]
    return errors


def adaptive_configs(
    op_type: str,
    samples: Sequence[Mapping[str, Any]],
    n: int,
    seed: int,
    relative_errors: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Propose ``n`` new configurations near the samples with the largest relative error.

    ``samples`` are Sample dicts (``config`` and ``latency.median_ms``). Where ``relative_errors``
    is not given, cross-validated errors of a quick tree fit are used. Half of the proposals probe
    channel steps: the swept width moved to tile boundaries (multiples of 8/16/32 and one more);
    the rest perturb the width by a few channels. Falls back to :func:`sample_configs` when there
    are too few samples to rank.
    """
    _check_op_type(op_type)
    rng = np.random.default_rng([seed, 7919, OP_TYPES.index(op_type)])
    own = [s for s in samples if s.get("op_type", op_type) == op_type]
    if relative_errors is None:
        errors = np.abs(relative_residuals(op_type, own, seed)) if own else np.zeros(0)
    else:
        errors = np.asarray(relative_errors, dtype=float)
    if (
        len(own) < 10
        or errors.size != len(own)
        or not np.any(errors > 0)
        or op_type not in SWEEP_VARIABLE
    ):
        return sample_configs(op_type, n, seed + 104729)
    var = SWEEP_VARIABLE[op_type]
    # Focus on the worst quarter of the samples (at most n of them).
    worst = np.argsort(-errors)[: max(1, min(len(own) // 4, n))]
    out: list[dict[str, Any]] = []
    seen = {config_key(s["config"]) for s in own}
    attempts = 0
    while len(out) < n and attempts < 50 * n:
        attempts += 1
        base = dict(own[int(worst[attempts % len(worst)])]["config"])
        value = int(base[var])
        if rng.random() < 0.5:
            tile = int(rng.choice((8, 16, 32)))
            boundary = max(tile, tile * round(value / tile))
            new_value = boundary + int(rng.choice((0, 1)))
        else:
            new_value = value + int(rng.integers(-8, 9))
        base[var] = max(1, new_value)
        try:
            config = validate_config(op_type, base)
        except ConfigError:
            continue
        key = config_key(config)
        if key in seen or not _affordable(op_type, config):
            continue
        seen.add(key)
        out.append(config)
    if len(out) < n:
        out.extend(sample_configs(op_type, n - len(out), seed + 104729))
    return out


# Of each op type's adaptive budget, the share spent measuring again the samples that ran
# slowest against their cross-validated prediction (the rest proposes new configurations). A
# quarter, as adaptive_configs centres its proposals on the worst quarter of the samples.
RETIME_SHARE = 0.25
# Only samples this far above their prediction are measured again: the op-level target (5% CV
# MAPE, issue 3); nearer than that a second measurement cannot move the error that matters.
RETIME_MIN_EXCESS = 0.05


def retime_configs(
    samples: Sequence[Mapping[str, Any]], residuals: Sequence[float] | np.ndarray, n: int
) -> list[dict[str, Any]]:
    """Configurations of up to ``n`` samples to measure again: those that ran slowest against
    their prediction (``residuals`` from :func:`relative_residuals`, at least
    :data:`RETIME_MIN_EXCESS`), worst first, each once; configurations already measured more
    than once are not measured again. The fitter keeps the fastest label of a configuration
    (``models.timemodel.fastest_per_config``)."""
    twice = measured_more_than_once(samples)
    out: list[dict[str, Any]] = []
    chosen: set[tuple[tuple[str, Any], ...]] = set()
    excess = np.asarray(residuals, dtype=float)
    for i in np.argsort(-excess, kind="stable"):
        if len(out) >= n or excess[i] < RETIME_MIN_EXCESS:
            break
        config = dict(samples[int(i)]["config"])
        key = config_key(config)
        if key in twice or key in chosen:
            continue
        chosen.add(key)
        out.append(config)
    return out


def measured_more_than_once(
    samples: Sequence[Mapping[str, Any]],
) -> set[tuple[tuple[str, Any], ...]]:
    """The configuration keys (:func:`config_key`) that two or more of ``samples`` share."""
    seen: set[tuple[tuple[str, Any], ...]] = set()
    twice: set[tuple[tuple[str, Any], ...]] = set()
    for s in samples:
        key = config_key(s["config"])
        (twice if key in seen else seen).add(key)
    return twice
