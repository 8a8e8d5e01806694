"""Directly written single-op models vs TFLiteConverter-built Keras layers: build time and latency.

For conv2d, depthwise_conv2d and fully_connected configs, builds each op both ways, measures both
with the farm's protocol in the pinned child (alternating, ``--rounds`` times, median of medians),
prints a table and writes ``bench/results/builder_parity.json``.

    .venv/bin/python -m bench.builder_parity [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from agent.builder import build_op_model
from agent.environment import execution_config
from agent.runner import MeasurementChild
from bench import write_results
from fdiot.settings import get_settings

RESULTS = Path(__file__).parent / "results" / "builder_parity.json"

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("conv2d", {"h": 56, "w": 56, "cin": 64, "cout": 64, "kh": 3, "kw": 3, "stride": 1,
                "padding": "same", "activation": "relu"}),
    ("conv2d", {"h": 56, "w": 56, "cin": 64, "cout": 65, "kh": 3, "kw": 3, "stride": 1,
                "padding": "same", "activation": "relu"}),
    ("conv2d", {"h": 28, "w": 28, "cin": 128, "cout": 96, "kh": 1, "kw": 1, "stride": 1,
                "padding": "valid", "activation": "none"}),
    ("conv2d", {"h": 112, "w": 112, "cin": 16, "cout": 32, "kh": 3, "kw": 3, "stride": 2,
                "padding": "same", "activation": "relu6"}),
    ("depthwise_conv2d", {"h": 112, "w": 112, "cin": 32, "multiplier": 1, "kh": 3, "kw": 3,
                          "stride": 1, "padding": "same", "activation": "relu6"}),
    ("depthwise_conv2d", {"h": 56, "w": 56, "cin": 128, "multiplier": 1, "kh": 3, "kw": 3,
                          "stride": 2, "padding": "same", "activation": "relu"}),
    ("depthwise_conv2d", {"h": 14, "w": 14, "cin": 256, "multiplier": 2, "kh": 5, "kw": 5,
                          "stride": 1, "padding": "valid", "activation": "none"}),
    ("fully_connected", {"rows": 1, "cin": 1024, "cout": 1000, "activation": "none"}),
    ("fully_connected", {"rows": 64, "cin": 256, "cout": 256, "activation": "relu"}),
    ("fully_connected", {"rows": 1, "cin": 2048, "cout": 1024, "activation": "relu"}),
]  # fmt: skip


def converter_model(op_type: str, c: dict[str, Any]) -> bytes:
    """The same op as a one-layer Keras model converted by TFLiteConverter (float32 defaults)."""
    import tensorflow as tf

    act = None if c["activation"] == "none" else c["activation"]
    layers = tf.keras.layers
    if op_type == "fully_connected":
        inputs = tf.keras.Input(shape=(c["cin"],), batch_size=c["rows"])
        outputs = layers.Dense(c["cout"], activation=act)(inputs)
    else:
        inputs = tf.keras.Input(shape=(c["h"], c["w"], c["cin"]), batch_size=1)
        common = {"strides": c["stride"], "padding": c["padding"], "activation": act}
        if op_type == "conv2d":
            outputs = layers.Conv2D(c["cout"], (c["kh"], c["kw"]), **common)(inputs)
        else:
            outputs = layers.DepthwiseConv2D(
                (c["kh"], c["kw"]), depth_multiplier=c["multiplier"], **common
            )(inputs)
    model = tf.keras.Model(inputs, outputs)
    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def op_names(model: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    return [op["op_name"] for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = get_settings()

    import tensorflow as tf  # imported up front so its one-off start is not counted per build

    rows: list[dict[str, Any]] = []
    with MeasurementChild(settings) as child:
        for op_type, config in CONFIGS:
            started = time.perf_counter()
            direct = build_op_model(op_type, config)
            direct_build_s = time.perf_counter() - started
            started = time.perf_counter()
            converted = converter_model(op_type, config)
            converter_build_s = time.perf_counter() - started

            direct_ms: list[float] = []
            converted_ms: list[float] = []
            measure_s: list[float] = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                direct_ms.append(child.measure(direct).median_ms)
                measure_s.append(time.perf_counter() - started)
                converted_ms.append(child.measure(converted).median_ms)
            d, cv = statistics.median(direct_ms), statistics.median(converted_ms)
            # Noise: how far this op's medians wander between rounds, either build.
            noise_ms = max(max(direct_ms) - min(direct_ms), max(converted_ms) - min(converted_ms))
            rows.append(
                {
                    "op_type": op_type,
                    "config": config,
                    "direct_ops": op_names(direct),
                    "converter_ops": op_names(converted),
                    "direct_build_s": direct_build_s,
                    "converter_build_s": converter_build_s,
                    "direct_median_ms": d,
                    "converter_median_ms": cv,
                    "direct_medians_ms": direct_ms,
                    "converter_medians_ms": converted_ms,
                    "relative_diff": (d - cv) / cv,
                    "round_noise_ms": noise_ms,
                    "within_noise": abs(d - cv) <= max(noise_ms, 0.03 * cv),
                    "measure_wall_s": statistics.median(measure_s),
                }
            )
            r = rows[-1]
            print(
                f"{op_type:17s} {_short(config):38s} build {direct_build_s * 1e3:7.1f} ms"
                f" vs {converter_build_s * 1e3:7.1f} ms | {d:8.3f} ms vs {cv:8.3f} ms"
                f" ({r['relative_diff']:+.1%}, noise {noise_ms:.3f} ms)"
                f" {'ok' if r['within_noise'] else 'DIFFERS'} | measure {r['measure_wall_s']:.2f} s"
                f" | ops {r['direct_ops']} / {r['converter_ops']}"
            )

    summary = {
        "host": platform.node(),
        "execution_config": execution_config(settings),
        "tensorflow": tf.__version__,
        "protocol": {
            "warmup_runs": settings.warmup_runs,
            "min_runs": settings.min_runs,
            "min_time_s": settings.min_time_s,
            "rounds": args.rounds,
        },
        "median_direct_build_s": statistics.median(r["direct_build_s"] for r in rows),
        "median_converter_build_s": statistics.median(r["converter_build_s"] for r in rows),
        "median_abs_relative_diff": statistics.median(abs(r["relative_diff"]) for r in rows),
        "all_within_noise": all(r["within_noise"] for r in rows),
        "rows": rows,
    }
    print(
        f"\nbuild: direct {summary['median_direct_build_s'] * 1e3:.1f} ms vs converter"
        f" {summary['median_converter_build_s'] * 1e3:.1f} ms (medians);"
        f" |latency diff| median {summary['median_abs_relative_diff']:.1%};"
        f" all within noise: {summary['all_within_noise']}"
    )
    write_results(RESULTS, summary, indent=2)


def _short(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items() if k != "activation")[:38]


if __name__ == "__main__":
    main()
