"""How many samples does a device need? Refit on random shares of its stored samples.

A campaign's cost is its sample count (device minutes grow with it), so this answers whether a
smaller one would have predicted the networks as well: it keeps each stored op sample with
probability ``fraction`` (the ``invoke_overhead`` samples always, there are a handful), fits the
time model on that share exactly as the fit worker does (quiet samples only), and predicts the
networks of an accuracy run (``bench/results/accuracy*.json``: names and measured latency) from
their cached flatbuffers. Each share below 1 is drawn with several seeds. Nothing is measured:
the device is not touched, so it runs while the device rests, on the database of the run.

    FDIOT_HOME=/tmp/bench5 python -m bench.learning_curve \\
        --results bench/results/accuracy_vm2_nopause.json --fractions 1 0.7 0.5 \\
        --out bench/results/learning_curve_vm2.json

``--minutes 30 20`` adds rows for device-time budgets instead of random shares: the samples the
run's campaign would have kept had it had that budget (``max_device_minutes``), replayed in the
order they were measured with the server's rule (each round stops at the sample whose
``measure_s`` crosses its share, ``server.jobs.planning.round_device_s``). The adaptive round's
configurations stay the ones planned from the whole first round.

Prints a table (samples, network MAPE, share within ±5% / ±10%, largest error, CV MAPE of the op
types with the most samples) and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import write_results
from bench.accuracy import error_summary, fetch_samples
from models.features import OpInstance
from models.timemodel import fit_device_model
from server.jobs.planning import round_device_s

console = Console()

JSON = dict[str, Any]

# Op types whose CV MAPE the table shows: the three with >= 200 samples in a default campaign.
SHOWN_OP_TYPES = ("conv2d", "depthwise_conv2d", "fully_connected")


@dataclass(frozen=True)
class Network:
    """A network of an accuracy run: its parsed ops and its measured latency (ms)."""

    name: str
    ops: Sequence[OpInstance]
    measured_ms: float


def thin(samples: Sequence[Mapping[str, Any]], fraction: float, seed: int) -> list[JSON]:
    """Each sample kept with probability ``fraction`` (seeded); the invoke-overhead ones always."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = random.Random(seed)
    return [
        dict(s)
        for s in samples
        if s["op_type"] == "invoke_overhead" or fraction == 1.0 or rng.random() < fraction
    ]


def budget_cut(
    samples: Sequence[Mapping[str, Any]],
    *,
    minutes: float,
    first_round_samples: int,
    adaptive_samples: int,
) -> list[JSON]:
    """The samples (in measurement order) a campaign with a budget of ``minutes`` would have
    measured: the first ``first_round_samples`` are its first round, the rest its adaptive round;
    each round keeps samples until their ``environment.measure_s`` reach its budget (the sample
    that crosses it is kept, as the agent keeps it)."""
    budget_s = minutes * 60.0
    first_s = round_device_s(budget_s, first_round_samples, adaptive_samples, adapted=False)
    assert first_s is not None
    kept: list[JSON] = []
    used_s = 0.0
    for position, sample in enumerate(samples):
        limit_s = first_s if position < first_round_samples else budget_s
        if used_s >= limit_s:
            continue
        used_s += float((sample.get("environment") or {}).get("measure_s") or 0.0)
        kept.append(dict(sample))
    return kept


def fit_and_predict(
    share: Sequence[Mapping[str, Any]], networks: Sequence[Network], cv: int = 5
) -> JSON:
    """Fit on ``share`` as the fit worker does and predict the networks: one row's figures."""
    model, metrics = fit_device_model(share, cv=cv, seed=0)
    errors_pct = [
        100.0 * (model.predict_network(net.ops).total_ms - net.measured_ms) / net.measured_ms
        for net in networks
    ]
    per_op = metrics.get("per_op_type") or {}
    return {
        "samples": len(share),
        "device_minutes": sum(
            float((s.get("environment") or {}).get("measure_s") or 0.0) for s in share
        )
        / 60.0,
        "networks": error_summary(errors_pct),
        "errors_pct": dict(zip((net.name for net in networks), errors_pct, strict=True)),
        "cv_mape_pct": {
            op: 100.0 * float(entry["cv_mape"])
            for op, entry in per_op.items()
            if entry.get("cv_mape") is not None
        },
        "cv_samples": {op: int(entry.get("samples", 0)) for op, entry in per_op.items()},
    }


def curve_point(
    samples: Sequence[Mapping[str, Any]],
    networks: Sequence[Network],
    *,
    fraction: float,
    seed: int,
    cv: int = 5,
) -> JSON:
    """Fit on one share of the samples and predict the networks: one row of the curve."""
    row = fit_and_predict(thin(samples, fraction, seed), networks, cv)
    return {"fraction": fraction, "seed": seed, **row}


def budget_rows(
    samples: Sequence[Mapping[str, Any]],
    networks: Sequence[Network],
    campaign: Mapping[str, Any],
    minutes: Sequence[float],
    cv: int = 5,
) -> list[JSON]:
    """One row per budget: the campaign of an accuracy run replayed with that budget."""
    adaptive = int(campaign.get("adaptive_samples") or 0) if campaign.get("adapted_at") else 0
    first = int(campaign["samples_requested"]) - adaptive
    rows = []
    for budget in minutes:
        share = budget_cut(
            samples, minutes=budget, first_round_samples=first, adaptive_samples=adaptive
        )
        row: JSON = {"budget_minutes": budget, "fraction": len(share) / len(samples), "seed": None}
        row.update(fit_and_predict(share, networks, cv))
        console.print(
            f"  budget {budget:g} min: {row['samples']} samples, network MAPE "
            f"{row['networks']['mape_pct']:.1f}%"
        )
        rows.append(row)
    return rows


def learning_curve(
    samples: Sequence[Mapping[str, Any]],
    networks: Sequence[Network],
    fractions: Sequence[float],
    seeds: int,
    cv: int = 5,
) -> list[JSON]:
    """Rows for each fraction (one seed for the whole set, ``seeds`` seeds for a share)."""
    rows = []
    for fraction in fractions:
        for seed in range(1 if fraction == 1.0 else seeds):
            row = curve_point(samples, networks, fraction=fraction, seed=seed, cv=cv)
            console.print(
                f"  {fraction:.2f} seed {seed}: {row['samples']} samples, network MAPE "
                f"{row['networks']['mape_pct']:.1f}%"
            )
            rows.append(row)
    return rows


def load_networks(results_path: Path) -> list[Network]:
    """The networks of an accuracy run, parsed from the zoo's cached flatbuffers."""
    from bench import zoo
    from models.features import parse_tflite

    document = json.loads(results_path.read_text())
    return [
        Network(n["name"], parse_tflite(zoo.build_tflite(n["name"])), float(n["measured_ms"]))
        for n in document["networks"]
        if n.get("measured_ms")
    ]


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="learning curve: a share of the stored samples, the same networks")
    for column in ("share", "seed", "samples", "device min", "MAPE %", "±5%", "±10%", "max %"):
        table.add_column(column, justify="right")
    for op in SHOWN_OP_TYPES:
        table.add_column(f"CV {op} %", justify="right")
    for row in rows:
        net = row["networks"]
        budget = row.get("budget_minutes")
        table.add_row(
            f"{budget:g} min" if budget is not None else f"{row['fraction']:.2f}",
            "-" if row["seed"] is None else str(row["seed"]),
            str(row["samples"]),
            f"{row['device_minutes']:.1f}",
            f"{net['mape_pct']:.1f}",
            f"{net['within_5_pct']:.0f}%",
            f"{net['within_10_pct']:.0f}%",
            f"{net['max_error_pct']:.1f}",
            *(
                "-"
                if op not in row["cv_mape_pct"]
                else f"{row['cv_mape_pct'][op]:.1f} ({row['cv_samples'][op]})"
                for op in SHOWN_OP_TYPES
            ),
        )
    console.print(table)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="an accuracy run's JSON")
    parser.add_argument("--device", type=int, default=1, help="device id in FDIOT_HOME's database")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.7, 0.5])
    parser.add_argument("--seeds", type=int, default=2, help="draws of each share below 1")
    parser.add_argument(
        "--minutes",
        type=float,
        nargs="*",
        default=[],
        help="device-time budgets to replay the run's campaign with (rows besides the shares)",
    )
    parser.add_argument("--cv", type=int, default=5, help="folds of the op-level CV")
    parser.add_argument("--out", type=Path, default=Path("bench/results/learning_curve.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from fdiot.settings import get_settings
    from fdiot.stack import ensure_stack

    args = parse_args(argv)
    ensure_stack(get_settings())  # the run's embedded PostgreSQL, if it is not up
    samples = fetch_samples(args.device)
    networks = load_networks(args.results)
    console.print(f"{len(samples)} stored samples, {len(networks)} networks from {args.results}")
    rows = learning_curve(samples, networks, args.fractions, args.seeds, args.cv)
    if args.minutes:
        campaign = json.loads(args.results.read_text())["run"]["campaign"]
        rows += budget_rows(samples, networks, campaign, args.minutes, args.cv)
    print_table(rows)
    document = {"results": str(args.results), "device": args.device, "rows": rows}
    write_results(args.out, document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
