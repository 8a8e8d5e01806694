"""Should labels be divided by the canary's slowdown? ``python -m bench.canary``.

The agent times a fixed conv (the canary) before every sample and stores its ratio to the quietest
canary time; a slow canary makes the agent re-measure. This script tests whether the ratio could
also *correct* a label: it draws stored samples whose canary said the core ran slow, and as a
control samples whose canary said it was quiet, re-measures each now in a fresh pinned child (the
farm's protocol) and compares, against that re-measurement, the error of the label as timed and of
the label divided by its canary ratio. Prints a table and writes ``bench/results/canary.json``. Run
it with the farm stopped, so nothing else measures on the core: it starts the embedded PostgreSQL of
``FDIOT_HOME`` if needed (``fdiot down`` stops it).

A host can also change speed for tens of minutes (the third development VM, 2026-11-30: its
canary 0.109-0.123 ms at 21:35, 0.132-0.160 ms from 22:08 on, with nothing else running). Then
the re-measurement is not a quiet reference but one at another speed, and the question is
whether a label follows the canary across the shift: the column "scaled" is the label times the
canary's time now over its time then (each sample stores its canary in ms), against the
re-measurement; the summary gives the host's shift (median canary now / then) and the labels'.
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


def _median_pct(ratios: list[float]) -> float | None:
    """The median of ``ratios`` as a change in percent (1.32 -> 32.0); None when empty."""
    return 100.0 * (statistics.median(ratios) - 1.0) if ratios else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def scaled_ms(
    as_timed_ms: float, canary_then_ms: float | None, canary_now_ms: float | None
) -> float | None:
    """A label timed when the canary took ``canary_then_ms``, scaled to the host's speed when it
    takes ``canary_now_ms``; None without both canaries."""
    if not canary_then_ms or canary_now_ms is None:
        return None
    return as_timed_ms * canary_now_ms / canary_then_ms


def group_summary(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Errors of one group's stored labels against their re-measurement: as timed, divided by
    their canary ratio, and scaled by the canary's time now over then (the host's shift)."""
    as_timed = [_pct(r["as_timed_ms"], r["remeasured_ms"]) for r in members]
    corrected = [_pct(r["corrected_ms"], r["remeasured_ms"]) for r in members]
    with_shift = [r for r in members if r["scaled_ms"] is not None]
    scaled = [_pct(r["scaled_ms"], r["remeasured_ms"]) for r in with_shift]
    return {
        "samples": len(members),
        "median_canary_ratio": statistics.median(r["canary_ratio"] for r in members),
        "median_error_as_timed_pct": statistics.median(as_timed),
        "median_error_corrected_pct": statistics.median(corrected),
        "mean_error_as_timed_pct": statistics.fmean(as_timed),
        "mean_error_corrected_pct": statistics.fmean(corrected),
        "median_host_shift_pct": _median_pct(
            [r["canary_now_ms"] / r["canary_then_ms"] for r in with_shift]
        ),
        "median_label_shift_pct": _median_pct(
            [r["remeasured_ms"] / r["as_timed_ms"] for r in with_shift]
        ),
        "median_error_scaled_pct": statistics.median(scaled) if scaled else None,
        "mean_error_scaled_pct": statistics.fmean(scaled) if scaled else None,
    }


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
                then_canary_ms = s["environment"].get("canary_ms")
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
                        "canary_then_ms": then_canary_ms,
                        "canary_now_ms": now.canary_ms,
                        "scaled_ms": scaled_ms(s["median_ms"], then_canary_ms, now.canary_ms),
                    }
                )
    summary: dict[str, Any] = {}
    table = Table(title="Stored labels vs a quiet re-measurement (median abs. error %)")
    for column in (
        "group",
        "samples",
        "canary ratio",
        "as timed",
        "corrected",
        "host shift",
        "label shift",
        "scaled",
    ):
        table.add_column(column, justify="right")
    for group in groups:
        members = [r for r in rows if r["group"] == group]
        if not members:
            continue
        summary[group] = group_summary(members)
        table.add_row(
            group,
            str(len(members)),
            f"{summary[group]['median_canary_ratio']:.2f}",
            f"{summary[group]['median_error_as_timed_pct']:.1f}",
            f"{summary[group]['median_error_corrected_pct']:.1f}",
            _fmt(summary[group]["median_host_shift_pct"], "+.1f"),
            _fmt(summary[group]["median_label_shift_pct"], "+.1f"),
            _fmt(summary[group]["median_error_scaled_pct"], ".1f"),
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
