"""Refit a campaign's stored samples offline and score them on the networks its run measured.

Nothing is measured; the device is not touched. First save the campaign's samples (``FDIOT_HOME``
of the run)::

    FDIOT_HOME=/tmp/bench4 python -m bench.pooled_cv --dump /tmp/campaign4.json

then refit them against the run's results document::

    FDIOT_HOME=/tmp/bench4 python -m bench.refit --samples /tmp/campaign4.json \\
        --results bench/results/accuracy.json --out bench/results/refit.json

The fit is the fit worker's (:func:`models.timemodel.fit_device_model`); the networks' ops are
parsed from the zoo's .tflite files (built or read from ``FDIOT_HOME/zoo``) and predicted
locally. Three variants of the network terms are scored, each against the run's measured latency
(its fastest round) and the median of its rounds, with :func:`bench.accuracy.error_summary`:

- ``fitted``: the model as the fit worker fits it;
- ``extra_one_pass``: the network extra curve without its robust passes (the form until
  2026-12-01: one least-squares fit over the probes within the cache);
- ``no_extra``: no network extra curve at all.

It answers "what did this term do on this campaign", from the campaign's own probes, without a
second run on a host whose speed moves between runs. Prints a table and writes it as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import write_results, zoo
from bench.accuracy import _error_pct, error_summary
from models.features import OpInstance, parse_tflite
from models.timemodel import (
    DeviceTimeModel,
    chain_extra_from_probes,
    chain_extra_knots,
    chain_probe_times,
    fit_device_model,
    fitting_samples,
)
from worker.fitting import CV_FOLDS

JSON = dict[str, Any]
VARIANTS = ("fitted", "extra_one_pass", "no_extra")


def variant_models(
    samples: Sequence[Mapping[str, Any]], *, cv: int, seed: int
) -> tuple[dict[str, DeviceTimeModel], dict[str, JSON]]:
    """The fitted model and its two variants (:data:`VARIANTS`), with each one's extra curve."""
    model, metrics = fit_device_model(samples, cv=cv, seed=seed)
    kept, _, _ = fitting_samples(samples)
    probes = chain_probe_times(
        [s for s in kept if s["op_type"] == "conv_chain"],
        model,
        [s for s in kept if s["op_type"] == "conv2d"],
    )
    one_pass = chain_extra_from_probes(probes, model, robust=False)
    models = {name: copy.copy(model) for name in VARIANTS}
    models["extra_one_pass"].chain_extra = chain_extra_knots(one_pass)
    models["no_extra"].chain_extra = None
    curves = {"fitted": metrics["chain_extra"], "extra_one_pass": one_pass, "no_extra": None}
    return models, curves


def zoo_ops(name: str) -> list[OpInstance]:
    """The ops of zoo network ``name`` (its .tflite built or read from ``FDIOT_HOME/zoo``)."""
    return parse_tflite(zoo.build_tflite(name))


def score(
    models: Mapping[str, DeviceTimeModel],
    networks: Sequence[Mapping[str, Any]],
    ops_of: Callable[[str], list[OpInstance]] = zoo_ops,
) -> tuple[dict[str, JSON], list[JSON]]:
    """Each variant's error summary against the fastest and the median round, and the rows."""
    rows: list[JSON] = []
    for network in networks:
        ops = ops_of(str(network["name"]))
        rounds = network.get("rounds_ms") or [network["measured_ms"]]
        median_ms = float(statistics.median(rounds))
        row: JSON = {
            "name": network["name"],
            "family": network.get("family"),
            "measured_ms": network["measured_ms"],
            "median_round_ms": median_ms,
            "predicted_ms": {},
            "error_pct": {},
            "median_round_error_pct": {},
        }
        for name, model in models.items():
            predicted = model.predict_network(ops).total_ms
            row["predicted_ms"][name] = predicted
            row["error_pct"][name] = _error_pct(predicted, float(network["measured_ms"]))
            row["median_round_error_pct"][name] = _error_pct(predicted, median_ms)
        rows.append(row)
    summary = {
        name: {
            "fastest_round": error_summary([r["error_pct"][name] for r in rows]),
            "median_round": error_summary([r["median_round_error_pct"][name] for r in rows]),
        }
        for name in models
    }
    return summary, rows


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(console: Console, summary: Mapping[str, JSON], curves: Mapping[str, Any]) -> None:
    table = Table(title="refit: networks against the run's measurements")
    for column in ("variant", "against", "MAPE %", "within 5 %", "within 10 %", "max %"):
        table.add_column(column, justify="left" if column in ("variant", "against") else "right")
    for name, by_label in summary.items():
        for label, s in by_label.items():
            table.add_row(
                name,
                label.replace("_", " "),
                _fmt(s["mape_pct"]),
                _fmt(s["within_5_pct"], ".0f"),
                _fmt(s["within_10_pct"], ".0f"),
                _fmt(s["max_error_pct"]),
            )
    console.print(table)
    for name, curve in curves.items():
        if curve and curve.get("ratio"):
            knots = ", ".join(
                f"{b / 1e6:.2f} MB {100 * r:+.1f}%"
                for b, r in zip(curve["param_bytes"], curve["ratio"], strict=True)
            )
            aside = curve.get("probes_set_aside", 0)
            console.print(f"{name}: extra curve {knots} ({curve['probes']} probes, {aside} aside)")
        else:
            console.print(f"{name}: no extra curve")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True, help="a pooled_cv --dump file")
    parser.add_argument("--results", type=Path, required=True, help="the run's accuracy JSON")
    parser.add_argument(
        "--cv", type=int, default=CV_FOLDS, help="folds of the fit's CV (the fit worker's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/refit.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    samples = json.loads(args.samples.read_text())
    networks = json.loads(args.results.read_text())["networks"]
    models, curves = variant_models(samples, cv=args.cv, seed=args.seed)
    summary, rows = score(models, networks)
    report(Console(), summary, curves)
    write_results(
        args.out,
        {
            "samples_file": str(args.samples),
            "results_file": str(args.results),
            "samples": len(samples),
            "summary": summary,
            "extra_curves": curves,
            "networks": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
