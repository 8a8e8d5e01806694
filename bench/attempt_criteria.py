"""Which attempts are worth timing again? ``python -m bench.attempt_criteria``.

The agent re-measures an op sample whose timed runs spread wide, ``(p90 - p10) / median`` above
``max_spread`` (0.25), and on the second development VM that sends most samples to a second and
third attempt: in the full campaign of 2026-11-30, 55% of the samples took three attempts, 76% of
the measuring time, and 39% of them were still over the limit after the third. A wide spread of
single invokes does not by itself make the label (the median) wrong: tiny ops timed 18,000 times
spread 0.2 from timer and interrupt jitter alone. What does make it wrong is the host changing
state *during* the attempt, which shows as the median of the first half of the timed runs
differing from the median of the second half (**drift**).

This script times ``--per-type`` ops of each of conv2d, depthwise, dense and add (configurations
drawn by the op samplers with ``--seed``, not the campaign's) once per round for ``--rounds``
rounds, in this process on the measurement core with the agent's protocol (warm-up, 50 runs and
0.2 s, the canary waited for up to 3 s), and scores each attempt's label against the median of
the same op's *other* quiet attempts. For the spread limit and for several drift limits it reports
the share of attempts accepted and the mean label error of those accepted and those rejected: a
criterion is worth its re-measurements when the rejected attempts are clearly worse than the
accepted ones. Prints a table and writes ``bench/results/attempt_criteria.json``. Run it with
the farm stopped.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agent._measure_child import _Timer
from agent.builder import build_op_model
from agent.environment import cpu_signature
from agent.runner import CANARY_OP, latency_stats
from bench import write_results
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings
from models.opspace import sample_configs

RESULTS = Path(__file__).parent / "results" / "attempt_criteria.json"
OP_TYPES = ("conv2d", "depthwise_conv2d", "fully_connected", "add")
# Drift limits scored (|median of first half - median of second half| / median).
DRIFT_LIMITS = (0.01, 0.02, 0.03, 0.05)

console = Console()


def label_errors(attempts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each attempt with ``error``: its median against the median of the same op's other quiet
    attempts (None when the op has no other quiet attempt)."""
    by_op: dict[int, list[Mapping[str, Any]]] = {}
    for a in attempts:
        by_op.setdefault(int(a["op"]), []).append(a)
    scored = []
    for a in attempts:
        others = [o["median_ms"] for o in by_op[int(a["op"])] if o is not a and o["quiet"]]
        reference = statistics.median(others) if others else None
        error = None if reference is None else abs(a["median_ms"] / reference - 1.0)
        scored.append({**a, "error": error})
    return scored


def score(attempts: Sequence[Mapping[str, Any]], accept: Any) -> dict[str, Any]:
    """Share accepted and mean label error of accepted / rejected quiet, scored attempts."""
    scored = [a for a in attempts if a["quiet"] and a["error"] is not None]
    kept = [float(a["error"]) for a in scored if accept(a)]
    dropped = [float(a["error"]) for a in scored if not accept(a)]
    return {
        "attempts": len(scored),
        "accepted_share": len(kept) / len(scored) if scored else None,
        "accepted_error_pct": 100.0 * float(np.mean(kept)) if kept else None,
        "rejected_error_pct": 100.0 * float(np.mean(dropped)) if dropped else None,
        "accepted_over_5pct": float(np.mean(np.asarray(kept) > 0.05)) if kept else None,
        "rejected_over_5pct": float(np.mean(np.asarray(dropped) > 0.05)) if dropped else None,
    }


def criteria(attempts: Sequence[Mapping[str, Any]], max_spread: float) -> dict[str, Any]:
    rows: dict[str, Any] = {
        "all": score(attempts, lambda a: True),
        f"spread <= {max_spread:g}": score(attempts, lambda a: a["spread"] <= max_spread),
    }
    for limit in DRIFT_LIMITS:
        rows[f"drift <= {limit:g}"] = score(attempts, lambda a, lim=limit: a["drift"] <= lim)
    return rows


def measure(args: argparse.Namespace, core: int) -> list[dict[str, Any]]:
    settings = get_settings()
    ops = [(op, c) for op in OP_TYPES for c in sample_configs(op, args.per_type, args.seed)]
    console.print(f"building {len(ops)} op models")
    models = [build_op_model(op, config) for op, config in ops]
    timer = _Timer()
    timer.set_canary(build_op_model(*CANARY_OP), settings.threads)
    reference_ns: float | None = None
    attempts: list[dict[str, Any]] = []
    order = list(range(len(ops)))
    for round_ in range(args.rounds):
        random.Random(args.seed + round_).shuffle(order)
        for i in order:
            limit_ns = None if reference_ns is None else reference_ns * settings.max_canary_ratio
            reply = timer.time_invokes(
                models[i],
                settings.threads,
                settings.warmup_runs,
                settings.min_runs,
                settings.min_time_s,
                canary_runs=settings.canary_runs,
                canary_max_ns=None if limit_ns is None else int(limit_ns),
                canary_wait_s=settings.canary_wait_s,
            )
            canaries = [statistics.median(reply[k]) for k in ("canary_ns", "canary_after_ns")]
            reference_ns = min([*canaries] + ([reference_ns] if reference_ns else []))
            ratio = max(canaries) / reference_ns
            times = reply["times_ns"]
            stats = latency_stats(times, settings.max_spread, settings.max_drift)
            attempts.append(
                {
                    "op": i,
                    "op_type": ops[i][0],
                    "round": round_,
                    "median_ms": stats.median_ms,
                    "runs": stats.runs,
                    "spread": stats.spread,
                    "drift": stats.drift,
                    "canary_ratio": ratio,
                    "quiet": ratio <= settings.max_canary_ratio,
                }
            )
        console.print(f"round {round_ + 1}/{args.rounds} done")
    return attempts


def print_table(rows: Mapping[str, Mapping[str, Any]]) -> None:
    table = Table(title="attempt criteria: label error against the op's other quiet attempts")
    for column in ("accept when", "accepted", "error accepted", "rejected", ">5% acc / rej"):
        table.add_column(column, justify="right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}%"

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    for name, row in rows.items():
        table.add_row(
            name,
            share(row["accepted_share"]),
            pct(row["accepted_error_pct"]),
            pct(row["rejected_error_pct"]),
            f"{share(row['accepted_over_5pct'])} / {share(row['rejected_over_5pct'])}",
        )
    console.print(table)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-type", type=int, default=40, help="ops of each type")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    core = reserve_measurement_core(get_settings())
    attempts = label_errors(measure(args, core))
    rows = criteria(attempts, get_settings().max_spread)
    by_type = {
        op: criteria([a for a in attempts if a["op_type"] == op], get_settings().max_spread)
        for op in OP_TYPES
    }
    print_table(rows)
    document = {
        "started": started,
        "cpu": cpu_signature(core),
        "args": {k: str(v) for k, v in vars(args).items()},
        "criteria": rows,
        "by_op_type": by_type,
        "attempts": attempts,
    }
    write_results(args.out, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
