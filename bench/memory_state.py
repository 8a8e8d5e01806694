"""Does a network's time follow the host's memory state, which the canary does not see?

The canary is a small compute-bound conv: it tells a slower clock or a shared core, not a busy
L3 or memory. A network whose weights exceed the core's cache pays for reloading them at every
invoke (the model's weight-reload term, fitted once per campaign from ``conv_chain`` probes),
and ``bench.reload_spread`` found that rate 15.5-24.2 ps per byte over three campaigns of one VM
with a sampling error of 1.4-1.9. If the networks beyond the cache move with a reload probe
timed beside them while the canary stays put, the reload term should be scaled by a memory
state the way op labels are scaled by the speed state.

For ``--rounds`` rounds, each network of ``--networks`` is timed with the farm's network protocol
right after a reload probe: a chain of 1x1 convolutions shaped like a mobile CNN's late stage
(:data:`PROBE_CONFIG`, 4.9 MB of weights at 4x4 pixels). The probe's layers are timed alone once
at the start, so each round also gives the probe's extra over its layers. Per network: the
spread of its time over the rounds, and the Pearson correlation of its time with the probe's and
with the canary's. Prints a table and writes ``bench/results/memory_state.json``; run it with the
farm stopped (five networks and ten rounds took about ten minutes on the fifth VM).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.builder import build_op_model
from bench import write_results
from bench.decompose import measuring_child
from bench.zoo import NETWORKS, build_tflite
from models.opspace import chain_layers, config_key

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Three mobile CNNs whose weights (14-22 MB) exceed the 2 MB L2 and the third fifth-VM campaign
# put 7.7-8.0% low; a compute-bound CNN within the cache and a dense MLP (38 MB from the L3) as
# the two kinds of control.
DEFAULT_NETWORKS = (
    "mobilenetv2_a100_128",
    "mobilenetv3large_128",
    "efficientnetb0_128",
    "resnet20_32",
    "mlp_3072_2048_1024x2",
)
DEFAULT_ROUNDS = 10
# MobileNetV2's last stage at 128 px: 160 <-> 960 channels on 4x4 pixels, 8 layers of 0.61 MB.
PROBE_CONFIG = {"h": 4, "w": 4, "c": 160, "m": 960, "depth": 8}


def correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of two equally long series (None under 3 points or a flat series)."""
    if len(x) < 3 or len(x) != len(y) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def summarize(rounds: dict[str, dict[str, list[float]]], layers_ms: float) -> list[dict[str, Any]]:
    """Per network: its spread over the rounds (max / min - 1), the probe's extra over its
    layers (per round) and the correlations of the network's time with the probe's and the
    canary's. ``rounds[name]`` holds ``network_ms``, ``probe_ms`` and ``canary_ms`` per round."""
    rows = []
    for name, series in rounds.items():
        network, probe, canary = (series[k] for k in ("network_ms", "probe_ms", "canary_ms"))
        rows.append(
            {
                "name": name,
                "network_spread": max(network) / min(network) - 1.0,
                "probe_extra": [p / layers_ms - 1.0 for p in probe],
                "probe_spread": max(probe) / min(probe) - 1.0,
                "canary_spread": max(canary) / min(canary) - 1.0 if canary else None,
                "r_probe": correlation(network, probe),
                "r_canary": correlation(network, canary),
                **series,
            }
        )
    return rows


def across_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results documents of several runs, in time order: per network, its median time in each
    run, the probe's and the canary's medians beside it, and the correlation of the network's
    medians with the probe's and with the canary's over the runs (a state that lasts tens of
    minutes shows between runs, not within one)."""
    names = [r["name"] for r in runs[0]["networks"]] if runs else []
    out = []
    for name in names:
        found = [next((r for r in run["networks"] if r["name"] == name), None) for run in runs]
        rows = [r for r in found if r is not None]
        network = [float(np.median(r["network_ms"])) for r in rows]
        probe = [float(np.median(r["probe_ms"])) for r in rows]
        canary = [float(np.median(r["canary_ms"])) for r in rows if r["canary_ms"]]
        out.append(
            {
                "name": name,
                "network_ms": network,
                "probe_ms": probe,
                "canary_ms": canary,
                "network_spread": max(network) / min(network) - 1.0,
                "r_probe": correlation(network, probe),
                "r_canary": correlation(network, canary),
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--networks", nargs="+", choices=sorted(NETWORKS), default=list(DEFAULT_NETWORKS)
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "memory_state.json")
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        help="results of earlier runs, in time order: compare them (nothing is measured)",
    )
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare, args.out)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (a correlation needs them)")
    models = {name: build_tflite(name) for name in args.networks}
    probe = build_op_model("conv_chain", PROBE_CONFIG)
    rounds: dict[str, dict[str, list[float]]] = {
        name: {"network_ms": [], "probe_ms": [], "canary_ms": []} for name in args.networks
    }
    with measuring_child() as (child, overhead_ms):
        alone: dict[Any, float] = {}
        for layer in chain_layers(PROBE_CONFIG):
            key = config_key(layer)
            if key not in alone:
                alone[key] = child.measure(build_op_model("conv2d", layer)).median_ms
        layers_ms = overhead_ms + sum(
            alone[config_key(layer)] - overhead_ms for layer in chain_layers(PROBE_CONFIG)
        )
        for index in range(args.rounds):
            for name in args.networks:
                rounds[name]["probe_ms"].append(child.measure(probe).median_ms)
                stats = child.measure_network(models[name])
                rounds[name]["network_ms"].append(stats.median_ms)
                if stats.canary_ms is not None:
                    rounds[name]["canary_ms"].append(stats.canary_ms)
            print(f"round {index + 1}/{args.rounds} done", flush=True)
    rows = summarize(rounds, layers_ms)
    print(f"probe layers alone {layers_ms:.4f} ms")
    print(f"{'network':<24}{'spread':>8}{'probe spread':>14}{'canary spread':>15}"
          f"{'r(probe)':>10}{'r(canary)':>11}")  # fmt: skip
    for r in rows:
        shown = {k: "-" if r[k] is None else f"{r[k]:+.2f}" for k in ("r_probe", "r_canary")}
        canary = "-" if r["canary_spread"] is None else f"{r['canary_spread']:.1%}"
        print(f"{r['name']:<24}{r['network_spread']:>8.1%}{r['probe_spread']:>14.1%}"
              f"{canary:>15}{shown['r_probe']:>10}{shown['r_canary']:>11}")  # fmt: skip
    extras = [e for r in rows for e in r["probe_extra"]]
    print(f"probe extra over its layers: {min(extras):+.1%} to {max(extras):+.1%}")
    write_results(
        args.out,
        {"probe_config": PROBE_CONFIG, "probe_layers_ms": layers_ms, "networks": rows},
    )
    return 0


def compare(paths: Sequence[Path], out: Path) -> int:
    """Print and write :func:`across_runs` of the results at ``paths``."""
    rows = across_runs([json.loads(p.read_text()) for p in paths])
    print(f"{'network':<24}{'medians per run (ms)':<44}{'spread':>8}{'r(probe)':>10}"
          f"{'r(canary)':>11}")  # fmt: skip
    for r in rows:
        medians = " ".join(f"{v:.3f}" for v in r["network_ms"])
        shown = {k: "-" if r[k] is None else f"{r[k]:+.2f}" for k in ("r_probe", "r_canary")}
        print(f"{r['name']:<24}{medians:<44}{r['network_spread']:>8.1%}{shown['r_probe']:>10}"
              f"{shown['r_canary']:>11}")  # fmt: skip
    if rows:
        probes = " ".join(f"{v:.3f}" for v in rows[0]["probe_ms"])
        print(f"probe medians per run (ms, beside the first network): {probes}")
    write_results(out, {"runs": [str(p) for p in paths], "networks": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
