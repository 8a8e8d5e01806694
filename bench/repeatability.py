"""How far apart the same network measures at different moments on this device: the noise floor
that any predictor's ±5% band sits on.

Every zoo network is measured ``--rounds`` times, round-robin (one pass over the zoo per round, so
a network's repeats lie minutes apart), with the farm's network protocol (canary, re-measurement
of disturbed attempts). Before each network a memory probe is timed: a batch-1 dense layer with
16 MiB of weights, twice this host's L3, so every invoke streams them from DRAM. The compute-bound
canary cannot see a host whose memory bandwidth is shared with other tenants; the probe can.

Prints a table (min, median, max ms; spread = max / min - 1) and writes
``bench/results/repeatability.json``. Run it with the farm stopped, the zoo built (``make bench``
or ``python -m bench.zoo``).
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.builder import build_op_model
from agent.runner import MeasurementChild
from bench import write_results
from bench.zoo import NETWORKS, build_tflite
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings
from models.opspace import FLOAT32_BYTES

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# 2048 x 2048 float32 weights = 16 MiB: beyond any L3 of the hosts we run on (8 MiB here).
PROBE_UNITS = 2048
PROBE_CONFIG = {"rows": 1, "cin": PROBE_UNITS, "cout": PROBE_UNITS, "activation": "none"}
# Spreads reported as shares of the zoo: the two bands of the accuracy targets.
BANDS = (0.05, 0.10)


def measure_rounds(child: MeasurementChild, names: Sequence[str], rounds: int) -> dict[str, Any]:
    """``rounds`` passes over ``names``: each network's medians (ms) and the probe before each."""
    models = {name: build_tflite(name) for name in names}
    probe = build_op_model("fully_connected", PROBE_CONFIG)
    times: dict[str, list[float]] = {name: [] for name in names}
    probes: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names:
            probes[name].append(child.measure(probe).median_ms)
            times[name].append(child.measure_network(models[name]).median_ms)
        print(f"round {round_index + 1}/{rounds} done", flush=True)
    return {"times_ms": times, "probe_ms": probes}


def summarize(times: dict[str, list[float]], probes: dict[str, list[float]]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for name, values in times.items():
        rows.append(
            {
                "name": name,
                "family": NETWORKS[name].family,
                "min_ms": min(values),
                "median_ms": statistics.median(values),
                "max_ms": max(values),
                "spread": max(values) / min(values) - 1.0,
                "probe_spread": max(probes[name]) / min(probes[name]) - 1.0,
            }
        )
    all_probes = [v for values in probes.values() for v in values]
    spreads = [float(r["spread"]) for r in rows]
    return {
        "networks": rows,
        "summary": {
            "rounds": len(next(iter(times.values()))),
            "median_spread": statistics.median(spreads),
            **{f"share_spread_over_{round(b * 100)}pct": _share(spreads, b) for b in BANDS},
            "probe_ms_min": min(all_probes),
            "probe_ms_max": max(all_probes),
            "probe_gb_per_s_max": _gb_per_s(min(all_probes)),
            "probe_gb_per_s_min": _gb_per_s(max(all_probes)),
        },
    }


def _share(values: Sequence[float], limit: float) -> float:
    return sum(v > limit for v in values) / len(values)


def _gb_per_s(probe_ms: float) -> float:
    """DRAM bandwidth the probe's weight stream implies (GB/s)."""
    return PROBE_UNITS * PROBE_UNITS * FLOAT32_BYTES / (probe_ms * 1e-3) / 1e9


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "repeatability.json")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    settings = get_settings()
    reserve_measurement_core(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with MeasurementChild(settings) as child:
        measured = measure_rounds(child, list(NETWORKS), args.rounds)
    result = summarize(measured["times_ms"], measured["probe_ms"])
    print(f"{'network':<26}{'min ms':>9}{'median':>9}{'max ms':>9}{'spread':>8}{'probe':>8}")
    for r in result["networks"]:
        print(f"{r['name']:<26}{r['min_ms']:>9.3f}{r['median_ms']:>9.3f}{r['max_ms']:>9.3f}"
              f"{r['spread']:>8.1%}{r['probe_spread']:>8.1%}")  # fmt: skip
    s = result["summary"]
    print(
        f"{s['rounds']} rounds: median spread {s['median_spread']:.1%}; networks spread over 5%: "
        f"{s['share_spread_over_5pct']:.0%}, over 10%: {s['share_spread_over_10pct']:.0%}; "
        f"DRAM probe {s['probe_ms_min']:.3f}-{s['probe_ms_max']:.3f} ms "
        f"({s['probe_gb_per_s_min']:.1f}-{s['probe_gb_per_s_max']:.1f} GB/s)"
    )
    result["measured"] = measured
    write_results(args.out, result, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
