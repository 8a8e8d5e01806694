"""Should labels be divided by the canary's slowdown? ``python -m bench.canary``.

The agent times a fixed conv (the canary) before every sample and stores its ratio to the quietest
canary time; a slow canary makes the agent re-measure. This script tests whether the ratio could
also *correct* a label: it draws stored samples whose canary said the core ran slow, and as a
control samples whose canary said it was quiet, re-measures each now in a fresh pinned child (the
farm's protocol) and compares, against that re-measurement, the error of the label as timed and of
the label divided by its canary ratio. Prints a table and writes ``bench/results/canary.json``. Run
it with the farm stopped, so nothing else measures on the core: it starts the embedded PostgreSQL of
``FDIOT_HOME`` if needed (``fdiot down`` stops it).
"""

from __future__ import annotations

import argparse
import random
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import write_results

RESULTS = Path(__file__).parent / "results" / "canary.json"
# Canary ratios that count as "slow" and as "quiet" when drawing the two groups.
SLOW_RATIO = 1.08
QUIET_RATIO = 1.03
# Op types whose samples are long enough (>= 0.05 ms) for 1-2% label noise: tiny element-wise
# ops carry the invoke overhead's jitter and would blur the comparison.
MIN_MEDIAN_MS = 0.05

console = Console()


def _pct(a: float, b: float) -> float:
    return 100.0 * abs(a - b) / b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.canary")
    parser.add_argument("--device", type=int, default=1)
    parser.add_argument("--per-group", type=int, default=60, help="samples re-measured per group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from agent.builder import build_op_model
    from agent.runner import MeasurementChild, MeasurementError
    from bench.accuracy import fetch_samples
    from fdiot.settings import get_settings
    from fdiot.stack import ensure_stack

    settings = get_settings()
    ensure_stack(settings)
    samples = [
        s
        for s in fetch_samples(args.device)
        if (s["environment"] or {}).get("canary_ratio") is not None
        and s["op_type"] != "invoke_overhead"
        and s["median_ms"] >= MIN_MEDIAN_MS
    ]
    rng = random.Random(args.seed)
    groups = {
        "slow": [s for s in samples if s["environment"]["canary_ratio"] >= SLOW_RATIO],
        "quiet": [s for s in samples if s["environment"]["canary_ratio"] <= QUIET_RATIO],
    }
    rows: list[dict[str, Any]] = []
    with MeasurementChild(settings) as child:
        for group, members in groups.items():
            for s in rng.sample(members, min(args.per_group, len(members))):
                try:
                    now = child.measure(build_op_model(s["op_type"], s["config"]))
                except MeasurementError as error:
                    console.print(f"[red]{s['op_type']} {s['config']}: {error}")
                    continue
                reference_ms = now.median_ms
                rows.append(
                    {
                        "group": group,
                        "op_type": s["op_type"],
                        "config": s["config"],
                        "canary_ratio": s["environment"]["canary_ratio"],
                        "as_timed_ms": s["median_ms"],
                        "corrected_ms": s["median_ms"] / s["environment"]["canary_ratio"],
                        "remeasured_ms": reference_ms,
                        "remeasured_canary_ratio": now.canary_ratio,
                    }
                )
    summary: dict[str, Any] = {}
    table = Table(title="Stored labels vs a quiet re-measurement (median abs. error %)")
    for column in ("group", "samples", "canary ratio", "as timed", "corrected"):
        table.add_column(column, justify="right")
    for group in groups:
        members = [r for r in rows if r["group"] == group]
        if not members:
            continue
        as_timed = [_pct(r["as_timed_ms"], r["remeasured_ms"]) for r in members]
        corrected = [_pct(r["corrected_ms"], r["remeasured_ms"]) for r in members]
        summary[group] = {
            "samples": len(members),
            "median_canary_ratio": statistics.median(r["canary_ratio"] for r in members),
            "median_error_as_timed_pct": statistics.median(as_timed),
            "median_error_corrected_pct": statistics.median(corrected),
            "mean_error_as_timed_pct": statistics.fmean(as_timed),
            "mean_error_corrected_pct": statistics.fmean(corrected),
        }
        table.add_row(
            group,
            str(len(members)),
            f"{summary[group]['median_canary_ratio']:.2f}",
            f"{summary[group]['median_error_as_timed_pct']:.1f}",
            f"{summary[group]['median_error_corrected_pct']:.1f}",
        )
    console.print(table)
    document = {
        "run": {
            "date": datetime.now(UTC).isoformat(),
            "device": args.device,
            "home": str(settings.home),
        },
        "summary": summary,
        "rows": rows,
    }
    write_results(args.out, document, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
