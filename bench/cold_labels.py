"""Would timing large dense layers cold make their labels repeatable? (``bench.cold_labels``)

Dense layers whose weights are 7-28 MB, inside the second development VM's 32 MiB L3 that it
shares with other tenants, measure up to 60% apart minutes apart (``bench/results/
label_noise_vm2.json``): their time depends on how much of the L3 the neighbours leave them.
Timing them **cold** (the caches flushed before every timed invoke, so that the weights always
come from memory) would define a label that does not depend on the neighbours' L3 use, if memory
bandwidth itself were steadier. This script measures it: in a loop on the measurement core, for
each layer, a **cold window** (``COLD_RUNS`` invokes, each after writing through a buffer of
``--flush-mib``) and a **warm window** (the agent's way: warm-up, then ``WARM_RUNS`` invokes back
to back), each summarised by its median; then each layer's spread of window medians (p90 / p10)
per mode. Prints a table and writes ``bench/results/cold_labels.json``. Run it with the farm
stopped: it measures on the reserved core, in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from agent._measure_child import load_interpreter, time_invokes
from agent.builder import build_op_model
from agent.environment import cpu_signature
from bench import write_measurement
from bench.cache_canary import _spread, spread_table
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings

RESULTS = Path(__file__).parent / "results" / "cold_labels.json"
# (cin, cout) of batch-1 dense layers: 16.8-19.9 MB of float weights (within a 32 MiB L3, the
# sizes whose labels moved most in label_noise_vm2.json), and 4.2 MB ones that fit beside them.
DEFAULT_LAYERS = ((4096, 1024), (2048, 2048), (1266, 3920), (512, 2048), (1024, 1024))
# 64 MiB: twice the largest L3 of the development VMs, so one pass evicts all of it.
DEFAULT_FLUSH_MIB = 64
# Invokes per window: cold ones pay a flush each (~3 ms for 64 MiB), so fewer of them.
COLD_RUNS, WARM_RUNS, WARMUP_RUNS = 8, 20, 3
# Pause between rounds, so that the windows sample the neighbours' activity over the run.
ROUND_PAUSE_S = 0.3

console = Console()


def layer_name(cin: int, cout: int) -> str:
    return f"{cin}x{cout}"


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per layer and mode (``cold``, ``warm``), the spread of its window medians (``_spread``)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["layer"]), {}).setdefault(str(row["mode"]), {"values": []})
        out[str(row["layer"])][str(row["mode"])]["values"].append(float(row["median_ms"]))
    return {
        layer: {mode: _spread(np.asarray(v["values"])) for mode, v in modes.items()}
        for layer, modes in out.items()
    }


def _cold_median_ms(invoke: Any, flush: np.ndarray) -> float:
    times_ns = []
    for _ in range(COLD_RUNS):
        flush += 1.0  # read and write every line of the buffer: evicts the weights
        before = time.perf_counter_ns()
        invoke()
        times_ns.append(time.perf_counter_ns() - before)
    return statistics.median(times_ns) / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_labels")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--flush-mib", type=int, default=DEFAULT_FLUSH_MIB)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    settings = get_settings()
    core = reserve_measurement_core(settings)
    layers = {
        layer_name(cin, cout): load_interpreter(
            build_op_model(
                "fully_connected", {"cin": cin, "cout": cout, "rows": 1, "activation": "none"}
            ),
            1,
        ).invoke
        for cin, cout in DEFAULT_LAYERS
    }
    flush = np.ones(args.flush_mib * 2**20 // 8)
    os.sched_setaffinity(0, {core})  # built and loaded off the core; timed on it
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        for name, invoke in layers.items():
            rows.append(
                {"layer": name, "mode": "cold", "median_ms": _cold_median_ms(invoke, flush)}
            )
            warm_ns = time_invokes(invoke, WARMUP_RUNS, WARM_RUNS, 0)
            rows.append(
                {"layer": name, "mode": "warm", "median_ms": statistics.median(warm_ns) / 1e6}
            )
        time.sleep(ROUND_PAUSE_S)
    summary = summarize(rows)

    console.print(
        spread_table(
            f"Dense-layer window medians, cold against warm ({len(rows) // 2} windows)",
            ("layer", "mode", "windows"),
            summary,
        )
    )
    write_measurement(
        args.out,
        cpu_signature(core),
        summary,
        rows,
        {"seconds": args.seconds, "flush_mib": args.flush_mib},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
