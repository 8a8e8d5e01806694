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

from bench.accuracy import error_summary, fetch_samples
from models.features import OpInstance
from models.timemodel import fit_device_model

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


def curve_point(
    samples: Sequence[Mapping[str, Any]],
    networks: Sequence[Network],
    *,
    fraction: float,
    seed: int,
    cv: int = 5,
) -> JSON:
    """Fit on one share of the samples and predict the networks: one row of the curve."""
    share = thin(samples, fraction, seed)
    model, metrics = fit_device_model(share, cv=cv, seed=0)
    errors_pct = [
        100.0 * (model.predict_network(net.ops).total_ms - net.measured_ms) / net.measured_ms
        for net in networks
    ]
    per_op = metrics.get("per_op_type") or {}
    return {
        "fraction": fraction,
        "seed": seed,
        "samples": len(share),
        "networks": error_summary(errors_pct),
        "errors_pct": dict(zip((net.name for net in networks), errors_pct, strict=True)),
        "cv_mape_pct": {
            op: 100.0 * float(entry["cv_mape"])
            for op, entry in per_op.items()
            if entry.get("cv_mape") is not None
        },
        "cv_samples": {op: int(entry.get("samples", 0)) for op, entry in per_op.items()},
    }


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
    for column in ("share", "seed", "samples", "MAPE %", "±5%", "±10%", "max %"):
        table.add_column(column, justify="right")
    for op in SHOWN_OP_TYPES:
        table.add_column(f"CV {op} %", justify="right")
    for row in rows:
        net = row["networks"]
        table.add_row(
            f"{row['fraction']:.2f}",
            str(row["seed"]),
            str(row["samples"]),
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
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"results": str(args.results), "device": args.device, "rows": rows}
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    console.print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
