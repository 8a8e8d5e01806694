"""Do networks slow down with the canary? ``python -m bench.speed_elasticity A.json B.json``.

``bench.accuracy`` scales every prediction by the speed state its network was timed in (the
agent's ``state_canary_ms`` over the model's reference canary), which assumes a network's time
moves in proportion to the canary, a small compute-bound 3x3 conv. Two results documents of the
same model measured at different speeds (a run and its ``--skip-profile`` repeat) test that per
network: the measured ratio B / A against the speed ratio B / A, and their **elasticity**
(measured - 1) / (speed - 1): 1 where the network moves with the canary, under 1 where it moves
less (time spent waiting on memory does not scale with the core's clock), over 1 where it moves
more. Nothing is measured; prints a table with each family's median and writes
``bench/results/speed_elasticity.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import write_results

RESULTS = Path(__file__).resolve().parent / "results" / "speed_elasticity.json"
# Speed ratios closer to 1 than this make the elasticity a ratio of two noise terms: a 1% speed
# change against a 2% label noise (bench.label_noise) reads as elasticity 2. The fifth VM's pair
# (2026-12-02) moved 1.12-1.35x.
MIN_SPEED_CHANGE = 0.05
console = Console()


def elasticities(
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]],
    key: str = "speed",
) -> list[dict[str, Any]]:
    """Per network in both documents' ``networks``: measured and speed ratios after / before and
    the elasticity (None where the speed moved by under :data:`MIN_SPEED_CHANGE`).

    ``key="speed"`` takes the speed state each network was timed in (the ``speed`` field);
    ``key="canary_ms"`` its own canary (``measurement.canary_ms``).
    """
    first = {n["name"]: n for n in before}
    rows: list[dict[str, Any]] = []
    for network in after:
        old = first.get(network["name"])
        if old is None or not old.get("measured_ms") or not network.get("measured_ms"):
            continue
        if key == "speed":
            old_speed, new_speed = old.get("speed"), network.get("speed")
        else:
            old_speed = (old.get("measurement") or {}).get(key)
            new_speed = (network.get("measurement") or {}).get(key)
        if not old_speed or not new_speed:
            continue
        measured_ratio = network["measured_ms"] / old["measured_ms"]
        speed_ratio = float(new_speed) / float(old_speed)
        moved = abs(speed_ratio - 1) >= MIN_SPEED_CHANGE
        rows.append(
            {
                "name": network["name"],
                "family": network.get("family"),
                "measured_ratio": measured_ratio,
                "speed_ratio": speed_ratio,
                "elasticity": (measured_ratio - 1) / (speed_ratio - 1) if moved else None,
            }
        )
    return rows


def by_family(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each family's median elasticity and how many networks it has one for."""
    families: dict[str, list[float]] = {}
    for row in rows:
        if row["elasticity"] is not None:
            families.setdefault(str(row["family"]), []).append(float(row["elasticity"]))
    return {
        family: {"median_elasticity": statistics.median(values), "networks": len(values)}
        for family, values in sorted(families.items())
    }


def same_model(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether two results documents predicted with the same model (device, version and training
    time in their ``run``): a speed is relative to its model's reference canary, so ratios of
    speeds from two models' runs say nothing."""

    def ident(document: Mapping[str, Any]) -> tuple[Any, ...]:
        run = document.get("run") or {}
        return (
            (run.get("device") or {}).get("id"),
            run.get("model_version"),
            run.get("trained_at"),
        )

    return ident(before) == ident(after)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed_elasticity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("before", type=Path, help="a bench.accuracy results document")
    parser.add_argument("after", type=Path, help="the same model's networks at another speed")
    parser.add_argument("--key", choices=("speed", "canary_ms"), default="speed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text())
    after = json.loads(args.after.read_text())
    if not same_model(before, after):
        console.print(
            f"[red]{args.before} and {args.after} were predicted by different models "
            "(device, model_version or trained_at differ): their speeds are not comparable"
        )
        return 2
    rows = elasticities(before["networks"], after["networks"], key=args.key)
    families = by_family(rows)

    table = Table(title=f"Network time against {args.key} ({args.after.name} / {args.before.name})")
    for column in ("network", "family", "measured x", "speed x", "elasticity"):
        table.add_column(column, justify="left" if column in ("network", "family") else "right")
    for row in rows:
        elasticity = row["elasticity"]
        table.add_row(
            row["name"],
            str(row["family"]),
            f"{row['measured_ratio']:.3f}",
            f"{row['speed_ratio']:.3f}",
            "-" if elasticity is None else f"{elasticity:.2f}",
        )
    console.print(table)
    for family, figures in families.items():
        console.print(
            f"{family}: median elasticity {figures['median_elasticity']:.2f} "
            f"({figures['networks']} networks)"
        )
    write_results(
        args.out,
        {
            "before": str(args.before),
            "after": str(args.after),
            "key": args.key,
            "min_speed_change": MIN_SPEED_CHANGE,
            "families": families,
            "networks": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
