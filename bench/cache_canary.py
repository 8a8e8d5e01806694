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
where the L2 canary was quiet but the L3 one was above ``--slow-ratio``. Then, for the case
where neither canary is ever quiet, how much of each network's spread the canaries *explain*:
the network's log time regressed on the log of the L2 canary, the L3 canary, and both
(:func:`explained_spread`), with the p90/p10 spread left in the residuals. If scaling a label by
both canaries left a network's spread near 1.0, a second canary would be worth carrying through
the farm. Prints two tables and writes ``bench/results/cache_canary.json``. Run it with the farm
stopped: it measures on the reserved core, in this process (LiteRT's interpreter, as the agent's
child uses it).
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


# The regressors of explained_spread: which canaries each fit uses.
CANARY_FITS: dict[str, tuple[str, ...]] = {
    "none": (),
    "l2": ("l2",),
    "l3": ("l3",),
    "l2_and_l3": ("l2", "l3"),
}


def explained_spread(
    rows: Sequence[Mapping[str, float]], networks: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per network and canary fit (:data:`CANARY_FITS`): the least-squares fit of the network's
    log time on the canaries' log times, ``log t = a + sum(e_c log c)``, as its elasticities
    ``e_c`` (the L2 canary taken as the geometric mean of its timings before and after the
    network) and the p90/p10 of ``exp(residual)``, the spread a label would keep after being
    scaled by those canaries. A ratio of spreads, so it needs no quiet reference."""
    logs = {key: np.log(np.array([row[key] for row in rows])) for key in rows[0]}
    regressors = {"l2": (logs["l2"] + logs["l2_after"]) / 2.0, "l3": logs["l3"]}
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for name in networks:
        result[name] = {}
        for fit, canaries in CANARY_FITS.items():
            design = np.column_stack([np.ones(len(rows))] + [regressors[c] for c in canaries])
            coefficients, *_ = np.linalg.lstsq(design, logs[name], rcond=None)
            p10, p90 = np.percentile(logs[name] - design @ coefficients, [10, 90])
            elasticities = zip(canaries, coefficients[1:], strict=True)
            result[name][fit] = {
                "elasticities": {c: float(e) for c, e in elasticities},
                "residual_p90_over_p10": float(np.exp(p90 - p10)),
            }
    return result


def explained_table(explained: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Table:
    """A table of :func:`explained_spread`: one row per network, the residual spread per fit."""
    table = Table(title="Spread left after scaling by the canaries (p90/p10 of the residuals)")
    table.add_column("network")
    for fit in CANARY_FITS:
        table.add_column(fit, justify="right")
    table.add_column("elasticities (both)", justify="right")
    for name, fits in explained.items():
        both = fits["l2_and_l3"]["elasticities"]
        table.add_row(
            name,
            *(f"{fits[fit]['residual_p90_over_p10']:.3f}" for fit in CANARY_FITS),
            f"L2 {both['l2']:.2f}, L3 {both['l3']:.2f}",
        )
    return table


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
    summary["explained"] = explained_spread(rows, args.networks)

    console.print(
        spread_table(
            f"Network latency by canary state ({len(rows)} rounds)",
            ("network", "condition", "rounds"),
            summary["networks"],
        )
    )
    console.print(explained_table(summary["explained"]))
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
