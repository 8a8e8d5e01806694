"""Per-device execution-time model: one TreeLinearRegressor per op type plus an invoke overhead.

A network's predicted time is the sum of its ops' predictions plus one per-invoke overhead, with
what the runtime fuses or skips (XNNPACK: PAD folded into the next convolution, RELU/RELU6 folded
into the op that produced its input, RESHAPE-like ops aliased) predicted as free or nearly free.
Op types without a fitted tree get a fallback from the fitted bandwidth and FLOP rates.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls
from sklearn.model_selection import KFold

from models.features import COST_FEATURES, OpInstance, cost_features, tiled_flops
from models.opspace import (
    ACTIVATIONS,
    CONFIG_SPACE,
    FLOAT32_BYTES,
    OP_TYPES,
    PADDINGS,
    PROBE_OP_TYPES,
    chain_layers,
    config_key,
    output_hw,
)
from models.tree import TreeLinearRegressor

VARIANTS: tuple[str, ...] = ("tiled", "paper")
# Tile sizes of GEMM-style kernels tried as derived features (XNNPACK f32 kernels pack output
# channels in 8/16/32-wide panels; conv_channel_steps.csv steps after 64 channels on this host).
TILE_SIZES: tuple[int, ...] = (8, 16, 32)
# The width whose rounding up to a tile changes the work, per op type.
_TILED_WIDTH: dict[str, str] = {
    "conv2d": "cout",
    "depthwise_conv2d": "cin",
    "fully_connected": "cout",
    "lstm": "units",
    "gru": "units",
}
_RECURRENT = frozenset({"lstm", "gru"})
# Output columns of the GEMMs an op runs, per unit of its tiled width: an LSTM step multiplies by
# [x, h] -> 4 gates of ``units`` columns, a GRU step by 3 gates.
_GEMM_WIDTH_FACTOR: dict[str, int] = {"lstm": 4, "gru": 3}
# GEMMs whose output width picks XNNPACK's f32 kernel: a fully-connected op is created with the
# 16-wide kernel unless the 8-wide one ("nr2") wastes fewer padding columns while the 16-wide one
# wastes more than 1% of the width (XNNPACK ``xnn_create_fully_connected_nc_f32``; see
# :func:`uses_narrow_gemm`). The narrow kernel runs every panel, not just the last, at about half
# the speed per weight: at batch 1 and 512 inputs 0.25 ns per weight with it, 0.13 without, and
# the slow kernel shows up exactly where the rule says in 33/33 widths from 688 to 720 and 23/23
# widths from 124 to 1864 (bench/composition.py, composition.json). ``flops_nr2`` is the op's
# FLOPs when it runs the narrow kernel (0 otherwise): one leaf coefficient prices it. LSTM and GRU
# steps run their gates (4 / 3 * units columns) as fully-connected GEMMs. CV MAPE (3 splits, 2500
# samples) against the former "last panel at most half full" rule: dense 8.6 -> 6.6%, LSTM 6.3
# -> 5.1%, GRU (which had no such term) 4.9 -> 3.5%.
_NR2_OPS = frozenset({"fully_connected", "lstm", "gru"})
# Output channels of XNNPACK's default f32 GEMM kernel on x86 AVX2/FMA3 and of its narrow ("nr2")
# alternative, and the share of padding columns (percent) above which the narrow one is chosen.
_GEMM_NR = 16
_GEMM_NR2 = 8
_NR2_MAX_WASTE_PCT = 1
_BROADCAST_OPS = frozenset({"add", "mul", "sub"})
# Ops with a cost per output position apart from their channels: on this host a depthwise 3x3
# on 96x96 costs ~48 ns per output pixel for any cin from 1 to 7 and 15 ns at cin = 8 (cin not a
# multiple of 8 runs a per-pixel path); ``output_pixels`` (h_out * w_out) lets a leaf price it.
_PER_PIXEL_OPS = frozenset({"depthwise_conv2d", "conv2d"})
# Output channels of one XNNPACK f32 GEMM/IGEMM micro-kernel call on x86 AVX2/FMA3 (nr = 16; the
# 5x16 and 1x16 kernels). A convolution's inner loop runs once per output pixel, kernel tap and
# 16-channel panel whatever cin is, so convs with few input channels cost more than their FLOPs
# say (a 7x7 conv with cin = 3 runs at a third of the FLOP rate of cin = 64). Panels of 8 and 32
# channels were tried: conv2d CV MAPE 6.5% and 6.3% against 5.6% with 16 (2500 samples).
_CONV_PANEL_CHANNELS = _GEMM_NR
# XNNPACK f32 depthwise micro-kernels on x86 FMA3: (taps, channel tile) of its single-pass kernels
# (3p16c, 4p16c, 9p16c, 25p8c). A kernel with fewer taps runs the next larger one (a 1x5 kernel
# pays for 9 taps), and channels are processed a whole tile at a time. Kernels over 25 taps run
# multi-pass (``flops_multipass``) and are counted by their own taps, 8 channels at a time.
_DW_TAP_TILES: tuple[tuple[int, int], ...] = ((3, 16), (4, 16), (9, 16), (25, 8))
# Largest depthwise kernel (taps = kh * kw) run by a single-pass micro-kernel (5x5); larger kernels
# run a multi-pass kernel measured ~8x slower per FLOP on this host.
_DW_UNIPASS_TAPS = _DW_TAP_TILES[-1][0]
_DW_MULTIPASS_CHANNELS = 8
# Channels of the narrowest full group XNNPACK's depthwise and pooling kernels process without
# masking (16- and 8-wide loops, then a masked remainder). ``cin mod 4`` and ``cin mod 16`` as the
# remainder test fitted worse: depthwise CV MAPE 7.7% and 9.4% against 7.2% (3 splits, 2500
# samples).
_CHANNEL_GROUP = 8
# Ops with such a masked channel tail per output pixel, and the variable holding their channels.
_MASKED_TAIL_CHANNELS: dict[str, str] = {
    "depthwise_conv2d": "cin",
    "max_pool2d": "c",
    "avg_pool2d": "c",
}
# Pooling ops: a cost per output pixel (``output_pixels``) besides their bytes (CV MAPE on 73 /
# 87 samples: max pool 13.3 -> 10.1%, average pool 24.6 -> 10.2% with remainder_pixels).
_POOL_OPS = frozenset({"max_pool2d", "avg_pool2d"})
# Ops that copy one row of channels per pixel (XNNPACK's channel concatenation and constant pad
# run a copy per pixel, not one flat memcpy): ``pixels`` (h * w) prices each copy's fixed cost.
# CV MAPE (3 splits, 92 / 80 samples): concatenation 20.0 -> 13.1%, pad 20.2 -> 11.3%; the same
# column on flat element-wise ops (add, mul, relu, hard_swish, mean...) changed nothing.
_ROW_COPY_OPS = frozenset({"concatenation", "pad"})
# XNNPACK's IGEMM and depthwise kernels read their input through an indirection buffer: one
# pointer per output pixel and kernel tap, part of what the op keeps in cache.
_POINTER_BYTES = 8
# Ops whose trees may split on ``patch_bytes`` (:func:`patch_bytes`): a depthwise kernel reads its
# whole filter (taps x channels) for every output pixel, and once that no longer fits the L1 with
# the input patch it runs slower per FLOP (fifth VM, L1d 48 KiB: a 5x5 on 28x28 costs 0.77 ns per
# pixel and channel at cin 256 and 1.30 at cin 512; a 7x7 on 56x56 23.4 ms at cin 256). A split
# variable, not a fixed L1 size: the tree finds the threshold of each device. Depthwise CV MAPE
# (5-fold, 3 splits) on the fifth VM's two campaigns of 2026-12-02: 8.20 -> 8.01% and
# 9.13 -> 8.15%. A leaf term on top (the FLOPs of layers over a fixed 24, 48 or 96 KiB) moved it
# by -0.4 to +0.3 points against the split alone (refits of the depthwise samples only).
_PATCH_OPS = frozenset({"depthwise_conv2d"})
# Cost features whose sum is the bytes an op touches (its cache footprint).
_WORKING_SET = ("input_bytes", "output_bytes", "param_bytes")
# Smallest op time kept after subtracting the invoke overhead (ms); keeps relative errors finite.
MIN_OP_MS = 1e-4
# Smallest leaf of a tree (a leaf also has more rows than coefficients: see make_regressor).
MIN_SAMPLES_LEAF = 8
# An op type needs this many samples for its own tree; fewer are predicted by the fallback.
MIN_SAMPLES_FOR_TREE = 12
# Fewest samples of a recurrent op type beyond the cache that its per-step reload rate
# (:func:`step_reload_rate`) is fitted from; with fewer, such a layer is priced at no less than
# reading its weights from DRAM at every step (:func:`with_step_reload`).
MIN_STREAMED_STEP_SAMPLES = 3
# Ops that only change the tensor's view: XNNPACK aliases their buffers (no copy, no kernel).
VIEW_OPS = frozenset({"reshape", "squeeze", "expand_dims"})
# Share of a memcpy-speed copy charged for a view op, for the cases where the buffer is copied.
_VIEW_COST_SHARE = 0.25
# Ops XNNPACK folds into the producer of their input (output clamp of conv/fc/element-wise).
_CLAMP_OPS = frozenset({"relu", "relu6"})
_CLAMP_PRODUCERS = frozenset(
    {
        "conv2d",
        "depthwise_conv2d",
        "fully_connected",
        "add",
        "mul",
        "sub",
        "max_pool2d",
        "avg_pool2d",
    }
)
_PAD_CONSUMERS = frozenset({"conv2d", "depthwise_conv2d", "max_pool2d", "avg_pool2d"})
# Bandwidth-bound op types whose fitted rate (ms per byte) prices unknown ops.
_BANDWIDTH_OPS = ("add", "mul", "sub", "relu", "relu6", "concatenation", "pad")
# Defaults before any sample exists: ~10 GB/s memory traffic and ~10 GFLOP/s (one mobile core).
_DEFAULT_MS_PER_BYTE = 1e-7
_DEFAULT_MS_PER_FLOP = 1e-7


# ---------------------------------------------------------------------------------------------
# Feature vectors
# ---------------------------------------------------------------------------------------------


def cost_feature_names(op_type: str, variant: str = "tiled") -> list[str]:
    """Columns used by the leaf models: the cost features, plus tile-rounded FLOPs if tiled.

    Binary element-wise ops with a broadcast ``1x1x1xc`` operand also use ``broadcast_rows``
    (``h * w``): the kernel restarts per row of ``c``, which costs per row when ``c`` is small.
    Recurrent layers also use ``seq_len`` (each loop step pays a fixed interpreter cost) and
    ``accumulated_bytes`` (a layer that returns sequences rewrites its [seq_len, 1, units]
    output accumulator at every step: seq_len**2 * units floats copied).
    The tiled depthwise model adds ``flops_multipass`` (FLOPs of kernels over 25 taps) and
    ``grouped_steps`` (:func:`grouped_steps`, when ``multiplier > 1``): XNNPACK runs both with
    other, much slower kernels (measured 6-8x the ms per FLOP of 3x3), and as leaf terms they
    need one coefficient each instead of a leaf of their own, which their few samples cannot fill;
    and ``unaligned_steps`` (:func:`remainder_pixels`). Convolutions (tiled) add
    ``output_pixels`` and ``tap_steps`` (:func:`tap_steps`): costs per output position and per
    micro-kernel step that FLOPs do not count; conv2d also ``strided_pointwise_flops``, the FLOPs
    of a 1x1 convolution with a stride (:func:`strided_pointwise`), which runs another kernel than
    the 1x1 convolutions it is otherwise fitted with. Dense layers, LSTM and GRU add ``flops_nr2``:
    their FLOPs when XNNPACK runs the GEMM with its narrow kernel (:func:`uses_narrow_gemm`; at
    batch 1). Pooling adds ``output_pixels``, concatenation and pad ``pixels`` (one row copy per
    pixel), and depthwise and pooling ``remainder_pixels`` (:func:`remainder_pixels`), a masked
    channel tail per pixel.
    """
    _check_variant(variant)
    names = list(COST_FEATURES)
    if op_type in _RECURRENT:
        names += ["seq_len", "accumulated_bytes"]
    if op_type in _BROADCAST_OPS:
        names.append("broadcast_rows")
    if variant == "tiled" and op_type in _PER_PIXEL_OPS:
        names += ["output_pixels", "tap_steps"]
    if variant == "tiled" and op_type == "conv2d":
        names.append("strided_pointwise_flops")
    if variant == "tiled" and op_type in _POOL_OPS:
        names.append("output_pixels")
    if variant == "tiled" and op_type in _ROW_COPY_OPS:
        names.append("pixels")
    if variant == "tiled" and op_type == "depthwise_conv2d":
        names += ["flops_multipass", "grouped_steps", "unaligned_steps"]
    if variant == "tiled" and op_type in _MASKED_TAIL_CHANNELS:
        names.append("remainder_pixels")
    if variant == "tiled" and op_type in _TILED_WIDTH:
        width = _TILED_WIDTH[op_type]
        names += [f"flops_{width}_tile{t}" for t in TILE_SIZES]
    if variant == "tiled" and op_type in _NR2_OPS:
        names.append("flops_nr2")
    return names


def split_feature_names(op_type: str, variant: str = "tiled") -> list[str]:
    """Columns splits may test: the op's configuration variables (categoricals as codes).

    The tiled variant may also split on ``working_set_bytes`` (input + output + parameter bytes):
    whether an op's tensors fit in a cache level changes its time per byte, and no single
    configuration variable says that (a 2048x2048 dense layer misses an 8 MiB L3, 1024x2048 not).
    Convolutions may also split on ``footprint_bytes``: the working set plus their indirection
    buffer (:func:`indirection_bytes`), 3.6 MB for a 3x3 kernel on 224x224, which decides whether
    a large depthwise layer stays in the L3 (measured 2.5-3x slower per FLOP when it does not).
    Depthwise convolutions may also split on ``patch_bytes`` (:func:`patch_bytes`, the filter read
    per output pixel), which decides whether a layer's filter stays in the L1.

    Ops with a tiled width also get ``gemm_tail{t}``: how many of the ``t`` columns of the last
    ``t``-wide panel of their GEMM output are used, ``(width - 1) mod t + 1`` (width = ``cout``;
    ``cin * multiplier`` for depthwise; ``4 * units`` / ``3 * units`` for LSTM / GRU gates). It
    extends the integer-multiple split (``width mod t == 0`` is ``gemm_tail{t} == t``) to how
    full the last panel is, which a runtime may use to pick a narrower kernel (XNNPACK's rule
    is :func:`uses_narrow_gemm`, priced by the ``flops_nr2`` leaf term).
    """
    _check_variant(variant)
    space = CONFIG_SPACE.get(op_type)
    names = [v.name for v in space] if space is not None else []
    if variant == "tiled" and names:
        names.append("working_set_bytes")
        if op_type in _PER_PIXEL_OPS:
            names.append("footprint_bytes")
        if op_type in _PATCH_OPS:
            names.append("patch_bytes")
        if op_type in _TILED_WIDTH:
            names += [f"gemm_tail{t}" for t in TILE_SIZES]
            names += [f"gemm_pad{t}" for t in TILE_SIZES]
    return names


def is_pointwise(config: Mapping[str, Any]) -> bool:
    """Whether a convolution has a 1x1 kernel (a GEMM over its pixels)."""
    return int(config.get("kh", 0)) == 1 and int(config.get("kw", 0)) == 1


def strided_pointwise(config: Mapping[str, Any]) -> bool:
    """Whether a conv2d is a 1x1 convolution with a stride above 1.

    XNNPACK runs a 1x1 stride-1 convolution as a plain GEMM over the contiguous pixels, but one
    with a stride through its IGEMM kernel, with an indirection buffer of one pointer per output
    pixel, reading every ``stride``-th pixel. Its trees grouped these with the stride-1 ones they
    resemble: their out-of-fold errors had a median of -14% (measured slower than predicted; 37
    of 611 conv2d samples, 19% MAPE, on the third VM's campaign of 2026-12-01 04:05). As a leaf
    term (their FLOPs) a leaf can price them at their own rate with one coefficient; 5-fold CV
    MAPE of conv2d, 3 splits each, on that VM's three stored campaigns: 6.62 -> 5.95%,
    7.16 -> 6.78%, 6.34 -> 5.95%.
    """
    return is_pointwise(config) and int(config.get("stride", 1)) > 1


def tap_steps(op_type: str, config: Mapping[str, Any]) -> int:
    """Inner-loop steps of a convolution's micro-kernel: output pixels x kernel taps x channel
    panels (conv2d: ``cout`` in panels of 16; depthwise: taps and ``cin * multiplier`` rounded up to
    the kernel that runs them, see ``_DW_TAP_TILES``). A leaf term: each step has a fixed cost
    apart from its FLOPs, which dominates when ``cin`` (conv2d) or the taps (depthwise) are few.
    """
    taps = int(config.get("kh", 1)) * int(config.get("kw", 1))
    if op_type == "conv2d":
        panels = -(-int(config.get("cout", 0)) // _CONV_PANEL_CHANNELS)
        return output_pixels(config) * taps * panels
    if int(config.get("multiplier", 1)) > 1:
        return 0  # a grouped convolution, counted by grouped_steps
    channels = int(config.get("cin", 0))
    kernel_taps, tile = taps, _DW_MULTIPASS_CHANNELS
    for tile_taps, tile_channels in _DW_TAP_TILES:
        if taps <= tile_taps:
            kernel_taps, tile = tile_taps, tile_channels
            break
    return output_pixels(config) * kernel_taps * -(-channels // tile)


def grouped_steps(config: Mapping[str, Any]) -> int:
    """Micro-kernel steps of a depthwise convolution with ``multiplier > 1`` (0 otherwise).

    XNNPACK has depthwise kernels only for one output channel per input channel; a multiplier
    above 1 runs as a grouped convolution (``cin`` groups of 1 input and ``multiplier`` output
    channels) through the IGEMM kernel, one step per output pixel, tap and group with the
    multiplier padded to a 16-wide panel. Measured ~1.5 ns per step for all 12 such samples whose
    input fits the L3, whatever the kernel, size or ``cin`` (their FLOP rate varies 2x).
    """
    multiplier = int(config.get("multiplier", 1))
    if multiplier <= 1:
        return 0
    taps = int(config.get("kh", 1)) * int(config.get("kw", 1))
    panels = -(-multiplier // _CONV_PANEL_CHANNELS)
    return output_pixels(config) * taps * int(config.get("cin", 0)) * panels


def remainder_pixels(op_type: str, config: Mapping[str, Any]) -> int:
    """Output pixels of a depthwise or pooling op whose channels end in a partial 8-wide group.

    XNNPACK's depthwise and pooling kernels run channels 16 and 8 at a time and the rest
    (``channels mod 8``) with masked loads and stores, once per output pixel: on this host ~45 ns
    per pixel for a depthwise 3x3 whatever ``cin`` (224x224: cin 8 takes 0.77 ms, cin 9 3.1 ms;
    cin 24 1.7 ms, cin 25 4.1 ms). 0 for a depthwise multiplier above 1 (a grouped convolution,
    :func:`grouped_steps`).

    Such a depthwise layer also gets ``unaligned_steps``, its :func:`tap_steps` (0 otherwise):
    with ``cin mod 8 != 0`` no pixel's channel row starts on a 32-byte boundary, so each of its
    vector loads is unaligned and some cross a cache line. 3-split CV MAPE 7.7 -> 7.2% (fresh
    2500 samples), 7.2 -> 7.0% (older 2500).
    """
    if op_type == "depthwise_conv2d" and int(config.get("multiplier", 1)) > 1:
        return 0
    if int(config.get(_MASKED_TAIL_CHANNELS[op_type], 0)) % _CHANNEL_GROUP == 0:
        return 0
    return output_pixels(config)


def working_set_bytes(features: Mapping[str, float]) -> float:
    """Bytes an op touches (input + output + parameter bytes) from its cost features."""
    return float(sum(float(features.get(k, 0.0)) for k in _WORKING_SET))


def patch_bytes(config: Mapping[str, Any]) -> int:
    """Filter bytes a depthwise kernel reads per output pixel: taps x cin x multiplier floats
    (a split variable of the tiled depthwise tree, see ``_PATCH_OPS``)."""
    taps = int(config.get("kh", 1)) * int(config.get("kw", 1))
    channels = int(config.get("cin", 0)) * int(config.get("multiplier", 1))
    return taps * channels * FLOAT32_BYTES


def indirection_bytes(config: Mapping[str, Any]) -> int:
    """Bytes of a convolution's indirection buffer: one pointer per output pixel and tap."""
    taps = int(config.get("kh", 1)) * int(config.get("kw", 1))
    return output_pixels(config) * taps * _POINTER_BYTES


def output_pixels(config: Mapping[str, Any]) -> int:
    """Output positions ``h_out * w_out`` of a convolution configuration."""
    h_out, w_out = output_hw(
        int(config.get("h", 0)),
        int(config.get("w", 0)),
        int(config.get("kh", 1)),
        int(config.get("kw", 1)),
        int(config.get("stride", 1)),
        str(config.get("padding", "same")),
    )
    return h_out * w_out


def tiled_width(op_type: str, config: Mapping[str, Any]) -> int:
    """The op's width that tiled FLOPs round up: ``_TILED_WIDTH``'s variable (x multiplier)."""
    width = int(config.get(_TILED_WIDTH[op_type], 0))
    if op_type == "depthwise_conv2d":
        width *= int(config.get("multiplier", 1))
    return width


def gemm_width(op_type: str, config: Mapping[str, Any]) -> int:
    """Output columns of the GEMM (or GEMV) ``op_type`` runs: its tiled width, times the gates of
    a recurrent step."""
    return tiled_width(op_type, config) * _GEMM_WIDTH_FACTOR.get(op_type, 1)


def gemm_pad(width: int, tile: int) -> float:
    """Share of padding columns when ``width`` is rounded up to whole ``tile``-wide panels."""
    return (tile - gemm_tail(width, tile)) / width if width > 0 else 0.0


def uses_narrow_gemm(width: int) -> bool:
    """Whether XNNPACK runs a GEMM of ``width`` output columns with its narrow (8-wide) kernel.

    The rule of ``xnn_create_fully_connected_nc_f32``: the 16-wide kernel is the default; the
    8-wide one is chosen when the width is under 16, or when it pads fewer columns and the 16-wide
    one pads more than 1% of the width. So cout 520 (8 padding columns of 16, none of 8) runs
    narrow, 523 (5 and 5) and 856 (8 columns are under 1% of 856) do not.
    """
    if width <= 0:
        return False
    pad = _GEMM_NR - gemm_tail(width, _GEMM_NR)
    pad_narrow = _GEMM_NR2 - gemm_tail(width, _GEMM_NR2)
    return width < _GEMM_NR or (pad_narrow < pad and pad * 100 > _NR2_MAX_WASTE_PCT * width)


def gemm_tail(width: int, tile: int) -> int:
    """Columns used in the last ``tile``-wide panel of ``width`` columns (1..tile; 0 if none)."""
    return (width - 1) % tile + 1 if width > 0 else 0


def feature_names(op_type: str, variant: str = "tiled") -> list[str]:
    """All columns of :func:`op_feature_vector` for ``op_type``: cost features then variables."""
    return cost_feature_names(op_type, variant) + split_feature_names(op_type, variant)


def _code(name: str, value: Any) -> float:
    if name == "padding":
        return float(PADDINGS.index(value)) if value in PADDINGS else 0.0
    if name == "activation":
        return float(ACTIVATIONS.index(value)) if value in ACTIVATIONS else 0.0
    return float(value)


def op_feature_vector(
    op_type: str,
    config: Mapping[str, Any],
    features: Mapping[str, float] | None = None,
    variant: str = "tiled",
) -> np.ndarray:
    """The row of the design matrix of one op, in :func:`feature_names` order.

    ``features`` are its cost features (computed from ``config`` when omitted). Padding is coded
    0 = same, 1 = valid; activation 0 = none, 1 = relu, 2 = relu6.
    """
    feats = dict(features) if features is not None else cost_features(op_type, config)
    row = [float(feats.get(name, 0.0)) for name in COST_FEATURES]
    if op_type in _RECURRENT:
        seq_len, units = int(config.get("seq_len", 0)), int(config.get("units", 0))
        returns = int(config.get("return_sequences", 0))
        row += [float(seq_len), float(returns * seq_len * seq_len * units * FLOAT32_BYTES)]
    if op_type in _BROADCAST_OPS:
        broadcast = int(config.get("broadcast", 0))
        row.append(float(broadcast * int(config.get("h", 0)) * int(config.get("w", 0))))
    if variant == "tiled" and op_type in _PER_PIXEL_OPS:
        row += [float(output_pixels(config)), float(tap_steps(op_type, config))]
    if variant == "tiled" and op_type == "conv2d":
        row.append(float(feats.get("flops", 0.0)) if strided_pointwise(config) else 0.0)
    if variant == "tiled" and op_type in _POOL_OPS:
        row.append(float(output_pixels(config)))
    if variant == "tiled" and op_type in _ROW_COPY_OPS:
        row.append(float(int(config.get("h", 0)) * int(config.get("w", 0))))
    if variant == "tiled" and op_type == "depthwise_conv2d":
        flops = float(feats.get("flops", 0.0))
        taps = int(config.get("kh", 1)) * int(config.get("kw", 1))
        row += [
            flops if taps > _DW_UNIPASS_TAPS and not grouped_steps(config) else 0.0,
            float(grouped_steps(config)),
            float(tap_steps(op_type, config)) if remainder_pixels(op_type, config) else 0.0,
        ]
    if variant == "tiled" and op_type in _MASKED_TAIL_CHANNELS:
        row.append(float(remainder_pixels(op_type, config)))
    if variant == "tiled" and op_type in _TILED_WIDTH:
        width = tiled_width(op_type, config)
        row += [tiled_flops(feats.get("flops", 0.0), width, t) for t in TILE_SIZES]
    gemm = gemm_width(op_type, config) if op_type in _TILED_WIDTH else 0
    if variant == "tiled" and op_type in _NR2_OPS:
        # Priced at batch 1 only, where bench/composition.py measures it; XNNPACK picks the
        # kernel whatever the batch, but a 4-row GEMM showed no such step in the sweep that
        # first found it.
        one_row = int(config.get("rows", 1)) == 1
        row.append(float(feats.get("flops", 0.0)) if one_row and uses_narrow_gemm(gemm) else 0.0)
    working_set = working_set_bytes(feats)
    for name in split_feature_names(op_type, variant):
        if name == "working_set_bytes":
            row.append(working_set)
        elif name == "footprint_bytes":
            row.append(working_set + indirection_bytes(config))
        elif name == "patch_bytes":
            row.append(float(patch_bytes(config)))
        elif name.startswith("gemm_tail"):
            row.append(float(gemm_tail(gemm, int(name[len("gemm_tail") :]))))
        elif name.startswith("gemm_pad"):
            row.append(gemm_pad(gemm, int(name[len("gemm_pad") :])))
        else:
            row.append(_code(name, config.get(name, 0)))
    return np.asarray(row, dtype=float)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def _sample_features(sample: Mapping[str, Any]) -> dict[str, float]:
    op_type, config = sample["op_type"], sample.get("config", {})
    try:
        return cost_features(op_type, config)
    except (KeyError, ValueError, TypeError):
        return {k: float(v) for k, v in dict(sample.get("features", {})).items()}


def sample_latency_ms(sample: Mapping[str, Any]) -> float:
    """The label of a Sample dict: ``latency.median_ms`` (or a flat ``median_ms``), as timed.

    A sample's own canary ratio is not divided out: re-measuring samples whose canary said the
    core ran slow showed the ops slowed far less than the canary (``bench/canary.py``), so a slow
    canary triggers a re-measurement, and a sample still disturbed is left out instead. A steady
    speed state of the whole host is: :func:`quiet_samples` returns copies at the reference speed.
    """
    latency = sample.get("latency")
    if isinstance(latency, Mapping):
        return float(latency["median_ms"])
    return float(sample["median_ms"])


def streamed_step_bytes(
    op_type: str,
    config: Mapping[str, Any],
    features: Mapping[str, float],
    cache_bytes: float | None,
) -> float:
    """Weight bytes a recurrent layer fetches from beyond the cache over its steps.

    A recurrent layer multiplies by all of its weights at every step. While they fit in the cache
    they stay there; past it each step evicts what the next one needs, so every step reads them
    all again (on the third development VM, 2 MiB L2: LSTM and GRU layers with 2.1-6.3 MB of
    weights ran 32-48 ps per weight byte and step, 2-3x the FLOP rate of those within it, which
    their trees had under-predicted by 54-60% on average). ``seq_len * param_bytes`` for an LSTM
    or GRU whose ``param_bytes`` exceed ``cache_bytes``; 0 otherwise, or when the cache is unknown.
    """
    if op_type not in _RECURRENT or cache_bytes is None:
        return 0.0
    param_bytes = float(features.get("param_bytes", 0.0))
    if param_bytes <= cache_bytes:
        return 0.0
    return float(config.get("seq_len", 0)) * param_bytes


def step_reload_rate(
    tree_ms: np.ndarray, op_ms: np.ndarray, step_bytes: np.ndarray
) -> float | None:
    """ms per weight byte and step that layers beyond the cache take on top of their tree.

    The median over those layers of (op time - tree prediction) / :func:`streamed_step_bytes`:
    the tree, fitted on layers within the cache, prices the arithmetic; the rest is the reload.
    None with fewer than :data:`MIN_STREAMED_STEP_SAMPLES` layers.
    """
    if len(op_ms) < MIN_STREAMED_STEP_SAMPLES:
        return None
    return max(float(np.median((op_ms - np.maximum(tree_ms, 0.0)) / step_bytes)), 0.0)


def with_step_reload(
    tree_ms: np.ndarray,
    step_bytes: np.ndarray,
    rate: float | None,
    dram_ms_per_param_byte: float | None,
) -> np.ndarray:
    """Op times (ms) of layers whose :func:`streamed_step_bytes` are ``step_bytes``.

    ``tree + rate * step_bytes`` with a fitted :func:`step_reload_rate`; without one, at least
    ``dram_ms_per_param_byte * step_bytes`` (the weights read from DRAM at every step); the tree
    alone when neither is known. Rows with no streamed bytes keep their tree time.
    """
    floored: np.ndarray = np.maximum(np.asarray(tree_ms, dtype=float), 0.0)
    if rate is not None:
        return floored + rate * step_bytes
    if dram_ms_per_param_byte is not None:
        floored = np.maximum(floored, dram_ms_per_param_byte * step_bytes)
    return floored


def build_design(
    op_type: str,
    samples: Sequence[Mapping[str, Any]],
    overhead_ms: float = 0.0,
    variant: str = "tiled",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Design matrix, op times (ms, overhead subtracted, floored) and column names of op samples."""
    own = [s for s in samples if s.get("op_type", op_type) == op_type]
    names = feature_names(op_type, variant)
    X = np.array(
        [
            op_feature_vector(
                op_type, s.get("config", {}), _sample_features({**s, "op_type": op_type}), variant
            )
            for s in own
        ],
        dtype=float,
    ).reshape(len(own), len(names))
    y = np.array([max(sample_latency_ms(s) - overhead_ms, MIN_OP_MS) for s in own], dtype=float)
    return X, y, names


# Root splits the tiled trees make before growing greedily (kept by pruning). A depthwise layer
# with a channel multiplier above 1 runs through another XNNPACK kernel, a grouped convolution
# (:func:`grouped_steps`; 0.5-2.1 ns per step against the depthwise kernels' own costs). Grown
# greedily, the tree split first on other variables and left those ~8% of samples scattered over
# leaves fitted on multiplier 1: their CV MAPE was 15.6% (115 of 1408 samples of the 2026-11-30
# 11:35 campaign; 5-fold, -85% at worst) against 4.3% for the rest. With this split first (3-fold,
# 2 seeds), depthwise 5.78 -> 5.20% on those samples, 6.88 -> 6.54% on the 14:32 campaign's (not
# used to choose it), 5.69 -> 5.75% on four earlier ~300-sample campaigns pooled.
FORCED_SPLITS: dict[str, dict[str, Any]] = {
    "depthwise_conv2d": {"feature": "multiplier", "kind": "le", "value": 1},
}


# M5 smoothing constants of the tiled trees (TreeLinearRegressor ``smoothing``), a grid from which
# each tree's cross-validation picks one with its pruning strength (0 = none). Refitting the two
# stored campaigns of 2026-12-03 on five 80% subsets each, a network's prediction moved a median
# 2.6% and 2.4% between fits with it against 3.4% and 3.4% without (bench.bagging), with the same
# network scores and op-level CV (README, "How much the fit itself moves"). The grid is the first
# one tried, geometric from 2 (a leaf of 8 rows: 20% its parent) to 32 (80%); 15, M5's constant,
# used alone, worsened the CV of conv2d, depthwise, dense, LSTM and GRU on the fifth campaign
# (LSTM 8.01 -> 10.24%; bench/results/refit_vm5_fifth_smoothing15.json).
TREE_SMOOTHING: tuple[float, ...] = (0.0, 2.0, 8.0, 32.0)


def make_regressor(
    op_type: str, names: Sequence[str], *, cv: int = 5, seed: int = 0, variant: str = "tiled"
) -> TreeLinearRegressor:
    """The tree used for ``op_type``: cost columns in the leaves, config variables in splits."""
    costs = [n for n in cost_feature_names(op_type, variant) if n in names]
    splits = [n for n in split_feature_names(op_type, variant) if n in names]
    forced = FORCED_SPLITS.get(op_type) if variant == "tiled" else None
    if forced is not None and forced["feature"] not in splits:
        forced = None
    return TreeLinearRegressor(
        cost_features=costs,
        split_features=splits or None,
        feature_names=list(names),
        max_depth=6,
        # More rows than the leaf's coefficients (cost columns + intercept), and at least 8.
        min_samples_leaf=max(MIN_SAMPLES_LEAF, len(costs) + 2),
        min_gain=0.005,
        cv=cv,
        # Relative error is weighted through sample_weight (see fit_weights), not on op time.
        relative=False,
        random_state=seed,
        forced_split=forced,
        smoothing=TREE_SMOOTHING if variant == "tiled" else 0.0,
    )


def fit_weights(op_ms: np.ndarray, overhead_ms: float) -> np.ndarray:
    """Row weights 1 / measured**2: squared error relative to the *measured* sample latency.

    Weighting by the op time alone would let ops far below the invoke overhead, whose op time is
    mostly measurement noise, dominate the fit.
    """
    measured = np.asarray(op_ms, dtype=float) + overhead_ms
    weights: np.ndarray = 1.0 / np.maximum(measured, MIN_OP_MS) ** 2
    return weights


# ---------------------------------------------------------------------------------------------
# The device model
# ---------------------------------------------------------------------------------------------

# An extra below a nanosecond is dropped, note and all (least-squares fits leave ~1e-19 ms of
# floating-point dust where the curve is flat at 0; no agent's timer resolves a nanosecond).
NEGLIGIBLE_MS = 1e-6


@dataclass
class OpPrediction:
    """Predicted time of one op (ms); ``fallback`` when no tree of its op type priced it;
    ``reload_ms`` the part of ``predicted_ms`` spent reloading weights the network evicted."""

    index: int
    op_type: str
    config: dict[str, Any]
    predicted_ms: float
    fallback: bool
    note: str = ""
    reload_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NetworkPrediction:
    """Predicted time of one invoke of a network (ms): the ops plus one invoke overhead."""

    total_ms: float
    overhead_ms: float
    ops: list[OpPrediction] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_ms": self.total_ms,
            "overhead_ms": self.overhead_ms,
            "ops": [op.to_dict() for op in self.ops],
        }

    def by_op_type_ms(self) -> dict[str, float]:
        """Predicted ms summed per op type."""
        totals: dict[str, float] = {}
        for op in self.ops:
            totals[op.op_type] = totals.get(op.op_type, 0.0) + op.predicted_ms
        return totals


@dataclass(frozen=True)
class ErrorBand:
    """How far a network prediction can be trusted, from the model's own validation.

    ``expected_error_pct`` is the op types' cross-validated MAPE (``cv_mape``, as a percent)
    weighted by each type's share of the network's predicted op time, over the op types that
    have one; None when none has. ``unvalidated_ms`` is the predicted time of op types without a
    cross-validated error (fallback op types, and types with too few samples for a tree), which
    the band does not cover. Op errors within one network partly cancel, so on a quiet host the
    band is wider than the network's usual error; ``python -m bench.error_band`` measures how
    often the networks of the stored benchmark runs fell within it.
    """

    expected_error_pct: float | None
    unvalidated_ms: float


def error_band(
    time_by_op_type_ms: Mapping[str, float], per_op_type: Mapping[str, Mapping[str, Any]]
) -> ErrorBand:
    """The :class:`ErrorBand` of a network predicted as ``time_by_op_type_ms`` (ms per op type,
    e.g. :meth:`NetworkPrediction.by_op_type_ms`) by a model whose fit metrics' ``per_op_type``
    (:func:`fit_device_model`) hold each type's ``cv_mape`` (a fraction)."""
    weighted = validated_ms = unvalidated_ms = 0.0
    for op_type, time_ms in time_by_op_type_ms.items():
        cv_mape = (per_op_type.get(op_type) or {}).get("cv_mape")
        if isinstance(cv_mape, int | float) and np.isfinite(cv_mape):
            weighted += time_ms * float(cv_mape)
            validated_ms += time_ms
        else:
            unvalidated_ms += time_ms
    expected = 100.0 * weighted / validated_ms if validated_ms > 0 else None
    return ErrorBand(expected, unvalidated_ms)


def within_band_pct(
    errors_pct: Sequence[float], bands_pct: Sequence[float], factor: float = 1.0
) -> float | None:
    """The share (%) of networks whose absolute error is within ``factor`` times their
    :class:`ErrorBand` (pairs of ``errors_pct`` and ``bands_pct``); None without any network."""
    if not errors_pct:
        return None
    pairs = zip(errors_pct, bands_pct, strict=True)
    return 100.0 * sum(abs(e) <= factor * b for e, b in pairs) / len(errors_pct)


class DeviceTimeModel:
    """Execution-time model of one (device, execution config): trees per op type + overhead.

    Parameters
    ----------
    trees : mapping of op type to fitted TreeLinearRegressor
        Over the columns of :func:`feature_names` for that op type and ``variant``.
    overhead_ms : float
        Fixed cost of one ``invoke()`` (ms).
    variant : {"tiled", "paper"}
        Feature set the trees were fitted on.
    ms_per_byte, ms_per_flop : float
        Fallback rates for op types without a tree (fitted from bandwidth-bound ops and conv2d).
    cache_bytes, dram_ms_per_param_byte : float or None
        The weight-streaming regime, fitted from the batch-1 dense samples by
        :func:`estimate_weight_streaming`: a single-op benchmark re-reads its weights from cache,
        but in a network whose weights exceed ``cache_bytes`` every op's weights are evicted
        between inferences, so no op runs faster than ``param_bytes * dram_ms_per_param_byte``.
        None: not identifiable from the samples (no floor applied).
    reload_ms_per_param_byte : float or None
        In such a network, the time (ms per weight byte) an op whose weights fit in the cache
        alone pays on top of its single-op time to fetch them again at every invoke, fitted from
        the ``conv_chain`` probes by :func:`estimate_reload_rate`. None: no probes (not added).
    chain_extra : (param bytes, ratio) knots or None
        In a network within the cache, what each op with weights pays on top of its single-op
        time, as a fraction of that time: a non-decreasing function of the network's weight bytes
        (linear between the knots, flat beyond them), fitted from the ``conv_chain`` probes by
        :func:`estimate_chain_extra`. None: too few probes (not added).
    step_reload_ms_per_param_byte : mapping of recurrent op type to float, optional
        What an LSTM or GRU layer whose weights exceed ``cache_bytes`` pays on top of its tree,
        per weight byte and step (:func:`streamed_step_bytes`), fitted by
        :func:`step_reload_rate`. A recurrent op type without one is priced at no less than
        ``dram_ms_per_param_byte`` per weight byte and step there (:func:`with_step_reload`).
    """

    def __init__(
        self,
        trees: Mapping[str, TreeLinearRegressor],
        overhead_ms: float,
        variant: str = "tiled",
        ms_per_byte: float = _DEFAULT_MS_PER_BYTE,
        ms_per_flop: float = _DEFAULT_MS_PER_FLOP,
        cache_bytes: float | None = None,
        dram_ms_per_param_byte: float | None = None,
        reload_ms_per_param_byte: float | None = None,
        chain_extra: tuple[Sequence[float], Sequence[float]] | None = None,
        step_reload_ms_per_param_byte: Mapping[str, float] | None = None,
    ) -> None:
        _check_variant(variant)
        self.step_reload_ms_per_param_byte = {
            op_type: float(rate) for op_type, rate in (step_reload_ms_per_param_byte or {}).items()
        }
        self.chain_extra = (
            None
            if chain_extra is None
            else ([float(x) for x in chain_extra[0]], [float(y) for y in chain_extra[1]])
        )
        self.reload_ms_per_param_byte = (
            None if reload_ms_per_param_byte is None else float(reload_ms_per_param_byte)
        )
        self.cache_bytes = None if cache_bytes is None else float(cache_bytes)
        self.dram_ms_per_param_byte = (
            None if dram_ms_per_param_byte is None else float(dram_ms_per_param_byte)
        )
        self.trees = dict(trees)
        self.overhead_ms = float(overhead_ms)
        self.variant = variant
        self.ms_per_byte = float(ms_per_byte)
        self.ms_per_flop = float(ms_per_flop)

    @property
    def op_types(self) -> list[str]:
        return sorted(self.trees)

    def predict_op(
        self, op_type: str, config: Mapping[str, Any], features: Mapping[str, float] | None = None
    ) -> tuple[float, bool]:
        """Predicted time of one op (ms) and whether it came from the fallback."""
        feats = dict(features) if features is not None else None
        dense = self._as_dense(op_type, config)
        if dense is not None:
            op_type, config = "fully_connected", dense
            feats = cost_features("fully_connected", dense)
        tree = self.trees.get(op_type)
        if tree is not None:
            try:
                row = _fitted_columns(tree, op_type, self.variant, config, feats)
                tree_ms = max(float(tree.predict(row[None, :])[0]), 0.0)
            except (KeyError, ValueError, TypeError):
                pass
            else:
                return self._with_step_reload(op_type, config, feats, tree_ms), False
        if feats is None:
            try:
                feats = cost_features(op_type, config)
            except (KeyError, ValueError, TypeError):
                feats = {}
        return self._fallback_ms(op_type, feats), True

    def _with_step_reload(
        self,
        op_type: str,
        config: Mapping[str, Any],
        features: Mapping[str, float] | None,
        tree_ms: float,
    ) -> float:
        """``tree_ms`` plus the per-step weight reload of a recurrent layer beyond the cache."""
        if op_type not in _RECURRENT or self.cache_bytes is None:
            return tree_ms
        feats = features if features is not None else cost_features(op_type, config)
        step_bytes = streamed_step_bytes(op_type, config, feats, self.cache_bytes)
        if step_bytes <= 0.0:
            return tree_ms
        rate = self.step_reload_ms_per_param_byte.get(op_type)
        ms = with_step_reload(
            np.array([tree_ms]), np.array([step_bytes]), rate, self.dram_ms_per_param_byte
        )
        return float(ms[0])

    def _as_dense(self, op_type: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The dense config this op is priced as (:func:`dense_equivalent`), if a tree prices it."""
        return dense_equivalent(op_type, config) if "fully_connected" in self.trees else None

    def _fallback_ms(self, op_type: str, feats: Mapping[str, float]) -> float:
        moved = float(feats.get("input_bytes", 0.0)) + float(feats.get("output_bytes", 0.0))
        if op_type in VIEW_OPS:
            return _VIEW_COST_SHARE * self.ms_per_byte * moved
        compute = self.ms_per_flop * float(feats.get("flops", 0.0))
        memory = self.ms_per_byte * (moved + float(feats.get("param_bytes", 0.0)))
        return max(compute, memory)

    def streams_weights(self, ops: Sequence[OpInstance]) -> bool:
        """Whether the network's weights exceed the cache, so each op streams them from DRAM."""
        return self._streams(network_param_bytes(ops))

    def _streams(self, param_bytes: float) -> bool:
        """Whether a network of ``param_bytes`` weight bytes exceeds the fitted cache."""
        if self.cache_bytes is None or self.dram_ms_per_param_byte is None:
            return False
        return param_bytes > self.cache_bytes

    def chain_extra_ratio(self, network_param_bytes: float) -> float:
        """:attr:`chain_extra` at a network's weight bytes (0 without a curve)."""
        if self.chain_extra is None:
            return 0.0
        knots, ratios = self.chain_extra
        return float(np.interp(network_param_bytes, knots, ratios))

    def reload_ms(self, param_bytes: float) -> float:
        """Extra time (ms) of an op with ``param_bytes`` of weights in a network that exceeds the
        cache: 0 when its weights alone exceed the cache (its single-op time streams them too)."""
        if (
            self.reload_ms_per_param_byte is None
            or self.cache_bytes is None
            or param_bytes > self.cache_bytes
        ):
            return 0.0
        return self.reload_ms_per_param_byte * param_bytes

    def predict_ops(self, ops: Sequence[OpInstance]) -> list[OpPrediction]:
        """Per-op predictions (ms), with fused and aliased ops priced as the runtime runs them.

        In a network whose weights exceed the cache (:meth:`streams_weights`), an op other than
        a dense layer whose weights fit in the cache alone pays :attr:`reload_ms_per_param_byte`
        per weight byte on top of its single-op time (they were evicted since the last invoke),
        and every op takes at least the time to read its weights from DRAM (a dense layer's
        time there); both are noted on the op. In a network
        within the cache, each op with weights pays :attr:`chain_extra` at the network's weight
        bytes times its own single-op time (its weights and input were evicted to the L3 by the
        ops in between).
        """
        fused = fused_indices(ops)
        total_param_bytes = network_param_bytes(ops)
        streaming = self._streams(total_param_bytes)
        extra_ratio = 0.0 if streaming else self.chain_extra_ratio(total_param_bytes)
        out = []
        for op in ops:
            if op.index in fused:
                out.append(
                    OpPrediction(
                        op.index, op.op_type, dict(op.config), 0.0, False, note=fused[op.index]
                    )
                )
                continue
            config = op.config
            op_type = op.op_type
            ms, fallback = self.predict_op(op_type, config, op.features)
            note = ""
            dense = self._as_dense(op_type, config)
            if dense is not None:
                note = f"one output pixel: priced as a dense layer of {dense['cin']} inputs"
            param_bytes = float(op.features.get("param_bytes", 0.0))
            if not streaming:
                reload_ms = extra_ratio * ms if param_bytes > 0 else 0.0
            elif op_type == "fully_connected" or dense is not None:
                # A dense layer (or a conv run as one) reads each weight once per invoke: in a
                # network beyond the cache the DRAM floor below is its time; the reload rate,
                # fitted on chains of convolutions, would count the same bytes again.
                reload_ms = 0.0
            else:
                reload_ms = self.reload_ms(param_bytes)
            if reload_ms < NEGLIGIBLE_MS:
                reload_ms = 0.0
            else:
                ms += reload_ms
                reload_note = f"+{reload_ms:.3g} ms to reload weights evicted by the network"
                note = f"{note}; {reload_note}" if note else reload_note
            if streaming and self.dram_ms_per_param_byte is not None:
                floor_ms = self.dram_ms_per_param_byte * param_bytes
                if floor_ms > ms:
                    ms, note = floor_ms, "weights streamed from DRAM (network exceeds the cache)"
                    reload_ms = 0.0
            out.append(
                OpPrediction(
                    op.index, op_type, dict(config), ms, fallback or op.fallback, note, reload_ms
                )
            )
        return out

    def predict_network(self, ops: Sequence[OpInstance]) -> NetworkPrediction:
        """Whole-network time (ms): sum of :meth:`predict_ops` plus one invoke overhead."""
        predictions = self.predict_ops(ops)
        total = self.overhead_ms + sum(p.predicted_ms for p in predictions)
        return NetworkPrediction(total, self.overhead_ms, predictions)

    def rules(self, op_type: str) -> str:
        """Readable rules of ``op_type``'s tree (times in ms)."""
        tree = self.trees.get(op_type)
        if tree is None:
            return (
                f"no tree: fallback max({self.ms_per_flop:.3g} ms/FLOP * flops, "
                f"{self.ms_per_byte:.3g} ms/byte * bytes)"
            )
        rules = tree.rules(unit="ms")
        if op_type not in _RECURRENT or self.cache_bytes is None:
            return rules
        mb = self.cache_bytes / 1e6
        rate = self.step_reload_ms_per_param_byte.get(op_type)
        if rate is not None:
            reload = f"+= {rate * 1e9:.3g} ps * seq_len * param_bytes"
        elif self.dram_ms_per_param_byte is not None:
            reload = f">= {self.dram_ms_per_param_byte * 1e9:.3g} ps * seq_len * param_bytes"
        else:
            return rules
        return (
            f"{rules}\nif param_bytes > {mb:.3g} MB: t {reload}"
            " (weights reloaded from beyond the cache at every step)"
        )

    def network_rules(self) -> str:
        """Readable network-level terms: the invoke overhead, weight reload and the DRAM floor."""
        lines = [f"network: t = sum of op times + {self.overhead_ms:.3g} ms per invoke"]
        if self.chain_extra is not None:
            within = (
                f"param_bytes <= {self.cache_bytes / 1e6:.3g} MB"
                if self.cache_bytes is not None
                else "any param_bytes"
            )
            curve = ", ".join(
                f"{x / 1e6:.3g} MB: {100 * y:.3g}%"
                for x, y in zip(self.chain_extra[0], self.chain_extra[1], strict=True)
            )
            lines.append(
                f"if network {within}: each op with weights *= 1 + r(network param_bytes)"
                f" (weights and inputs evicted to the L3), r linear between {curve}"
            )
        if self.cache_bytes is not None:
            mb = self.cache_bytes / 1e6
            if self.reload_ms_per_param_byte is not None:
                lines.append(
                    f"if network param_bytes > {mb:.3g} MB: each op with param_bytes <= "
                    f"{mb:.3g} MB += {self.reload_ms_per_param_byte * 1e9:.3g} ps * param_bytes"
                    " (weights reloaded at every invoke)"
                )
            if self.dram_ms_per_param_byte is not None:
                lines.append(
                    f"if network param_bytes > {mb:.3g} MB: each op >= "
                    f"{self.dram_ms_per_param_byte * 1e9:.3g} ps * param_bytes (weights from DRAM)"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe export: variant, overhead, fallback rates, network-level terms and rules, and
        per op type tree + rules."""
        return {
            "format": 1,
            "variant": self.variant,
            "overhead_ms": self.overhead_ms,
            "ms_per_byte": self.ms_per_byte,
            "ms_per_flop": self.ms_per_flop,
            "cache_bytes": self.cache_bytes,
            "dram_ms_per_param_byte": self.dram_ms_per_param_byte,
            "reload_ms_per_param_byte": self.reload_ms_per_param_byte,
            "chain_extra": None
            if self.chain_extra is None
            else {"param_bytes": self.chain_extra[0], "ratio": self.chain_extra[1]},
            "step_reload_ms_per_param_byte": self.step_reload_ms_per_param_byte,
            "network_rules": self.network_rules(),
            "op_types": {
                op_type: {
                    "tree": tree.to_dict(),
                    "rules": self.rules(op_type),
                    "feature_names": feature_names(op_type, self.variant),
                }
                for op_type, tree in sorted(self.trees.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceTimeModel:
        """Rebuild a model from :meth:`to_dict` output."""
        trees = {
            op_type: TreeLinearRegressor.from_dict(entry["tree"])
            for op_type, entry in dict(data.get("op_types", {})).items()
        }
        return cls(
            trees,
            float(data["overhead_ms"]),
            str(data.get("variant", "tiled")),
            float(data.get("ms_per_byte", _DEFAULT_MS_PER_BYTE)),
            float(data.get("ms_per_flop", _DEFAULT_MS_PER_FLOP)),
            data.get("cache_bytes"),
            data.get("dram_ms_per_param_byte"),
            data.get("reload_ms_per_param_byte"),
            chain_extra_knots(data.get("chain_extra")),
            data.get("step_reload_ms_per_param_byte"),
        )


def network_param_bytes(ops: Sequence[OpInstance]) -> float:
    """Weight bytes of a network: the sum of its ops' ``param_bytes``."""
    return sum(float(op.features.get("param_bytes", 0.0)) for op in ops)


def chain_extra_knots(
    entry: Mapping[str, Any] | None,
) -> tuple[list[float], list[float]] | None:
    """The (param bytes, ratio) knots of a stored ``chain_extra`` entry (None: none).

    A model fitted before 2026-11-30 stored a curve per weight byte (``ms_per_param_byte``), not a
    ratio; it is not converted (None): such a version predicts without it until refitted.
    """
    if not entry or entry.get("param_bytes") is None or entry.get("ratio") is None:
        return None
    return list(entry["param_bytes"]), list(entry["ratio"])


def dense_equivalent(op_type: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The batch-1 ``fully_connected`` config that runs the same kernel as this op, or None.

    A convolution with one output pixel whose kernel covers its whole input (``kh == h`` and
    ``kw == w``, valid padding; or a 1x1 kernel on a 1x1 map) is a matrix-vector product of
    ``h * w * cin`` inputs: XNNPACK runs it as the batch-1 GEMM of a dense layer. On this host
    such a conv takes 0.94-1.00x the time of that dense layer over 8 pairs from 0.02 to 9.4 MB of
    weights (``python -m bench.composition --sections one_pixel``, 2026-11-29). Classifier heads
    written as 1x1 convs on a pooled map (MobileNet v1/v3) are this case; the conv samples hold
    few such configurations, so they are priced by, and fitted into, the dense tree
    (:func:`fit_device_model`).
    """
    if op_type != "conv2d":
        return None
    try:
        h, w = int(config["h"]), int(config["w"])
        kh, kw = int(config["kh"]), int(config["kw"])
        one_by_one = h == w == kh == kw == 1
        if not one_by_one and not (kh == h and kw == w and config.get("padding") == "valid"):
            return None
        return {
            "rows": 1,
            "cin": h * w * int(config["cin"]),
            "cout": int(config["cout"]),
            "activation": str(config.get("activation", "none")),
        }
    except (KeyError, TypeError, ValueError):
        return None


def as_dense_sample(sample: Mapping[str, Any]) -> Mapping[str, Any]:
    """``sample`` as a ``fully_connected`` sample where :func:`dense_equivalent` says it is one."""
    dense = dense_equivalent(str(sample.get("op_type")), sample.get("config", {}))
    if dense is None:
        return sample
    return {
        **sample,
        "op_type": "fully_connected",
        "config": dense,
        "features": cost_features("fully_connected", dense),
    }


def _fitted_columns(
    tree: TreeLinearRegressor,
    op_type: str,
    variant: str,
    config: Mapping[str, Any],
    features: Mapping[str, float] | None,
) -> np.ndarray:
    """The op's row in the columns ``tree`` was fitted on. A version fitted before this code added
    columns keeps predicting with the ones it knows (a column this code no longer computes raises
    KeyError, and the op falls back)."""
    row = op_feature_vector(op_type, config, features, variant)
    fitted = tree.feature_names
    current = feature_names(op_type, variant)
    if fitted is None or list(fitted) == current:
        return row
    position = {name: i for i, name in enumerate(current)}
    return row[[position[name] for name in fitted]]


def fused_indices(ops: Sequence[OpInstance]) -> dict[int, str]:
    """Ops the XNNPACK delegate fuses away, with the reason: index -> note."""
    producers: dict[int, OpInstance] = {}
    consumers: dict[int, list[OpInstance]] = {}
    for op in ops:
        for t in op.extra.get("outputs", []):
            producers[int(t)] = op
        for t in op.extra.get("inputs", []):
            consumers.setdefault(int(t), []).append(op)
    fused: dict[int, str] = {}
    for op in ops:
        outputs = [int(t) for t in op.extra.get("outputs", [])]
        inputs = [int(t) for t in op.extra.get("inputs", []) if int(t) >= 0]
        if op.op_type == "pad" and len(outputs) == 1:
            users = consumers.get(outputs[0], [])
            if users and all(
                u.op_type in _PAD_CONSUMERS and int(u.extra["inputs"][0]) == outputs[0]
                for u in users
            ):
                fused[op.index] = "pad folded into the next convolution/pooling"
        elif op.op_type in _CLAMP_OPS and inputs:
            producer = producers.get(inputs[0])
            if (
                producer is not None
                and producer.op_type in _CLAMP_PRODUCERS
                and len(consumers.get(inputs[0], [])) == 1
            ):
                fused[op.index] = f"clamp folded into {producer.op_type} #{producer.index}"
        elif op.op_type in VIEW_OPS:
            fused[op.index] = "view op: buffer aliased"
    return fused


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


def estimate_overhead_ms(samples: Sequence[Mapping[str, Any]]) -> float:
    """Median latency (ms) of the ``invoke_overhead`` samples; 0 when there are none."""
    values = [sample_latency_ms(s) for s in samples if s.get("op_type") == "invoke_overhead"]
    return float(np.median(values)) if values else 0.0


def _fallback_rates(
    by_type: Mapping[str, list[Mapping[str, Any]]], overhead_ms: float
) -> tuple[float, float]:
    per_byte = []
    for op_type in _BANDWIDTH_OPS:
        for s in by_type.get(op_type, []):
            f = _sample_features(s)
            moved = f.get("input_bytes", 0.0) + f.get("output_bytes", 0.0)
            if moved > 0:
                per_byte.append(max(sample_latency_ms(s) - overhead_ms, MIN_OP_MS) / moved)
    per_flop = []
    for s in by_type.get("conv2d", []):
        f = _sample_features(s)
        if f.get("flops", 0.0) > 0:
            per_flop.append(max(sample_latency_ms(s) - overhead_ms, MIN_OP_MS) / f["flops"])
    return (
        float(np.median(per_byte)) if per_byte else _DEFAULT_MS_PER_BYTE,
        float(np.median(per_flop)) if per_flop else _DEFAULT_MS_PER_FLOP,
    )


# Dense samples with fewer weight bytes than this are dominated by fixed costs, not by reading
# weights (64 KiB: 16 K weights), so they say nothing about cache or DRAM bandwidth.
_MIN_STREAM_PARAM_BYTES = 64 * 1024
# The DRAM regime needs this many dense samples above the cache size to be trusted.
_MIN_STREAM_SAMPLES = 5
# A knee counts only where the time per weight byte at least doubles past it (cache vs DRAM).
_MIN_STREAM_SLOWDOWN = 1.5


def estimate_weight_streaming(
    samples: Sequence[Mapping[str, Any]], overhead_ms: float = 0.0
) -> tuple[float | None, float | None]:
    """Cache size (bytes) and DRAM time per weight byte (ms), from batch-1 dense samples.

    A batch-1 FULLY_CONNECTED reads each weight once, so its time per weight byte is the
    bandwidth of wherever the weights live: flat while they fit in the cache, several times
    higher past it. The knee is the weight size that best splits ``log(ms per byte)`` into two
    constant segments; the DRAM rate is the median rate above it. Returns ``(None, None)`` when
    there are too few large dense samples or no clear knee.
    """
    points = []
    for s in samples:
        if s.get("op_type") != "fully_connected" or int(s.get("config", {}).get("rows", 0)) != 1:
            continue
        param_bytes = float(_sample_features(s).get("param_bytes", 0.0))
        if param_bytes >= _MIN_STREAM_PARAM_BYTES:
            op_ms = max(sample_latency_ms(s) - overhead_ms, MIN_OP_MS)
            points.append((param_bytes, np.log(op_ms / param_bytes)))
    if len(points) < 2 * _MIN_STREAM_SAMPLES:
        return None, None
    points.sort()
    sizes = np.array([p[0] for p in points])
    rates = np.array([p[1] for p in points])
    best: tuple[float, int] | None = None
    for k in range(_MIN_STREAM_SAMPLES, len(points) - _MIN_STREAM_SAMPLES + 1):
        sse = float(np.var(rates[:k]) * k + np.var(rates[k:]) * (len(points) - k))
        if best is None or sse < best[0]:
            best = (sse, k)
    assert best is not None
    k = best[1]
    slowdown = float(np.exp(np.median(rates[k:]) - np.median(rates[:k])))
    if slowdown < _MIN_STREAM_SLOWDOWN:
        return None, None
    cache_bytes = float(np.sqrt(sizes[k - 1] * sizes[k]))  # between the two regimes
    return cache_bytes, float(np.exp(np.median(rates[k:])))


# Fewest conv_chain probes beyond the cache that a reload rate is fitted from (one number, by
# least squares). It was 5; on the second development VM (cache knee 15.6-23.7 MB) 7 of 9
# campaigns had 2-4 probes beyond the knee and no rate, and their 21 MB networks lost the term
# (efficientnetb0_128 -11.9% on 2026-11-30 16:33). Fitted from 3-4 probes the rate came out 15.5-
# 21.1 ps per byte, where the campaigns with 5-6 had 15.8 and 24.6; refitting all nine against
# their eleven network measurements, 3 moved the networks' mean MAPE 3.22 -> 3.14% and made no
# measurement's share within 5% or 10% worse.
MIN_RELOAD_PROBES = 3


def chain_reload_bytes(param_bytes: Sequence[float], cache_bytes: float) -> float:
    """Weight bytes reloaded at every invoke of ops with ``param_bytes`` run in turn: those of the
    ops whose weights fit in the cache alone, once all of them together exceed it (0 before)."""
    if sum(param_bytes) <= cache_bytes:
        return 0.0
    return float(sum(p for p in param_bytes if p <= cache_bytes))


@dataclass
class ChainProbe:
    """A ``conv_chain`` probe: its measured time (ms), the sum of its layers' single-op times
    with one invoke overhead (ms), and each layer's weight bytes."""

    measured_ms: float
    layers_ms: float
    param_bytes: list[float]
    with_singles: bool

    @property
    def total_param_bytes(self) -> float:
        """Weight bytes of the whole chain."""
        return float(sum(self.param_bytes))


def chain_probe_times(
    chain_samples: Sequence[Mapping[str, Any]],
    model: DeviceTimeModel,
    conv_samples: Sequence[Mapping[str, Any]] = (),
) -> list[ChainProbe]:
    """Each probe's measured time against its layers timed alone: measured (``conv_samples`` with
    the same configuration, which the planner adds beside each probe) where every layer was, else
    ``model``'s predictions of them."""
    singles: dict[tuple[tuple[str, Any], ...], list[float]] = {}
    for c in conv_samples:
        singles.setdefault(config_key(c.get("config", {})), []).append(sample_latency_ms(c))
    out = []
    for s in chain_samples:
        layers = chain_layers(s["config"])
        keys = [config_key(layer) for layer in layers]
        has_singles = all(k in singles for k in keys)
        chain_ms = model.overhead_ms
        params = []
        for layer, key in zip(layers, keys, strict=True):
            feats = cost_features("conv2d", layer)
            if has_singles:  # each single's median includes one invoke overhead
                chain_ms += float(np.median(singles[key])) - model.overhead_ms
            else:
                chain_ms += model.predict_op("conv2d", layer, feats)[0]
            params.append(float(feats["param_bytes"]))
        out.append(ChainProbe(sample_latency_ms(s), chain_ms, params, has_singles))
    return out


# Fewest conv_chain probes within the cache that the network extra curve is fitted from (a third
# of the ~31 a default campaign drew before 2026-11-30's doubling: fewer leave whole stretches of
# the curve to one probe).
MIN_CHAIN_EXTRA_PROBES = 10
# Linear segments of the network extra curve, their knots at the probes' weight-byte quantiles:
# each slope rests on a third of the probes within the cache (~19 of the 56 of the 2026-11-30
# 17:42 campaign; 7-9 of 20-27 before the probes were doubled). Refitting eight campaigns of the
# second development VM against their ten network measurements, 2 to 5 segments all scored alike
# (mean share within 10%: 96.3-98.1%) and all above the isotonic curve that came before (94.8%,
# down to 78% where one probe set a level).
CHAIN_EXTRA_SEGMENTS = 3
# Most reweighting passes of the curve (iteratively reweighted least squares with
# :func:`robust_weights`): the first pass, bent by an outlier, can also set aside its honest
# neighbours, and the next ones take them back; it stops earlier once the weights stay put.
CHAIN_EXTRA_ROBUST_PASSES = 5


def monotone_segments(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, segments: int
) -> tuple[list[float], list[float]]:
    """A non-decreasing, non-negative piecewise-linear fit of ``y`` over ``x``: knots at the
    quantiles 0, 1/segments, ..., 1 of ``x``; levels that minimise ``sum(weights * (y - f(x))**2)``.

    The curve is ``b + sum_k c_k * clip((x - t_k) / (t_{k+1} - t_k), 0, 1)`` with ``b, c_k >= 0``
    (non-negative least squares, :func:`scipy.optimize.nnls`), so it rises only where a whole
    segment's points say so. Written here because scikit-learn's monotone fitter (isotonic
    regression) has a free level per block of points, and a block can be one point. Returns the
    knots and the curve's levels at them (equal knots merged).
    """
    knots = np.unique(np.quantile(x, np.linspace(0.0, 1.0, segments + 1)))
    columns = [np.ones_like(x)]
    for low, high in itertools.pairwise(knots):
        columns.append(np.clip((x - low) / (high - low), 0.0, 1.0))
    root_w = np.sqrt(weights)
    coef, _ = nnls(np.stack(columns, axis=1) * root_w[:, None], y * root_w)
    levels = np.cumsum(coef)
    if len(knots) == 1:  # every x equal: one level, one knot
        return [float(knots[0])], [float(levels[0])]
    return [float(k) for k in knots], [float(v) for v in levels]


def estimate_chain_extra(
    chain_samples: Sequence[Mapping[str, Any]],
    model: DeviceTimeModel,
    conv_samples: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """What a network within the cache pays over its ops' single-op times, as a fraction of
    them, as a non-decreasing function of its weight bytes, from ``conv_chain`` probes.

    Timed alone, an op finds its weights (and its input) where its previous invoke left them, in
    the core's own L2; in a network the other ops evicted them to the shared L3 in between. A
    chain of 1x1 convolutions timed whole against its layers timed alone shows what that costs:
    nothing for 1 MB of weights, 3-10% at 5-13 MB, 13-27% at 17-21 MB on the development VM (32 MB
    L3). Each probe within ``model.cache_bytes`` (all probes when no cache size was found) gives
    ``(measured - layers) / layers``; :func:`monotone_segments` over the probes' weight bytes
    (:data:`CHAIN_EXTRA_SEGMENTS` segments), weighted ``(layers / measured)**2`` so that it
    minimises the probes' squared relative error, gives a first curve; each further fit (up to
    :data:`CHAIN_EXTRA_ROBUST_PASSES`) weights each probe also by :func:`robust_weights` of its
    residual on the one before, so that a disturbed probe counts for little or nothing. On the
    third development VM (2026-12-01) one probe at 1.29 MB ran 82% over its layers (the others
    within the cache: -7% to +10%) and lifted the curve to +7.4% over 1.2-2.2 MB, where the
    sensor convnets ran 0.7-1.6% under their layers timed alone.

    Not isotonic regression (the form until 2026-11-30 16:30): on this shared-L3 host a probe's
    extra at 12-15 MB moved from 6% to 41% with the neighbours' use of the L3, and an isotonic
    curve gave its top level to whichever probe came last: +41% from one probe at 13.3 MB in the
    2026-11-30 14:32 campaign, which put three 14 MB networks 13-26% over.
    A ratio, not a time per weight byte (the form before 2026-11-30): what a probe pays grows
    with its compute time as much as with its weights (probes of 1-4 MB: those of 0.7-3.1 ms paid
    1-47 ps per byte, those under 0.25 ms none), and leave-one-out on the probes of six campaigns
    scored the ratio better than the per-byte form in all six (docs/accuracy_history.md).
    Returns ``{"param_bytes", "ratio"}`` (the knots; None with fewer than
    :data:`MIN_CHAIN_EXTRA_PROBES` probes), ``"probes"``, ``"probes_set_aside"`` (those the
    robust passes left with no weight), and the probes' in-sample MAPE (fraction, all probes)
    without and with the curve.
    """
    return chain_extra_from_probes(chain_probe_times(chain_samples, model, conv_samples), model)


def chain_extra_from_probes(
    chain_probes: Sequence[ChainProbe], model: DeviceTimeModel, *, robust: bool = True
) -> dict[str, Any]:
    """:func:`estimate_chain_extra` on probes already timed against their layers (``robust``
    False: the first curve, without the robust pass)."""
    out: dict[str, Any] = {
        "param_bytes": None,
        "ratio": None,
        "probes": 0,
        "probes_set_aside": 0,
        "chain_mape_without": None,
        "chain_mape_with": None,
    }
    probes = [
        p
        for p in chain_probes
        if model.cache_bytes is None or p.total_param_bytes <= model.cache_bytes
    ]
    out["probes"] = len(probes)
    if len(probes) < MIN_CHAIN_EXTRA_PROBES:
        return out
    params = np.array([p.total_param_bytes for p in probes])
    measured = np.array([p.measured_ms for p in probes])
    layers = np.array([p.layers_ms for p in probes])
    excess = (measured - layers) / layers
    weights = (layers / measured) ** 2
    knots, ratios = monotone_segments(params, excess, weights, CHAIN_EXTRA_SEGMENTS)
    # Reweighted as the trees are (robust_weights), until the weights stay put: a probe far off
    # the curve (a disturbed measurement) ends with little or no weight.
    factors = np.ones_like(excess)
    for _ in range(CHAIN_EXTRA_ROBUST_PASSES if robust else 0):
        fitted = layers * (1.0 + np.interp(params, knots, ratios))
        previous, factors = factors, robust_weights(fitted / measured - 1.0)
        knots, ratios = monotone_segments(params, excess, weights * factors, CHAIN_EXTRA_SEGMENTS)
        if np.allclose(factors, previous, atol=1e-3):
            break
    out["probes_set_aside"] = int(np.sum(factors == 0.0))
    out["param_bytes"], out["ratio"] = knots, ratios
    with_extra = layers * (1.0 + np.interp(params, knots, ratios))
    out["chain_mape_without"] = float(np.mean(np.abs(layers / measured - 1)))
    out["chain_mape_with"] = float(np.mean(np.abs(with_extra / measured - 1)))
    return out


def estimate_reload_rate(
    chain_samples: Sequence[Mapping[str, Any]],
    model: DeviceTimeModel,
    conv_samples: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Reload time per weight byte (ms) from ``conv_chain`` probes, and how well it explains them.

    Timed alone, an op finds its weights in the cache that its previous invoke filled; inside a
    network whose weights exceed the cache they were evicted by the other ops in between. A probe
    is a chain of 1x1 convolutions timed whole: its measured time minus the invoke overhead and
    its convolutions' single-op predictions is what reloading cost. The rate is the one number
    per reloaded byte (:func:`chain_reload_bytes`) that minimises the probes' squared relative
    error beyond ``model.cache_bytes``, floored at 0; None with fewer than
    :data:`MIN_RELOAD_PROBES` of them or no cache size. ``chain_mape_without`` and
    ``chain_mape_with`` are those probes' MAPE (fraction) predicted without and with the rate;
    ``chain_mape_in_cache`` that of the probes that fit in the cache (no reload: a check of
    summing single-op predictions).

    Where every layer of a probe was also measured alone (``conv_samples``, conv2d samples with
    the same configuration: the planner adds them beside each probe), the probe's sum is those
    measurements instead of the trees' predictions (``probes_with_singles`` counts them): the
    rate is then what the chain adds over its own layers, not also the trees' error on them.
    Re-measuring the 31 probes of the 2026-11-29 09:40 campaign with their layers: 31.3 ps per
    byte from the measured layers, 54.8 and 26.8 from two trees' predictions of them (one of them
    under-predicted a 26.8 MB chain's convs 3x).
    """
    return reload_rate_from_probes(chain_probe_times(chain_samples, model, conv_samples), model)


def reload_rate_from_probes(probes: Sequence[ChainProbe], model: DeviceTimeModel) -> dict[str, Any]:
    """:func:`estimate_reload_rate` on probes already timed against their layers."""
    out: dict[str, Any] = {
        "ms_per_param_byte": None,
        "probes": len(probes),
        "probes_with_singles": 0,
        "probes_beyond_cache": 0,
        "chain_mape_without": None,
        "chain_mape_with": None,
        "chain_mape_in_cache": None,
    }
    if model.cache_bytes is None or not probes:
        return out
    out["probes_with_singles"] = sum(p.with_singles for p in probes)
    measured = np.array([p.measured_ms for p in probes])
    predicted = np.array([p.layers_ms for p in probes])
    reload = np.array([chain_reload_bytes(p.param_bytes, model.cache_bytes) for p in probes])
    beyond = reload > 0
    out["probes_beyond_cache"] = int(beyond.sum())
    if (~beyond).any():
        out["chain_mape_in_cache"] = float(
            np.mean(np.abs(predicted[~beyond] / measured[~beyond] - 1))
        )
    if beyond.sum() < MIN_RELOAD_PROBES:
        return out
    # Least squares on relative error, the criterion the trees are fitted on: minimise
    # sum((predicted + rate * reload) / measured - 1)^2 over the probes beyond the cache.
    x = reload[beyond] / measured[beyond]
    rate = max(float(x @ (1.0 - predicted[beyond] / measured[beyond]) / (x @ x)), 0.0)
    out["ms_per_param_byte"] = rate
    out["chain_mape_without"] = float(np.mean(np.abs(predicted[beyond] / measured[beyond] - 1)))
    with_reload = predicted[beyond] + rate * reload[beyond]
    out["chain_mape_with"] = float(np.mean(np.abs(with_reload / measured[beyond] - 1)))
    return out


# Tukey bisquare constant (95% efficiency under Gaussian noise) and the MAD-to-sigma factor.
_BISQUARE_C = 4.685
_MAD_TO_SIGMA = 1.4826
# Reweighting passes of the robust fit (each refits the tree once).
ROBUST_PASSES = 1


def robust_weights(relative_residuals: np.ndarray) -> np.ndarray:
    """Tukey bisquare factors in [0, 1] for relative residuals (prediction / measured - 1).

    A sample measured while the host was busy runs uniformly slower (2-4x on this host: the
    56x56x64 conv sweep has cout=51 at 15.9 ms between cout=50 and 53 at 7.9 and 8.1 ms), and its
    p10-p90 spread need not show it. Samples far outside the robust scale (MAD) of the residuals
    get little or no weight, so one contended measurement cannot bend a leaf.
    """
    r = np.asarray(relative_residuals, dtype=float)
    scale = _MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r))))
    if not np.isfinite(scale) or scale <= 0:
        return np.ones_like(r)
    u = r / (_BISQUARE_C * scale)
    factors: np.ndarray = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
    return factors


def fit_tree(
    op_type: str,
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    *,
    cv: int = 5,
    seed: int = 0,
    variant: str = "tiled",
    overhead_ms: float = 0.0,
    robust_passes: int = ROBUST_PASSES,
) -> TreeLinearRegressor:
    """The tree of ``op_type`` fitted on op times ``y`` (ms), robustly reweighted.

    Weights are :func:`fit_weights` (relative error of the measured latency) times
    :func:`robust_weights` of the previous pass's in-sample residuals. The paper variant is
    fitted as the paper did, without reweighting.
    """
    if variant == "paper":
        robust_passes = 0
    weights = fit_weights(y, overhead_ms)
    reg = make_regressor(op_type, names, cv=cv, seed=seed, variant=variant)
    reg.fit(X, y, sample_weight=weights)
    measured = y + overhead_ms
    for _ in range(robust_passes):
        resid = (np.maximum(reg.predict(X), 0.0) + overhead_ms) / measured - 1.0
        factors = robust_weights(resid)
        if np.count_nonzero(factors) < len(y) // 2:
            break
        reg = make_regressor(op_type, names, cv=cv, seed=seed, variant=variant)
        reg.fit(X, y, sample_weight=weights * factors)
    return reg


def fit_op(
    op_type: str,
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    step_bytes: np.ndarray | None = None,
    *,
    cv: int = 5,
    seed: int = 0,
    variant: str = "tiled",
    overhead_ms: float = 0.0,
) -> tuple[TreeLinearRegressor, float | None]:
    """The tree of ``op_type`` and, for a recurrent one, its per-step reload rate.

    Rows with :func:`streamed_step_bytes` (``step_bytes`` > 0) are left out of the tree, which
    they would bend with a cost its columns cannot express, unless too few rows would remain;
    the rate is fitted on them over that tree (:func:`step_reload_rate`).
    """
    streamed = np.zeros(len(y), dtype=bool) if step_bytes is None else step_bytes > 0
    fit_rows = ~streamed
    if np.count_nonzero(fit_rows) < MIN_SAMPLES_FOR_TREE:
        fit_rows = np.ones(len(y), dtype=bool)
    tree = fit_tree(
        op_type,
        X[fit_rows],
        y[fit_rows],
        names,
        cv=cv,
        seed=seed,
        variant=variant,
        overhead_ms=overhead_ms,
    )
    if step_bytes is None or not streamed.any():
        return tree, None
    rate = step_reload_rate(tree.predict(X[streamed]), y[streamed], step_bytes[streamed])
    return tree, rate


def predict_op_rows(
    tree: TreeLinearRegressor,
    rate: float | None,
    X: np.ndarray,
    step_bytes: np.ndarray | None = None,
    dram_ms_per_param_byte: float | None = None,
) -> np.ndarray:
    """Op times (ms) of design rows as :class:`DeviceTimeModel` prices them: the tree, plus the
    per-step reload (:func:`with_step_reload`) on rows with streamed step bytes."""
    pred: np.ndarray = np.maximum(tree.predict(X), 0.0)
    if step_bytes is None:
        return pred
    streamed = step_bytes > 0
    if streamed.any():
        pred[streamed] = with_step_reload(
            pred[streamed], step_bytes[streamed], rate, dram_ms_per_param_byte
        )
    return pred


def _cv_predictions(
    op_type: str,
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    cv: int,
    seed: int,
    variant: str,
    overhead_ms: float = 0.0,
    step_bytes: np.ndarray | None = None,
    dram_ms_per_param_byte: float | None = None,
) -> np.ndarray:
    """Out-of-fold predictions of op times (ms) by K-fold cross-validation (:func:`fit_op` on
    each fold's training rows, :func:`predict_op_rows` on its test rows)."""
    folds = min(cv, len(y))
    pred = np.zeros(len(y))
    splits = (
        [(np.arange(len(y)), np.arange(len(y)))]
        if folds < 2
        else KFold(n_splits=folds, shuffle=True, random_state=seed).split(X)
    )
    for train, test in splits:
        train_bytes = None if step_bytes is None else step_bytes[train]
        reg, rate = fit_op(
            op_type,
            X[train],
            y[train],
            names,
            train_bytes,
            cv=cv if folds >= 2 else 0,
            seed=seed,
            variant=variant,
            overhead_ms=overhead_ms,
        )
        test_bytes = None if step_bytes is None else step_bytes[test]
        pred[test] = predict_op_rows(reg, rate, X[test], test_bytes, dram_ms_per_param_byte)
    return pred


# The canary ratio above which a sample counts as disturbed when the fitter re-judges it: the
# agent's default ``max_canary_ratio`` (fdiot/settings.py: 1.1 of the 25% quantile of the canaries
# since 2026-12-01; before, 1.2 of the lowest, which split the fast state of the second
# development VM, <= 1.15x, from its slow ones, 1.25-2.4x).
DEFAULT_MAX_CANARY_RATIO = 1.1


def fit_device_model(
    samples: Sequence[Mapping[str, Any]],
    *,
    variant: str = "tiled",
    cv: int = 5,
    seed: int = 0,
    cv_repeats: int = 1,
    max_canary_ratio: float | None = DEFAULT_MAX_CANARY_RATIO,
    keep_predictions: bool = False,
    speed_normalise: bool = True,
) -> tuple[DeviceTimeModel, dict[str, Any]]:
    """Fit one tree per op type on Sample dicts and cross-validate it.

    Each op sample's ``latency.median_ms`` includes one invoke overhead (estimated from the
    ``invoke_overhead`` samples), which is subtracted before fitting. Returns the model and
    ``{"per_op_type": {op_type: {"cv_mape", "cv_mape_op", "within_10pct", "samples",
    "inlier_share", "cv_mape_inliers"}},
    "overhead_ms", "variant", "samples", "disturbed_samples"}``: samples the agent flagged as
    measured on a disturbed host, or timed under a canary above ``max_canary_ratio`` times the
    quietest of all, are left out (:func:`quiet_samples`), counted per op type. A configuration
    measured more than once counts once, with its fastest label (:func:`fastest_per_config`;
    ``"retimed"``); ``"samples"`` counts what is left.
    Convolutions that run as a dense layer (:func:`dense_equivalent`) are fitted, cross-validated
    and counted with ``fully_connected`` (``convs_fitted_as_dense`` says how many).
    ``cv_mape`` is the mean absolute percentage error as a fraction (0.05 = 5%) of each sample's
    measured latency against the out-of-fold op prediction plus the overhead; ``cv_mape_op`` is the
    same on the op time alone; ``cv_mape_inliers`` is ``cv_mape`` over the ``inlier_share`` of
    samples that the final robust fit keeps (:func:`robust_weights` > 0), i.e. without the
    measurements it judges contended.

    ``cv_repeats`` > 1 repeats the K-fold split with seeds ``seed .. seed + cv_repeats - 1`` and
    averages: one split of 280 samples moved the depthwise CV MAPE between 7.7% and 9.6% with the
    seed (2500 stored samples), more than most model changes it is meant to judge. The per-split
    figures are kept as ``cv_mape_splits``; ``within_10pct`` and ``cv_mape_inliers`` use the first.
    ``keep_predictions`` also keeps the first split's out-of-fold prediction of every sample, as
    ``cv_predictions``: ``[{"config", "measured_ms", "predicted_ms"}]`` (both with the overhead;
    ``config`` as fitted, i.e. the dense one of a conv fitted as dense).

    With ``speed_normalise`` the labels are carried to the reference speed (:func:`quiet_samples`),
    so the model predicts the device at the canary level ``"reference_canary_ms"``; ``"speed"``
    says how many samples were timed in a state more than 5% off it and the range of the states.
    """
    _check_variant(variant)
    reference_canary_ms = canary_floor_ms(samples)
    samples, disturbed, retimed = fitting_samples(samples, max_canary_ratio, speed_normalise)
    speeds = [float((s.get("environment") or {}).get("speed", 1.0)) for s in samples]
    overhead = estimate_overhead_ms(samples)
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for s in samples:
        by_type.setdefault(str(s["op_type"]), []).append(s)
    ms_per_byte, ms_per_flop = _fallback_rates(by_type, overhead)
    # Trees are fitted per runtime kernel: one-pixel convs are dense layers (dense_equivalent).
    fit_groups: dict[str, list[Mapping[str, Any]]] = {}
    for s in samples:
        moved = as_dense_sample(s)
        fit_groups.setdefault(str(moved["op_type"]), []).append(moved)
    convs_as_dense = len(by_type.get("conv2d", [])) - len(fit_groups.get("conv2d", []))
    cache_bytes, dram_rate = estimate_weight_streaming(samples, overhead)
    trees: dict[str, TreeLinearRegressor] = {}
    step_rates: dict[str, float] = {}
    per_op: dict[str, dict[str, Any]] = {}
    for op_type in sorted(fit_groups):
        own = fit_groups[op_type]
        if op_type in PROBE_OP_TYPES or op_type not in OP_TYPES:
            continue
        if len(own) < MIN_SAMPLES_FOR_TREE:
            per_op[op_type] = {
                "cv_mape": None,
                "cv_mape_op": None,
                "within_10pct": None,
                "samples": len(own),
            }
            continue
        X, y, names = build_design(op_type, own, overhead, variant)
        measured = np.array([sample_latency_ms(s) for s in own])
        step_bytes = (
            np.array(
                [
                    streamed_step_bytes(
                        op_type, s.get("config", {}), _sample_features(s), cache_bytes
                    )
                    for s in own
                ]
            )
            if op_type in _RECURRENT and cache_bytes is not None
            else None
        )
        splits = [
            _cv_predictions(
                op_type, X, y, names, cv, seed + r, variant, overhead, step_bytes, dram_rate
            )
            for r in range(max(cv_repeats, 1))
        ]
        rels = [np.abs(np.maximum(p, 0.0) + overhead - measured) / measured for p in splits]
        rel = rels[0]
        per_op[op_type] = {
            "cv_mape": float(np.mean([np.mean(r) for r in rels])),
            "cv_mape_splits": [float(np.mean(r)) for r in rels],
            "cv_mape_op": float(np.mean([np.mean(np.abs(p - y) / y) for p in splits])),
            "within_10pct": float(np.mean(rel <= 0.10)),
            "samples": len(own),
        }
        if keep_predictions:
            per_op[op_type]["cv_predictions"] = [
                {"config": dict(s.get("config", {})), "measured_ms": float(m), "predicted_ms": p}
                for s, m, p in zip(
                    own, measured, (np.maximum(splits[0], 0.0) + overhead).tolist(), strict=True
                )
            ]
        tree, step_rate = fit_op(
            op_type,
            X,
            y,
            names,
            step_bytes,
            cv=cv,
            seed=seed,
            variant=variant,
            overhead_ms=overhead,
        )
        trees[op_type] = tree
        if op_type in _RECURRENT:
            streamed = 0 if step_bytes is None else int(np.count_nonzero(step_bytes))
            per_op[op_type]["streamed_samples"] = streamed
        if step_rate is not None:
            step_rates[op_type] = step_rate
        # Samples the robust fit keeps (bisquare weight > 0): the error on them says how well
        # the model fits quiet measurements, apart from the contended ones it rejects.
        fitted = predict_op_rows(tree, step_rate, X, step_bytes, dram_rate)
        resid = (fitted + overhead) / measured - 1.0
        inlier = robust_weights(resid) > 0
        per_op[op_type]["inlier_share"] = float(np.mean(inlier))
        per_op[op_type]["cv_mape_inliers"] = float(np.mean(rel[inlier])) if inlier.any() else None
    model = DeviceTimeModel(
        trees,
        overhead,
        variant,
        ms_per_byte,
        ms_per_flop,
        cache_bytes,
        dram_rate,
        step_reload_ms_per_param_byte=step_rates,
    )
    # Each probe against its layers, once for both network terms.
    probes = chain_probe_times(by_type.get("conv_chain", []), model, by_type.get("conv2d", []))
    reload = reload_rate_from_probes(probes, model)
    model.reload_ms_per_param_byte = reload["ms_per_param_byte"]
    chain_extra = chain_extra_from_probes(probes, model)
    model.chain_extra = chain_extra_knots(chain_extra)
    metrics = {
        "per_op_type": per_op,
        "overhead_ms": overhead,
        "cache_bytes": cache_bytes,
        "dram_ms_per_param_byte": dram_rate,
        "weight_reload": reload,
        "chain_extra": chain_extra,
        "convs_fitted_as_dense": convs_as_dense,
        "step_reload_ms_per_param_byte": step_rates,
        "variant": variant,
        "reference_canary_ms": reference_canary_ms,
        "speed": {
            "normalised": speed_normalise,
            "samples_off_5pct": sum(abs(x - 1.0) > 0.05 for x in speeds),
            "min": min(speeds, default=1.0),
            "max": max(speeds, default=1.0),
        },
        "samples": len(samples),
        "disturbed_samples": disturbed,
        "retimed": retimed,
    }
    return model, metrics


def is_quiet(sample: Mapping[str, Any], canary_limit_ms: float | None = None) -> bool:
    """False for a sample the agent flagged as measured on a disturbed host (its canary ran slow
    or another process shared its core: ``environment.quiet``), or whose canary (``canary_ms``)
    is above ``canary_limit_ms``; samples without the flag or the canary count as quiet."""
    environment = sample.get("environment") or {}
    if environment.get("quiet", True) is False:
        return False
    canary_ms = environment.get("canary_ms")
    return canary_limit_ms is None or canary_ms is None or float(canary_ms) <= canary_limit_ms


# Op types measured again and again with one configuration on purpose: their samples are a
# distribution (the overhead is their median), not one label timed twice.
REPEATED_OP_TYPES: frozenset[str] = frozenset({"invoke_overhead"})


def fitting_samples(
    samples: Sequence[Mapping[str, Any]],
    max_canary_ratio: float | None = DEFAULT_MAX_CANARY_RATIO,
    speed_normalise: bool = True,
) -> tuple[list[Mapping[str, Any]], dict[str, int], dict[str, dict[str, float]]]:
    """The samples a fit uses: the disturbed ones left out and the others at the reference speed
    (:func:`quiet_samples`), then a configuration measured again counted once, with its fastest
    label (:func:`fastest_per_config`). Returns them, the disturbed count per op type and the
    retimed summary."""
    kept, disturbed = quiet_samples(samples, max_canary_ratio, speed_normalise)
    kept, retimed = fastest_per_config(kept)
    return kept, disturbed, retimed


def fastest_per_config(
    samples: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], dict[str, dict[str, float]]]:
    """One sample per (op type, configuration): the fastest of its measurements.

    The adaptive round measures again the probes and the samples that ran slowest against their
    cross-validated prediction (``worker.fitting.plan_adaptive_round``), minutes after the first
    time. A busy neighbour on the host only adds time, so the fastest of the two is the label,
    as a network's measured latency is its fastest round (``bench/accuracy.py``): a label that
    reproduces stays as it was, one timed in a busy stretch gives way. Samples keep their order
    of first measurement; :data:`REPEATED_OP_TYPES` are left as they are.

    Returns the samples and, per op type with a configuration measured more than once,
    ``{"configs": how many, "faster_5pct": how many came out more than 5% faster than their
    first measurement, "median_change_pct": the median change of the label, fastest against
    first, in percent}``.
    """
    # Keyed by (op type, configuration); a repeated op type's sample by its own position.
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for i, s in enumerate(samples):
        op_type = str(s["op_type"])
        key = (
            (op_type, i)
            if op_type in REPEATED_OP_TYPES
            else (op_type, config_key(s.get("config", {})))
        )
        groups.setdefault(key, []).append(s)
    out = [min(group, key=sample_latency_ms) for group in groups.values()]
    changes: dict[str, list[float]] = {}
    for (op_type, _), group in groups.items():
        if len(group) > 1:
            fastest_ms = min(sample_latency_ms(s) for s in group)
            changes.setdefault(op_type, []).append(fastest_ms / sample_latency_ms(group[0]) - 1.0)
    retimed = {
        op_type: {
            "configs": len(c),
            "faster_5pct": sum(x < -0.05 for x in c),
            "median_change_pct": 100.0 * float(np.median(c)),
        }
        for op_type, c in sorted(changes.items())
    }
    return out, retimed


# The quiet-host reference is this quantile of the canaries timed, for the agent (over the
# canaries it has seen) and the fitter (over the campaign's), not the lowest one: on the third
# development VM (2026-12-01 01:52) one canary of 0.108 ms among 457 samples' (5th percentile
# 0.127 ms) became the agent's reference, every later attempt then ran at 1.17-1.22x of it and
# most were waited on, timed again and flagged disturbed; as the fitter's floor it would have
# left most samples out. It was the 5% quantile from then until 2026-12-01 04:05: at 03:45 the
# same VM ran 3-4 minutes in a faster state (canary 0.105-0.117 ms against 0.132 before and
# after), the 5% quantile of the agent's last 1000 canaries followed it to 0.109 ms, and every
# attempt after it ran at 1.2-1.4x of that: 6 samples a minute instead of ~100, all flagged
# disturbed, and the fitter's floor (0.119 ms) left 1377 of the 1506 samples out. Its 25%
# quantile, 0.132 ms, leaves 114 out (conv2d CV 7.70% on 292); on the steady 3329-sample campaign
# of 02:21 the two floors are 0.1317 and 0.1319 ms and the fit is the same. A phase of another
# speed moves the reference only once it is a quarter of what the quantile is taken over.
CANARY_REFERENCE_QUANTILE = 0.25


def canary_reference_ms(canaries_ms: Iterable[float]) -> float | None:
    """The quiet-host canary (ms): :data:`CANARY_REFERENCE_QUANTILE` of ``canaries_ms`` (None
    when empty). The agent's reference (``agent.runner``) and the fitter's floor."""
    values = np.fromiter(canaries_ms, float)
    return float(np.quantile(values, CANARY_REFERENCE_QUANTILE)) if values.size else None


def canary_floor_ms(samples: Sequence[Mapping[str, Any]]) -> float | None:
    """The device's reference canary (ms): :func:`canary_reference_ms` of the canaries its
    samples stored."""
    return canary_reference_ms(
        float(c)
        for s in samples
        if (c := (s.get("environment") or {}).get("canary_ms")) is not None and float(c) > 0
    )


# Speed states. A host can run slower or faster as a whole for minutes to hours with nothing else
# of ours running (a lower clock): on the fourth development VM (AMD EPYC family 23 model 1,
# 2026-12-01) the canary went from 0.43 ms to 0.50 ms at 11:22 and stayed there for hours;
# re-measuring 93 stored fast-state samples of 7 op types in the slow state
# (bench/results/label_noise_vm4_slow.json) moved every op type's labels by +15.1% to +17.5%
# while the canary moved by +13.8% to +18.7%, and on the third VM the labels of a 21:35 -> 22:40
# shift moved +32.0% against the canary's +32.5% (docs/accuracy_history.md). A label timed in such
# a state is carried to the device's reference speed (the campaign's canary floor) by the ratio
# of the two canary levels. The level around a sample is the median canary of the samples
# measured around it, not the sample's own canary: one canary (20 invokes) is noisier than the
# state, and a short spike is not a state (on the second VM, samples whose own canary said 1.12x
# slow had run 2.7% slow, not 12%: bench/results/canary.json). SPEED_STATE_WINDOW samples: a step
# in speed moves the centred median at the step itself; 15 is the window compared in
# bench/speed_states.py.
SPEED_STATE_WINDOW = 15
# The share of its core below which the measuring process shared it with another (the agent's
# min_cpu_share, fdiot/settings.py: 0.50 measured with a busy loop on the core, 1.000 quiet).
MIN_CPU_SHARE = 0.95


def _canary_ms(sample: Mapping[str, Any]) -> float | None:
    canary = (sample.get("environment") or {}).get("canary_ms")
    return float(canary) if canary is not None and float(canary) > 0 else None


def speed_states_ms(
    samples: Sequence[Mapping[str, Any]],
    window: int | None = None,
    max_spread: float | None = DEFAULT_MAX_CANARY_RATIO,
) -> list[float | None]:
    """The host's canary level (ms) around each sample, in the order given (the order in which
    they were measured): the median ``environment.canary_ms`` of the ``window`` (default
    :data:`SPEED_STATE_WINDOW`) samples with a canary centred on it. None for a sample without a
    canary, and where the host was in no steady state: the window's 90% canary quantile over its
    10% one above ``max_spread`` (a host switching speed from one sample to the next, or the
    step between two states)."""
    window = SPEED_STATE_WINDOW if window is None else window
    positions = [i for i, s in enumerate(samples) if _canary_ms(s) is not None]
    values = np.array([_canary_ms(samples[i]) for i in positions], dtype=float)
    half = max(window, 1) // 2
    states: list[float | None] = [None] * len(samples)
    for k, i in enumerate(positions):
        around = values[max(0, k - half) : k + half + 1]
        low, high = np.quantile(around, [0.1, 0.9])
        if max_spread is None or high <= low * max_spread:
            states[i] = float(np.median(around))
    return states


def at_reference_speed(sample: Mapping[str, Any], speed: float) -> dict[str, Any]:
    """A copy of ``sample`` with its latencies divided by ``speed`` (its state's canary level over
    the reference one) and ``environment.speed`` set; ``measured_median_ms`` keeps the label as
    timed."""
    out = dict(sample)
    measured_ms = sample_latency_ms(sample)
    keys = ("median_ms", "p10_ms", "p90_ms", "std_ms")
    latency = sample.get("latency")
    if isinstance(latency, Mapping):
        out["latency"] = {
            k: (float(v) / speed if k in keys and v is not None else v) for k, v in latency.items()
        }
    for k in keys:
        if sample.get(k) is not None:
            out[k] = float(sample[k]) / speed
    out["environment"] = {
        **(sample.get("environment") or {}),
        "speed": speed,
        "measured_median_ms": measured_ms,
    }
    return out


def speed_at(
    environment: Mapping[str, Any] | None,
    reference_canary_ms: float | None,
    key: str = "state_canary_ms",
) -> float:
    """How much slower than the model's reference speed a measurement ran: the speed state it was
    judged against (the agent's ``state_canary_ms``) over ``reference_canary_ms`` (a model's
    metric); 1.0 when either is missing. A prediction times it is the latency at that speed.

    ``key="canary_ms"`` takes the measurement's own canary instead (the slower of the canaries
    right before and right after it, as the samples' canaries that set the reference are): the
    ``ours_canary_speed`` row of ``bench.accuracy``."""
    state_ms = (environment or {}).get(key)
    if state_ms is None or not reference_canary_ms or float(state_ms) <= 0:
        return 1.0
    return float(state_ms) / float(reference_canary_ms)


def quiet_samples(
    samples: Sequence[Mapping[str, Any]],
    max_canary_ratio: float | None = DEFAULT_MAX_CANARY_RATIO,
    speed_normalise: bool = True,
) -> tuple[list[Mapping[str, Any]], dict[str, int]]:
    """The samples to fit on, and how many disturbed ones were left out per op type.

    A disturbed sample's label is the host's slowdown as much as the op's time, so it is left
    out, unless its working set is larger than every quiet sample's of its op type (then it is
    all there is of that size: an op type with no quiet sample keeps all of its samples). Past
    the quiet ones' reach a tree would extrapolate from a smaller regime: on the sixth
    development VM (2026-12-03 14:58 campaign, ``bench/results/campaign_vm6_first.json.gz``; a
    third of its samples judged disturbed) six of the seven dense samples of 16 MB of weights and
    more, which run from DRAM at about a third of the L3's bandwidth, were left out, and two MLPs
    with 24-30 MB of weights came out -52% (-7.3% when kept: bench/results/refit_vm6_first.json).

    With ``speed_normalise`` (see :data:`SPEED_STATE_WINDOW`), a sample measured in a steady
    speed state (:func:`speed_states_ms`) is judged against that state: disturbed when its own
    canary is more than ``max_canary_ratio`` times the state's level or less than the level over
    ``max_canary_ratio`` (a moment of another speed), or when its process had less than
    :data:`MIN_CPU_SHARE` of its core; a kept one is carried to the reference speed, the
    campaign's canary floor (:func:`canary_floor_ms`), by :func:`at_reference_speed`. The others
    (no canary, or no steady state around them) are judged and kept as without it.

    Without it: disturbed when flagged by the agent, or (with ``max_canary_ratio``) timed under a
    canary more than ``max_canary_ratio`` times the campaign's floor. The agent judges a canary
    against those *it* had seen so far, so on a host that starts in a slow state its first
    samples pass as quiet; the whole campaign's floor does not have that blind spot.
    """
    floor_ms = canary_floor_ms(samples) if max_canary_ratio is not None or speed_normalise else None
    candidates: list[Mapping[str, Any]] = list(samples)
    limit_ms = None if floor_ms is None or max_canary_ratio is None else floor_ms * max_canary_ratio
    quiet = [is_quiet(s, limit_ms) for s in samples]
    if speed_normalise and floor_ms is not None:
        states = speed_states_ms(samples, max_spread=max_canary_ratio)
        for i, (s, state_ms) in enumerate(zip(samples, states, strict=True)):
            canary_ms = _canary_ms(s)
            if state_ms is None or canary_ms is None:
                continue
            share = (s.get("environment") or {}).get("cpu_share")
            # Both ways: a sample timed in a fast moment of a slower state would be divided by
            # the slower state's level.
            if max_canary_ratio is not None:
                quiet[i] = state_ms / max_canary_ratio <= canary_ms <= state_ms * max_canary_ratio
                quiet[i] = quiet[i] and (share is None or float(share) >= MIN_CPU_SHARE)
            candidates[i] = at_reference_speed(s, state_ms / floor_ms)
    sizes = [working_set_bytes(_sample_features(s)) for s in samples]
    quiet_reach: dict[str, float] = {}  # per op type, the largest quiet working set
    for s, q, size in zip(samples, quiet, sizes, strict=True):
        if q:
            op_type = str(s["op_type"])
            quiet_reach[op_type] = max(quiet_reach.get(op_type, 0.0), size)
    kept: list[Mapping[str, Any]] = []
    disturbed: dict[str, int] = {}
    for s, q, size in zip(candidates, quiet, sizes, strict=True):
        op_type = str(s["op_type"])
        if q or size > quiet_reach.get(op_type, -1.0):
            kept.append(s)
        else:
            disturbed[op_type] = disturbed.get(op_type, 0) + 1
    return kept, disturbed
