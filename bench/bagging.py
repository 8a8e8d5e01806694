"""How much of a network's error is the fit's own variance? Refit a stored campaign on subsets.

A tree re-grows when a few of its samples change: relabelling 7% of a campaign's samples moved
single networks by up to 17 points (README, "Latest"). This refits a campaign (a
``pooled_cv --dump`` file) ``--bags`` times, each on a random ``--fraction`` of its samples
(without replacement: the fitter counts a configuration measured twice once, so a bootstrap
with replacement would only subsample), scores each fit and the mean of their network
predictions (bagging) against the networks its run measured, beside the fit on all samples.
Nothing is measured; predictions are scaled to each network's speed as ``bench.refit`` does.

    python -m bench.bagging --samples bench/results/campaign_vm5_fifth.json.gz \\
        --results bench/results/accuracy_vm5_fifth.json --out bench/results/bagging_vm5_fifth.json

Prints a table and writes the figures (per network: each fit's error and the spread of the
bags' predictions, max / min - 1) as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import read_json, write_results
from bench.refit import add_smoothing_option, score, use_smoothing
from models import timemodel
from models.features import OpInstance
from models.timemodel import DeviceTimeModel, fit_device_model

JSON = dict[str, Any]
DEFAULT_BAGS = 5
DEFAULT_FRACTION = 0.8
# Folds of each fit's own cross-validation: its figures are not used here, 2 is the cheapest.
FIT_CV_FOLDS = 2


@dataclass
class _Total:
    total_ms: float


class BaggedModel:
    """The mean of several models' whole-network predictions (ms)."""

    def __init__(self, models: Sequence[DeviceTimeModel]) -> None:
        self.models = list(models)

    def predict_network(self, ops: Sequence[OpInstance]) -> _Total:
        return _Total(float(np.mean([m.predict_network(ops).total_ms for m in self.models])))


def subsets(count: int, bags: int, fraction: float, seed: int) -> list[np.ndarray]:
    """``bags`` sorted index arrays, each a random ``fraction`` of ``range(count)``."""
    rng = np.random.default_rng(seed)
    size = max(1, round(fraction * count))
    return [np.sort(rng.choice(count, size=size, replace=False)) for _ in range(bags)]


def run(
    samples: Sequence[Mapping[str, Any]],
    networks: Sequence[Mapping[str, Any]],
    *,
    bags: int,
    fraction: float,
    seed: int,
) -> JSON:
    """Fit on all samples and on each subset; score each and the bagged mean."""
    models: dict[str, Any] = {"all_samples": fit_device_model(samples, cv=FIT_CV_FOLDS)[0]}
    bag_names = []
    for i, index in enumerate(subsets(len(samples), bags, fraction, seed)):
        name = f"bag_{i + 1}"
        models[name] = fit_device_model([samples[j] for j in index], cv=FIT_CV_FOLDS)[0]
        bag_names.append(name)
    models["bagged"] = BaggedModel([models[n] for n in bag_names])
    summary, rows = score(models, networks)
    for row in rows:
        bag_ms = [row["predicted_ms"][n] for n in bag_names]
        row["bag_spread"] = max(bag_ms) / min(bag_ms) - 1.0 if min(bag_ms) > 0 else None
    spreads = [r["bag_spread"] for r in rows if r["bag_spread"] is not None]
    return {
        "bags": bags,
        "fraction": fraction,
        "seed": seed,
        "summary": summary,
        "bags_fastest_round": {
            key: float(np.mean([summary[n]["fastest_round"][key] for n in bag_names]))
            for key in ("mape_pct", "within_5_pct", "within_10_pct")
        },
        "median_bag_spread": float(np.median(spreads)) if spreads else None,
        "max_bag_spread": max(spreads) if spreads else None,
        "networks": rows,
    }


def report(console: Console, result: Mapping[str, Any]) -> None:
    table = Table(title=f"fits on {result['fraction']:.0%} subsets, {result['bags']} bags")
    for column in ("fit", "MAPE %", "within 5 %", "within 10 %", "max %"):
        table.add_column(column, justify="left" if column == "fit" else "right")
    for name, by_label in result["summary"].items():
        s = by_label["fastest_round"]
        table.add_row(
            name,
            f"{s['mape_pct']:.1f}",
            f"{s['within_5_pct']:.0f}",
            f"{s['within_10_pct']:.0f}",
            f"{s['max_error_pct']:.1f}",
        )
    console.print(table)
    mean = result["bags_fastest_round"]
    console.print(
        f"single bags on average: {mean['mape_pct']:.1f}% / {mean['within_5_pct']:.0f}% / "
        f"{mean['within_10_pct']:.0f}%; a network's prediction across the bags: median spread "
        f"{100 * result['median_bag_spread']:.1f}%, largest {100 * result['max_bag_spread']:.1f}%"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True, help="a pooled_cv --dump file")
    parser.add_argument("--results", type=Path, required=True, help="the run's accuracy JSON")
    parser.add_argument("--bags", type=int, default=DEFAULT_BAGS)
    parser.add_argument("--fraction", type=float, default=DEFAULT_FRACTION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-samples-leaf",
        type=int,
        default=None,
        help=f"smallest tree leaf for this run (default: the fitter's, "
        f"{timemodel.MIN_SAMPLES_LEAF}): does a larger leaf make the fits agree more?",
    )
    add_smoothing_option(parser)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bagging.json"))
    args = parser.parse_args(argv)
    if args.min_samples_leaf is not None:
        timemodel.MIN_SAMPLES_LEAF = args.min_samples_leaf  # read by make_regressor at each fit
    smoothing = use_smoothing(args.smoothing)
    if args.bags < 2 or not 0 < args.fraction < 1:
        parser.error("--bags must be at least 2 and --fraction within (0, 1)")
    samples = read_json(args.samples)
    networks = json.loads(args.results.read_text())["networks"]
    result = run(samples, networks, bags=args.bags, fraction=args.fraction, seed=args.seed)
    report(Console(), result)
    write_results(
        args.out,
        {
            "samples_file": str(args.samples),
            "results_file": str(args.results),
            "min_samples_leaf": timemodel.MIN_SAMPLES_LEAF,
            "smoothing": smoothing,
            **result,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
