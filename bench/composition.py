"""Two effects of this host's runtime that single-op timing has to meet, measured directly.

1. **Narrow GEMM kernel** (``python -m bench.composition``): a batch-1 dense layer is timed for
   every ``cout`` in a 33-wide window and for widths from 124 to 1864 where XNNPACK's kernel
   choice (:func:`models.timemodel.uses_narrow_gemm`: the 8-wide kernel when the 16-wide one
   pads more than 1% of the width and the 8-wide one pads less) and the older "last 16-wide panel
   at most half full" rule (``gemm_tail16 <= 8``) disagree; an LSTM for consecutive ``units``.
   The time per weight shows which rule the runtime follows.
2. **Weights streamed inside a network**: chains of 1x1 convolutions, converted whole, against
   the sum of their ops timed alone. Alone, an op's weights stay in the cache between invokes; in
   a network whose weights exceed the cache they come from DRAM at every invoke.
3. **One-pixel convolutions are dense layers** (``--sections one_pixel``): a conv whose kernel
   covers its input (one output pixel, :func:`models.timemodel.dense_equivalent`) against the
   batch-1 dense layer of ``h * w * cin`` inputs, alternately, twice each.
4. **Stem convolutions** (``--sections stem``): a network's first layer, 3x3 on an RGB input,
   for output widths 8-64 at stride 1 and 2. Its GEMM is only ``cin * 9 = 27`` deep, and the time
   per output pixel and channel shows the kernel XNNPACK picks per output width (why the conv
   sampler draws stems of their own, ``models.opspace._sample_stem``).

Prints the tables and writes ``bench/results/composition.json`` (sections not run keep their
previous results). Run it with the farm stopped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.builder import build_op_model
from agent.runner import MeasurementChild
from bench import write_results
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings
from models.opspace import FLOAT32_BYTES
from models.timemodel import gemm_tail, output_pixels, uses_narrow_gemm

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Dense layer of the panel scan: 700 inputs, one row; the window covers two 16-column panels.
PANEL_CIN = 700
PANEL_COUTS = range(688, 721)
# Widths where the two rules disagree (e.g. 124, 300, 856, 872: tail <= 8 but the narrow kernel
# would not pad less or the wide one pads under 1%), each beside a neighbour where they agree;
# at 512 inputs every layer's weights (<= 3.8 MB) stay in the 8 MiB L3.
RULE_CIN = 512
RULE_COUTS = (124, 131, 140, 296, 300, 306, 520, 523, 696, 700, 856, 865, 872, 936, 1025, 1032,
              1128, 1361, 1364, 1368, 1857, 1860, 1864)  # fmt: skip
LSTM_UNITS = range(88, 100)
LSTM_BASE = {"seq_len": 8, "cin": 32, "return_sequences": 0}
# Chains of 1x1 convs alternating narrow -> wide -> narrow widths like MobileNetV2's
# expand/project pairs, CHAIN_PAIRS pairs each: on a 3x3 map with 12.3 MB of weights (beyond the
# cache), and on larger maps with 1.0 and 0.2 MB.
CHAINS: tuple[tuple[int, tuple[int, int]], ...] = ((3, (320, 960)), (6, (64, 384)), (12, (32, 192)))
CHAIN_PAIRS = 5
# Time per weight at least this much above the window's fastest counts as the slow kernel
# (the two regimes measured 0.13 and 0.25 ns per weight).
SLOW_RATIO = 1.3


def _conv_chain(hw: int, widths: Sequence[int]) -> bytes:
    import tensorflow as tf

    inputs = tf.keras.Input((hw, hw, widths[0]), batch_size=1)
    x = inputs
    for width in widths[1:]:
        x = tf.keras.layers.Conv2D(width, 1, padding="same")(x)
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, x))
    return bytes(converter.convert())


def _dense_rows(cin: int, couts: Sequence[int], child: MeasurementChild) -> list[dict[str, Any]]:
    rows = []
    for cout in couts:
        config = {"rows": 1, "cin": cin, "cout": cout, "activation": "none"}
        ms = child.measure(build_op_model("fully_connected", config)).median_ms
        rows.append(
            {
                "cin": cin,
                "cout": cout,
                "tail16": gemm_tail(cout, 16),
                "narrow_kernel": uses_narrow_gemm(cout),
                "ns_per_weight": ms * 1e6 / (cin * cout),
            }
        )
    fastest = min(row["ns_per_weight"] for row in rows)
    for row in rows:
        row["slow"] = row["ns_per_weight"] > SLOW_RATIO * fastest
    return rows


def _agreement(rows: list[dict[str, Any]], rule: Callable[[dict[str, Any]], bool]) -> str:
    """How many widths the rule calls slow exactly when they measured slow, as ``hits/total``."""
    return f"{sum(r['slow'] == rule(r) for r in rows)}/{len(rows)}"


def _tail_rule(row: dict[str, Any]) -> bool:
    return bool(row["tail16"] <= 8)


def _narrow_rule(row: dict[str, Any]) -> bool:
    return bool(row["narrow_kernel"])


def panel_scan(child: MeasurementChild) -> dict[str, Any]:
    """ns per weight of the dense layers and ms of the LSTM, with each width's tail and kernel."""
    dense = _dense_rows(PANEL_CIN, PANEL_COUTS, child)
    rule = _dense_rows(RULE_CIN, RULE_COUTS, child)
    lstm = []
    for units in LSTM_UNITS:
        ms = child.measure(build_op_model("lstm", {**LSTM_BASE, "units": units})).median_ms
        lstm.append(
            {
                "units": units,
                "tail16": gemm_tail(4 * units, 16),
                "narrow_kernel": uses_narrow_gemm(4 * units),
                "ms": ms,
            }
        )
    return {
        "dense": dense,
        "rule_widths": rule,
        "lstm": lstm,
        "dense_explained_by_tail16_le_8": _agreement(dense, _tail_rule),
        "dense_explained_by_narrow_kernel": _agreement(dense, _narrow_rule),
        "rule_widths_explained_by_tail16_le_8": _agreement(rule, _tail_rule),
        "rule_widths_explained_by_narrow_kernel": _agreement(rule, _narrow_rule),
    }


def streaming(child: MeasurementChild) -> list[dict[str, Any]]:
    """Whole chain vs the sum of its convs timed alone (each alone minus one invoke overhead)."""
    overhead_ms = child.measure(build_op_model("invoke_overhead", {})).median_ms
    rows = []
    for hw, (narrow, wide) in CHAINS:
        widths = [narrow] + [wide, narrow] * CHAIN_PAIRS
        chain_ms = child.measure(_conv_chain(hw, widths)).median_ms
        alone_ms, weight_bytes = overhead_ms, 0
        for cin, cout in itertools.pairwise(widths):
            weight_bytes += FLOAT32_BYTES * cin * cout
            config = {"h": hw, "w": hw, "cin": cin, "cout": cout, "kh": 1, "kw": 1, "stride": 1,
                      "padding": "same", "activation": "none"}  # fmt: skip
            alone_ms += child.measure(build_op_model("conv2d", config)).median_ms - overhead_ms
        rows.append(
            {
                "hw": hw,
                "widths": f"{narrow}<->{wide} x{CHAIN_PAIRS}",
                "weight_mb": weight_bytes / 1e6,
                "chain_ms": chain_ms,
                "sum_alone_ms": alone_ms,
                "ratio": chain_ms / alone_ms,
            }
        )
    return rows


# (h = w = kernel, cin, cout): classifier heads as MobileNets write them (1x1 conv on the pooled
# map) and 7x7 / 3x3 valid convs on a map of their own size, 0.02 to 9.4 MB of weights.
ONE_PIXEL_CONVS: tuple[tuple[int, int, int], ...] = (
    (1, 960, 1280), (1, 1280, 1000), (1, 512, 1000), (1, 96, 40), (1, 2048, 1024),
    (7, 64, 512), (3, 256, 256), (1, 1536, 1536),
)  # fmt: skip
ONE_PIXEL_ROUNDS = 2


def one_pixel(child: MeasurementChild) -> list[dict[str, Any]]:
    """Each one-pixel conv and its dense equivalent, timed alternately; the fastest of each."""
    from models.timemodel import dense_equivalent

    rows = []
    for size, cin, cout in ONE_PIXEL_CONVS:
        conv = {"h": size, "w": size, "kh": size, "kw": size, "cin": cin, "cout": cout,
                "stride": 1, "padding": "valid", "activation": "none"}  # fmt: skip
        dense = dense_equivalent("conv2d", conv)
        assert dense is not None
        conv_ms, dense_ms = [], []
        for _ in range(ONE_PIXEL_ROUNDS):
            conv_ms.append(child.measure(build_op_model("conv2d", conv)).median_ms)
            dense_ms.append(child.measure(build_op_model("fully_connected", dense)).median_ms)
        rows.append(
            {
                "conv": conv,
                "dense": dense,
                "weight_mb": FLOAT32_BYTES * size * size * cin * cout / 1e6,
                "conv_ms": conv_ms,
                "dense_ms": dense_ms,
                "ratio": min(conv_ms) / min(dense_ms),
            }
        )
    return rows


# Stem sweep: input sizes of the zoo's image networks and output widths around the 8/16 steps.
STEM_SIZES = (96, 128, 224)
STEM_COUTS = (8, 12, 16, 20, 24, 32, 48, 64)


def stem(child: MeasurementChild) -> list[dict[str, Any]]:
    """Each 3x3 RGB conv of the sweep timed once, less the invoke overhead."""
    overhead_ms = child.measure(build_op_model("invoke_overhead", {})).median_ms
    rows = []
    for size, stride, cout in itertools.product(STEM_SIZES, (2, 1), STEM_COUTS):
        conv = {"h": size, "w": size, "kh": 3, "kw": 3, "cin": 3, "cout": cout,
                "stride": stride, "padding": "same", "activation": "relu6"}  # fmt: skip
        op_ms = child.measure(build_op_model("conv2d", conv)).median_ms - overhead_ms
        pixels = output_pixels(conv)
        rows.append(
            {"conv": conv, "op_ms": op_ms, "ns_per_pixel_channel": op_ms * 1e6 / (pixels * cout)}
        )
    return rows


SECTIONS = ("panel", "streaming", "one_pixel", "stem")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "composition.json")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    settings = get_settings()
    reserve_measurement_core(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    with MeasurementChild(settings) as child:
        if "panel" in args.sections:
            results["panel"] = panel_scan(child)
        if "streaming" in args.sections:
            results["streaming"] = streaming(child)
        if "one_pixel" in args.sections:
            results["one_pixel"] = one_pixel(child)
        if "stem" in args.sections:
            results["stem"] = stem(child)
    if "panel" in args.sections:
        _print_panel(results["panel"])
    if "streaming" in args.sections:
        _print_streaming(results["streaming"])
    if "one_pixel" in args.sections:
        print(f"{'one-pixel conv':<26}{'weights MB':>11}{'conv ms':>9}{'dense ms':>9}{'ratio':>7}")
        for r in results["one_pixel"]:
            c = r["conv"]
            label = f"{c['kh']}x{c['kw']} on {c['h']}x{c['w']}x{c['cin']} -> {c['cout']}"
            print(f"{label:<26}{r['weight_mb']:>11.2f}{min(r['conv_ms']):>9.3f}"
                  f"{min(r['dense_ms']):>9.3f}{r['ratio']:>7.3f}")  # fmt: skip
    if "stem" in args.sections:
        _print_stem(results["stem"])
    write_results(args.out, results, indent=2)
    return 0


def _print_stem(rows: list[dict[str, Any]]) -> None:
    print("3x3 conv on an RGB input: ns per output pixel and channel, by cout")
    print(f"{'input, stride':<16}" + "".join(f"{c:>7}" for c in STEM_COUTS))
    for (size, stride), group in itertools.groupby(
        rows, key=lambda r: (r["conv"]["h"], r["conv"]["stride"])
    ):
        cells = "".join(f"{r['ns_per_pixel_channel']:>7.2f}" for r in group)
        print(f"{f'{size}x{size}, s{stride}':<16}{cells}")


def _print_panel(panel: dict[str, Any]) -> None:
    print(f"dense 1x{PANEL_CIN} -> cout (S = slow kernel, . = fast; narrow kernel marked ^):")
    print(f"  cout {PANEL_COUTS.start}..{PANEL_COUTS.stop - 1}, one character each")
    print("  time " + "".join("S" if r["slow"] else "." for r in panel["dense"]))
    print("  rule " + "".join("^" if r["narrow_kernel"] else " " for r in panel["dense"]))
    print(f"dense 1x{RULE_CIN} -> cout where the rules disagree:")
    print(f"{'cout':>6}{'tail16':>7}{'narrow':>7}{'ns/weight':>10}{'slow':>6}")
    for r in panel["rule_widths"]:
        print(f"{r['cout']:>6}{r['tail16']:>7}{'yes' if r['narrow_kernel'] else 'no':>7}"
              f"{r['ns_per_weight']:>10.3f}{'yes' if r['slow'] else 'no':>6}")  # fmt: skip
    for label, key in (("narrow kernel rule", "narrow_kernel"), ("tail16 <= 8", "tail16_le_8")):
        print(f"  slow <=> {label}: {panel['dense_explained_by_' + key]} widths of the window, "
              f"{panel['rule_widths_explained_by_' + key]} of the disagreeing widths")  # fmt: skip
    print(
        "lstm units: "
        + ", ".join(f"{r['units']}:{r['ms']:.2f}ms/t{r['tail16']}" for r in panel["lstm"])
    )


def _print_streaming(chains: list[dict[str, Any]]) -> None:
    print(f"{'chain':<22}{'weights MB':>11}{'chain ms':>10}{'sum alone':>10}{'ratio':>7}")
    for r in chains:
        print(f"{r['hw']}x{r['hw']} {r['widths']:<17}{r['weight_mb']:>11.1f}{r['chain_ms']:>10.3f}"
              f"{r['sum_alone_ms']:>10.3f}{r['ratio']:>7.2f}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
