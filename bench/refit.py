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

Several ``--samples`` dumps are pooled, as the fit worker pools every campaign of a device (a
second ``fdiot profile`` adds to the first): "would this run's networks have been predicted
better had the device been profiled twice?". Each network's speed is then taken again against
the pooled fit's reference canary (:func:`at_reference`), which can be quieter than the run's.

Predictions are made at the model's reference speed and scaled as bench.accuracy scales them: the
fastest round by its ``speed``, and for the median round each round is carried to the reference
speed by its own speed (``rounds_speed``). Results written before bench.accuracy stored
``rounds_speed`` get it from the run's benchmark jobs with ``--round-speeds`` (read from the
PostgreSQL of ``FDIOT_HOME``); without it every round takes the fastest round's speed.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import read_json, write_results, zoo
from bench.accuracy import _error_pct, error_summary, median_round_at_reference_ms, query_rows
from models import timemodel
from models.features import OpInstance, parse_tflite
from models.timemodel import (
    DEFAULT_MAX_CANARY_RATIO,
    DeviceTimeModel,
    chain_extra_from_probes,
    chain_extra_knots,
    chain_probe_times,
    fit_device_model,
    fitting_samples,
    speed_at,
)
from worker.fitting import CV_FOLDS

JSON = dict[str, Any]
VARIANTS = ("fitted", "extra_one_pass", "no_extra")


# How a sample timed in several loads is labelled: the fastest load's median (what the agent
# stored until 2026-12-03), the first load's (what one load gives), their mean.
LOAD_LABELS = ("stored", "fastest", "first", "mean")


def load_labels(samples: Sequence[Mapping[str, Any]], how: str) -> tuple[list[JSON], int]:
    """The samples with each one timed in several loads (``load_medians_ms`` in its
    environment, ``settings.near_cache_loads``) labelled ``how`` (:data:`LOAD_LABELS`; "stored"
    leaves the labels as stored). Returns the copies and how many were relabelled."""
    if how not in LOAD_LABELS:
        raise ValueError(f"load label {how!r}: one of {LOAD_LABELS}")
    out: list[JSON] = []
    changed = 0
    for sample in samples:
        medians = [float(m) for m in (sample.get("environment") or {}).get("load_medians_ms") or []]
        if len(medians) < 2 or how == "stored":
            out.append(dict(sample))
            continue
        label = {"fastest": min(medians), "first": medians[0], "mean": sum(medians) / len(medians)}[
            how
        ]
        out.append(with_label(sample, label))
        changed += 1
    return out, changed


def with_label(sample: Mapping[str, Any], label_ms: float) -> JSON:
    """A copy of ``sample`` whose label (``latency.median_ms`` and any flat ``median_ms``, what
    :func:`models.timemodel.sample_latency_ms` reads) is ``label_ms``."""
    copy_ = copy.deepcopy(dict(sample))
    if isinstance(copy_.get("latency"), dict):
        copy_["latency"]["median_ms"] = label_ms
    if "median_ms" in copy_:
        copy_["median_ms"] = label_ms
    return copy_


# Which statistic of each sample's timed runs is its label, and of each network round's invokes
# its latency: the median (what the farm fits and bench.accuracy scores), or the 10th percentile,
# the time with less of what a neighbour adds (stored beside the median since the first run).
LABELS = ("median", "p10")


def p10_labels(samples: Sequence[Mapping[str, Any]]) -> tuple[list[JSON], int]:
    """The samples labelled by their runs' 10th percentile (``p10_ms``) instead of the median;
    returns the copies and how many had one. Several loads (``load_medians_ms``) are not
    relabelled again: the stored p10 is the kept load's."""
    out: list[JSON] = []
    changed = 0
    for sample in samples:
        latency = sample.get("latency")
        p10 = latency.get("p10_ms") if isinstance(latency, Mapping) else None
        p10 = sample.get("p10_ms", p10)
        if p10 is None:
            out.append(dict(sample))
            continue
        out.append(with_label(sample, float(p10)))
        changed += 1
    return out, changed


def p10_networks(networks: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """The networks of a results document measured by each round's 10th percentile of invokes:
    ``measured_ms`` the fastest round's ``p10_ms``, ``rounds_ms`` each round's (the fastest
    round's is stored on the network, the others' in ``rounds_measurement``). A network without
    a p10 is left out."""
    out: list[JSON] = []
    for network in networks:
        if network.get("p10_ms") is None:
            continue
        copy_ = copy.deepcopy(dict(network))
        copy_["measured_ms"] = float(network["p10_ms"])
        rounds = network.get("rounds_ms") or []
        measurements = network.get("rounds_measurement") or []
        p10s = [(m or {}).get("p10_ms") for m in measurements]
        if len(p10s) == len(rounds) and network["measured_ms"] in rounds:
            fastest = rounds.index(network["measured_ms"])
            p10s[fastest] = p10s[fastest] or network["p10_ms"]
        rounds_p10 = [float(v) for v in p10s if v is not None]
        copy_["rounds_ms"] = rounds_p10 if rounds and len(rounds_p10) == len(rounds) else None
        if copy_["rounds_ms"] is None:
            copy_.pop("rounds_speed", None)  # the median round is then the fastest one's p10
        out.append(copy_)
    return out


def pooled_samples(dumps: Sequence[Sequence[Mapping[str, Any]]]) -> list[JSON]:
    """The samples of several campaigns' dumps, in order, as the fit worker pools every sample of
    a device. A sample whose every stored field (job, index, label, environment) is also in an
    earlier dump (two dumps of one campaign, or of a home that holds the other's campaign too)
    raises ValueError."""
    earlier: set[str] = set()
    out: list[JSON] = []
    for dump in dumps:
        keys = [json.dumps(sample, sort_keys=True, default=str) for sample in dump]
        for key, sample in zip(keys, dump, strict=True):
            if key in earlier:
                raise ValueError(f"a {sample['op_type']} sample is in two dumps: {key[:200]}")
            out.append(dict(sample))
        earlier.update(keys)
    return out


def at_reference(networks: Sequence[Mapping[str, Any]], reference_canary_ms: float) -> list[JSON]:
    """The networks with each round's speed taken again against ``reference_canary_ms`` (the
    refit's, which is the quietest canary of its samples: pooled campaigns can have a quieter
    one than the run's model had). A network without its measured speed state keeps its speeds."""
    out: list[JSON] = []
    for network in networks:
        copy_ = copy.deepcopy(dict(network))
        measurement = network.get("measurement") or {}
        if measurement.get("state_canary_ms"):
            copy_["speed"] = speed_at(measurement, reference_canary_ms)
            rounds = network.get("rounds_measurement") or []
            if rounds and all((m or {}).get("state_canary_ms") for m in rounds):
                copy_["rounds_speed"] = [speed_at(m, reference_canary_ms) for m in rounds]
        out.append(copy_)
    return out


def cv_by_op_type(metrics: Mapping[str, Any]) -> JSON:
    """``{op_type: {"cv_mape", "samples"}}`` of a fit's metrics."""
    return {
        op: {"cv_mape": m.get("cv_mape"), "samples": m.get("samples")}
        for op, m in sorted((metrics.get("per_op_type") or {}).items())
    }


def variant_models(
    samples: Sequence[Mapping[str, Any]],
    *,
    cv: int,
    seed: int,
    max_canary_ratio: float | None = DEFAULT_MAX_CANARY_RATIO,
) -> tuple[dict[str, DeviceTimeModel], dict[str, Any]]:
    """The fitted model and its two variants (:data:`VARIANTS`), with each one's extra curve and
    (under ``"cv_by_op_type"``) the fit's cross-validated MAPE per op type. ``max_canary_ratio``
    is the fitter's disturbed-sample limit (None: only the agent's own flag)."""
    model, metrics = fit_device_model(samples, cv=cv, seed=seed, max_canary_ratio=max_canary_ratio)
    kept, _, _ = fitting_samples(samples, max_canary_ratio)
    probes = chain_probe_times(
        [s for s in kept if s["op_type"] == "conv_chain"],
        model,
        [s for s in kept if s["op_type"] == "conv2d"],
    )
    one_pass = chain_extra_from_probes(probes, model, robust=False)
    models = {name: copy.copy(model) for name in VARIANTS}
    models["extra_one_pass"].chain_extra = chain_extra_knots(one_pass)
    models["no_extra"].chain_extra = None
    curves = {
        "fitted": metrics["chain_extra"],
        "extra_one_pass": one_pass,
        "no_extra": None,
        "cv_by_op_type": cv_by_op_type(metrics),
        "reference_canary_ms": metrics.get("reference_canary_ms"),
    }
    return models, curves


def network_jobs() -> list[JSON]:
    """Every network benchmark job's model name and result, oldest first, read from the
    PostgreSQL of ``FDIOT_HOME`` (each round of a bench.accuracy run is one such job)."""
    return query_rows("SELECT model_name, result FROM jobs WHERE kind = 'network' ORDER BY id")


def attach_round_speeds(networks: Sequence[JSON], jobs: Sequence[Mapping[str, Any]]) -> int:
    """Give each network of a results document written before ``rounds_speed`` existed the speed
    of each of its rounds, from the benchmark jobs that timed them (matched by model name and
    median ms; the speed is the job's ``state_canary_ms`` over the model's reference canary,
    which is the fastest round's state over its ``speed``). Returns how many got them; a network
    with a round no job matches keeps the fastest round's speed for all."""
    states: dict[tuple[str, float], float] = {}
    for job in jobs:
        result = job.get("result") or {}
        state = (result.get("environment") or {}).get("state_canary_ms")
        if state and result.get("median_ms") is not None:
            states[(str(job.get("model_name")), float(result["median_ms"]))] = float(state)
    attached = 0
    for network in networks:
        measurement = network.get("measurement") or {}
        state, speed = measurement.get("state_canary_ms"), network.get("speed")
        if network.get("rounds_speed") or not state or not speed:
            continue
        reference_ms = float(state) / float(speed)
        name = f"{network['name']}.tflite"
        found = [states.get((name, float(ms))) for ms in network.get("rounds_ms") or []]
        if found and all(v is not None for v in found):
            network["rounds_speed"] = [float(v) / reference_ms for v in found if v is not None]
            attached += 1
    return attached


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
        # The model predicts the reference speed: scaled to the speed each round ran at (its
        # ``rounds_speed``; the fastest round's ``speed`` for results written before them, 1.0
        # for results written before speed states), as bench.accuracy scores it.
        speed = float(network.get("speed") or 1.0)
        rounds = network.get("rounds_ms") or [network["measured_ms"]]
        median_ms = median_round_at_reference_ms(rounds, network.get("rounds_speed"), speed)
        row: JSON = {
            "name": network["name"],
            "family": network.get("family"),
            "measured_ms": network["measured_ms"],
            "speed": speed,
            "median_round_at_reference_ms": median_ms,
            "predicted_ms": {},
            "error_pct": {},
            "median_round_error_pct": {},
        }
        for name, model in models.items():
            predicted = model.predict_network(ops).total_ms
            row["predicted_ms"][name] = predicted * speed
            row["error_pct"][name] = _error_pct(predicted * speed, float(network["measured_ms"]))
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


def add_smoothing_option(parser: argparse.ArgumentParser) -> None:
    """``--smoothing K [K ...]``: the M5 smoothing constants the refitted trees choose from."""
    parser.add_argument(
        "--smoothing",
        type=float,
        nargs="+",
        default=None,
        help=f"M5 smoothing constants the trees choose from (default: the fitter's, "
        f"{timemodel.TREE_SMOOTHING}); 0 fits the trees unsmoothed, as before 2026-12-03",
    )


def use_smoothing(values: Sequence[float] | None) -> list[float]:
    """Make the fitter's trees choose from ``values`` (None: keep its default); return the grid."""
    if values is not None:
        timemodel.TREE_SMOOTHING = tuple(values)  # read by make_regressor at each fit
    return list(timemodel.TREE_SMOOTHING)


def _ratio_or_none(text: str) -> float | None:
    """A ``--max-canary-ratio`` value: a ratio above 1, or ``none``."""
    if text.lower() == "none":
        return None
    value = float(text)
    if value <= 1.0:
        raise argparse.ArgumentTypeError("the ratio must be above 1 (or 'none')")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples",
        type=Path,
        nargs="+",
        required=True,
        help="pooled_cv --dump files; several are pooled, as the fit worker pools a device's "
        "campaigns",
    )
    parser.add_argument("--results", type=Path, required=True, help="the run's accuracy JSON")
    parser.add_argument(
        "--cv", type=int, default=CV_FOLDS, help="folds of the fit's CV (the fit worker's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--round-speeds",
        action="store_true",
        help="read each round's speed state from FDIOT_HOME's benchmark jobs (results written "
        "before bench.accuracy stored rounds_speed)",
    )
    parser.add_argument(
        "--load-label",
        choices=LOAD_LABELS,
        default="stored",
        help="label each sample timed in several loads by its fastest load, its first (what one "
        "load gives) or their mean (default: as stored)",
    )
    parser.add_argument(
        "--max-canary-ratio",
        type=_ratio_or_none,
        default=DEFAULT_MAX_CANARY_RATIO,
        help="leave out samples timed under a canary above this ratio of the campaign's "
        f"reference ('none': keep all the agent judged quiet; default {DEFAULT_MAX_CANARY_RATIO})",
    )
    parser.add_argument(
        "--label",
        choices=LABELS,
        default="median",
        help="label samples, and measure networks, by the median of their runs (the farm's) or "
        "by their 10th percentile; p10 needs --load-label stored",
    )
    add_smoothing_option(parser)
    parser.add_argument("--out", type=Path, default=Path("bench/results/refit.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.label == "p10" and args.load_label != "stored":
        raise SystemExit("--label p10 relabels the stored samples: leave --load-label stored")
    smoothing = use_smoothing(args.smoothing)
    samples = pooled_samples([read_json(path) for path in args.samples])
    samples, relabelled = load_labels(samples, args.load_label)
    if relabelled:
        Console().print(f"labelled by their {args.load_label} load(s): {relabelled} samples")
    networks = json.loads(args.results.read_text())["networks"]
    if args.label == "p10":
        samples, relabelled = p10_labels(samples)
        networks = p10_networks(networks)
        Console().print(f"labelled by their p10: {relabelled} samples, {len(networks)} networks")
    if args.round_speeds:
        attached = attach_round_speeds(networks, network_jobs())
        Console().print(f"round speeds from the benchmark jobs: {attached} of {len(networks)}")
    models, curves = variant_models(
        samples, cv=args.cv, seed=args.seed, max_canary_ratio=args.max_canary_ratio
    )
    cv = curves.pop("cv_by_op_type")
    reference_canary_ms = curves.pop("reference_canary_ms")
    if reference_canary_ms:
        networks = at_reference(networks, float(reference_canary_ms))
    Console().print(
        "CV MAPE: "
        + ", ".join(
            f"{op} {100 * m['cv_mape']:.2f}% ({m['samples']})"
            for op, m in cv.items()
            if m["cv_mape"] is not None and (m["samples"] or 0) >= 100
        )
    )
    summary, rows = score(models, networks)
    report(Console(), summary, curves)
    write_results(
        args.out,
        {
            "samples_files": [str(path) for path in args.samples],
            "results_file": str(args.results),
            "samples": len(samples),
            "reference_canary_ms": reference_canary_ms,
            "load_label": args.load_label,
            "label": args.label,
            "relabelled": relabelled,
            "smoothing": smoothing,
            "max_canary_ratio": args.max_canary_ratio,
            "cv_by_op_type": cv,
            "networks_with_round_speeds": sum(1 for n in networks if n.get("rounds_speed")),
            "summary": summary,
            "extra_curves": curves,
            "networks": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
