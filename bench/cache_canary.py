"""Does a canary living in L3 see what the L2 canary misses? ``python -m bench.cache_canary``.

The farm's canary (``agent.runner.CANARY_OP``, a 3x3 conv on 28x28x32) has a working set that
fits in L2. On a host whose last-level cache is shared with other tenants, a network whose
weights live in L3 can slow down while that canary stays quiet (the second development VM:
mobilenetv3small_128 measured 0.79 ms and 1.13 ms ten minutes apart, canary 1.04-1.08 both
times). This script times, in a loop on the measurement core, the L2 canary, an **L3 canary** (a
dense layer with 4096 x 1024 float weights, 16 MiB: beyond any L2, within a 32 MiB L3), a few zoo
networks, and the L2 canary again, and reports each network's latency spread (p90 / p10) over
all rounds, over the rounds where the L2 canary was quiet before and after (within
``--quiet-ratio`` of its fastest), over those where both canaries were quiet, and over those
where the L2 canary was quiet but the L3 one was above ``--slow-ratio``. Prints a table and
writes ``bench/results/cache_canary.json``. Run it with the farm stopped: it measures on the
reserved core, in this process (LiteRT's interpreter, as the agent's child uses it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agent._measure_child import load_interpreter, time_invokes
from agent.builder import build_op_model
from agent.environment import cpu_signature
from agent.runner import CANARY_OP
from bench import write_measurement, zoo
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings

RESULTS = Path(__file__).parent / "results" / "cache_canary.json"
# 4096 x 1024 float32 weights = 16 MiB: past the 512 KiB L2 of the second VM, inside its 32 MiB L3.
L3_CANARY_OP: tuple[str, dict[str, Any]] = (
    "fully_connected",
    {"cin": 4096, "cout": 1024, "rows": 1, "activation": "none"},
)
DEFAULT_NETWORKS = ("mobilenetv3small_128", "mobilenetv2_a100_128")
# Invokes per timing: the L2 canary as the agent times it (settings.canary_runs), fewer for the
# slower L3 canary and networks so that one round stays under ~0.1 s on the second VM.
L2_RUNS, L3_RUNS, NETWORK_RUNS, WARMUP_RUNS = 20, 10, 10, 3

console = Console()


def _median_ms(invoke: Callable[[], None], runs: int) -> float:
    return statistics.median(time_invokes(invoke, WARMUP_RUNS, runs, 0)) / 1e6


def _spread(values: np.ndarray) -> dict[str, Any]:
    if values.size < 3:
        return {"rounds": int(values.size)}
    p10, p50, p90 = (float(v) for v in np.percentile(values, [10, 50, 90]))
    return {"rounds": int(values.size), "p10_ms": p10, "p50_ms": p50, "p90_ms": p90,
            "p90_over_p10": p90 / p10}  # fmt: skip


def spread_table(
    title: str, labels: tuple[str, str, str], spreads: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> Table:
    """A table of :func:`_spread` results, one row per outer and inner key (``labels`` names
    those two columns and the count column)."""
    table = Table(title=title)
    for column in (*labels, "p10 ms", "p50 ms", "p90 ms", "p90/p10"):
        table.add_column(column, justify="right")
    for name, by_label in spreads.items():
        for label, s in by_label.items():
            figures = (
                [f"{s[k]:.3f}" for k in ("p10_ms", "p50_ms", "p90_ms")]
                + [f"{s['p90_over_p10']:.2f}"]
                if "p50_ms" in s
                else ["-"] * 4
            )
            table.add_row(name, label, str(s["rounds"]), *figures)
    return table


def summarize(
    rows: Sequence[Mapping[str, float]],
    networks: Sequence[str],
    quiet_ratio: float = 1.1,
    slow_ratio: float = 1.3,
) -> dict[str, Any]:
    """Each network's spread under four conditions on the canaries (see the module docstring)."""
    column = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    l2_floor, l3_floor = column["l2"].min(), column["l3"].min()
    l2_quiet = (column["l2"] <= l2_floor * quiet_ratio) & (
        column["l2_after"] <= l2_floor * quiet_ratio
    )
    l3_quiet = column["l3"] <= l3_floor * quiet_ratio
    conditions = {
        "all": np.ones(len(rows), dtype=bool),
        "l2_quiet": l2_quiet,
        "l2_and_l3_quiet": l2_quiet & l3_quiet,
        "l2_quiet_l3_slow": l2_quiet & (column["l3"] > l3_floor * slow_ratio),
    }
    return {
        "rounds": len(rows),
        "l2_floor_ms": float(l2_floor),
        "l3_floor_ms": float(l3_floor),
        "l2_quiet_share": float(l2_quiet.mean()),
        "l3_quiet_share": float(l3_quiet.mean()),
        "networks": {
            name: {label: _spread(column[name][mask]) for label, mask in conditions.items()}
            for name in networks
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache_canary")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--networks", nargs="*", default=list(DEFAULT_NETWORKS))
    parser.add_argument("--quiet-ratio", type=float, default=1.1)
    parser.add_argument("--slow-ratio", type=float, default=1.3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    settings = get_settings()
    core = reserve_measurement_core(settings)
    l2 = load_interpreter(build_op_model(*CANARY_OP), 1).invoke
    l3 = load_interpreter(build_op_model(*L3_CANARY_OP), 1).invoke
    nets = {name: load_interpreter(zoo.build_tflite(name), 1).invoke for name in args.networks}
    os.sched_setaffinity(0, {core})  # built and loaded off the core; timed on it
    rows: list[dict[str, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        row = {"l2": _median_ms(l2, L2_RUNS), "l3": _median_ms(l3, L3_RUNS)}
        row.update({name: _median_ms(invoke, NETWORK_RUNS) for name, invoke in nets.items()})
        row["l2_after"] = _median_ms(l2, L2_RUNS)
        rows.append(row)
    summary = summarize(rows, args.networks, args.quiet_ratio, args.slow_ratio)

    console.print(
        spread_table(
            f"Network latency by canary state ({len(rows)} rounds)",
            ("network", "condition", "rounds"),
            summary["networks"],
        )
    )
    console.print(
        f"L2 canary quiet (before and after, ≤{args.quiet_ratio}x its fastest) in "
        f"{100 * summary['l2_quiet_share']:.0f}% of rounds; L3 canary in "
        f"{100 * summary['l3_quiet_share']:.0f}%"
    )
    write_measurement(
        args.out,
        cpu_signature(core),
        summary,
        rows,
        {"seconds": args.seconds, "quiet_ratio": args.quiet_ratio, "slow_ratio": args.slow_ratio},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
