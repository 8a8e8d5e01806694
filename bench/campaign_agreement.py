"""How well does the model predict an op, against measuring the same op again in another campaign?

An op type's cross-validated MAPE compares the model with labels measured once. Where two
campaigns of the same device measured the same configuration, the other campaign's label is a
prediction of this one's too: the best a model of the configuration alone could hope for, with
nothing but the host's drift between the two in it. This compares both on those configurations,
from stored campaign dumps (``python -m bench.pooled_cv --dump``); nothing is measured.

For every ordered pair of campaigns (A fitted, B re-measuring) and op type:

- ``common``: configurations A and B both fitted (quiet samples, fastest label per configuration:
  :func:`models.timemodel.fitting_samples`);
- ``remeasure_mape_pct``: mean ``|label_B / label_A - 1|``, B's label taken as the prediction;
- ``remeasure_shifted_mape_pct``: the same after dividing out the median ratio (the hosts' overall
  speed difference between the two campaigns), how far one label moves on its own;
- ``model_mape_pct``: mean ``|oof_A / label_A - 1|`` over the same configurations, the model's
  out-of-fold prediction from A's own cross-validation (:func:`models.timemodel.fit_device_model`
  with ``keep_predictions``);
- ``model_mape_all_pct``: the model's CV MAPE on all of A's samples of the op type (the figure the
  fit reports), for comparison.

Convolutions are split into ``conv2d`` with a 1x1 kernel (``conv2d/1x1``, a GEMM) and the rest
(``conv2d/kxk``), whose runtime kernels and errors differ. Convs that run as dense layers are
counted with ``fully_connected``, as the fit worker does. Prints a table and writes it as JSON::

    python -m bench.campaign_agreement --samples /tmp/c1.json /tmp/c2.json /tmp/c3.json \\
        --out bench/results/campaign_agreement.json
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import read_json, write_results
from models.opspace import config_key
from models.timemodel import (
    as_dense_sample,
    fit_device_model,
    fitting_samples,
    is_pointwise,
    sample_latency_ms,
)
from server.jobs.planning import OVERHEAD_OP_TYPE

console = Console()

JSON = dict[str, Any]
DEFAULT_OP_TYPES = ("conv2d", "depthwise_conv2d", "fully_connected")


def group_of(op_type: str, config: Mapping[str, Any]) -> str:
    """The row an op falls in: its op type, with conv2d split into 1x1 kernels and the rest."""
    if op_type != "conv2d":
        return op_type
    return "conv2d/1x1" if is_pointwise(config) else "conv2d/kxk"


# (op type as fitted, models.opspace.config_key of its config)
Key = tuple[str, tuple[tuple[str, Any], ...]]
# measured ms, out-of-fold predicted ms, config
Prediction = tuple[float, float, dict[str, Any]]


def fitted_labels(samples: Sequence[Mapping[str, Any]]) -> dict[Key, float]:
    """(op type as fitted, config key) -> the label the fit uses (ms, with the overhead)."""
    kept, _, _ = fitting_samples(samples)
    labels: dict[Key, float] = {}
    for sample in kept:
        moved = as_dense_sample(sample)
        key = (str(moved["op_type"]), config_key(moved.get("config", {})))
        labels[key] = sample_latency_ms(moved)
    return labels


def out_of_fold(
    samples: Sequence[Mapping[str, Any]], op_types: Sequence[str], cv: int
) -> dict[str, dict[tuple[tuple[str, Any], ...], Prediction]]:
    """The fit worker's cross-validation of ``op_types``: per op type, each sample's measured
    and out-of-fold predicted latency (ms) and its config, keyed by config."""
    wanted = set(op_types) | {OVERHEAD_OP_TYPE}
    # Dense-equivalent convs are fitted with fully_connected: keep them when that is asked for.
    own = [s for s in samples if s["op_type"] in wanted or as_dense_sample(s)["op_type"] in wanted]
    _, metrics = fit_device_model(own, cv=cv, keep_predictions=True)
    out: dict[str, dict[tuple[tuple[str, Any], ...], Prediction]] = {}
    for op_type in op_types:
        per_op = metrics["per_op_type"].get(op_type) or {}
        rows = per_op.get("cv_predictions") or []
        out[op_type] = {
            config_key(r["config"]): (r["measured_ms"], r["predicted_ms"], r["config"])
            for r in rows
        }
    return out


def _pct(values: Sequence[float]) -> float | None:
    return round(100.0 * statistics.fmean(values), 2) if values else None


def agreement_rows(
    campaigns: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    op_types: Sequence[str],
    cv: int,
) -> list[JSON]:
    """One row per ordered pair of campaigns (A fitted, B re-measuring) and op group."""
    labels = {name: fitted_labels(samples) for name, samples in campaigns}
    rows: list[JSON] = []
    for name_a, samples_a in campaigns:
        console.print(f"cross-validating {name_a} ...")
        fitted = out_of_fold(samples_a, op_types, cv)
        for name_b, _ in campaigns:
            if name_b == name_a:
                continue
            groups: dict[str, dict[str, list[float]]] = {}
            for op_type in op_types:
                for key, (measured, predicted, config) in fitted[op_type].items():
                    group = groups.setdefault(
                        group_of(op_type, config), {"ratio": [], "model": [], "all": []}
                    )
                    error = abs(predicted / measured - 1.0)
                    group["all"].append(error)
                    other = labels[name_b].get((op_type, key))
                    if other is not None:
                        group["ratio"].append(other / measured)
                        group["model"].append(error)
            for group_name, values in sorted(groups.items()):
                ratios = values["ratio"]
                shift = statistics.median(ratios) if ratios else 1.0
                rows.append(
                    {
                        "fitted": name_a,
                        "remeasured": name_b,
                        "group": group_name,
                        "common": len(ratios),
                        "shift_pct": round(100.0 * (shift - 1.0), 2),
                        "remeasure_mape_pct": _pct([abs(r - 1.0) for r in ratios]),
                        "remeasure_shifted_mape_pct": _pct([abs(r / shift - 1.0) for r in ratios]),
                        "model_mape_pct": _pct(values["model"]),
                        "model_mape_all_pct": _pct(values["all"]),
                        "samples": len(values["all"]),
                    }
                )
    return rows


def pooled(rows: Sequence[Mapping[str, Any]]) -> list[JSON]:
    """Per op group, all pairs together (means weighted by common configurations)."""
    out: list[JSON] = []
    for group in sorted({str(r["group"]) for r in rows}):
        own = [r for r in rows if r["group"] == group and r["common"]]
        total = sum(int(r["common"]) for r in own)
        if not total:
            continue

        def weighted(key: str, rows_: Sequence[Mapping[str, Any]] = own, n: int = total) -> float:
            return round(sum(float(r[key]) * int(r["common"]) for r in rows_) / n, 2)

        out.append(
            {
                "group": group,
                "pairs": len(own),
                "common": total,
                "remeasure_mape_pct": weighted("remeasure_mape_pct"),
                "remeasure_shifted_mape_pct": weighted("remeasure_shifted_mape_pct"),
                "model_mape_pct": weighted("model_mape_pct"),
            }
        )
    return out


def print_table(rows: Sequence[Mapping[str, Any]], summary: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="Model against a re-measurement in another campaign (MAPE %)")
    columns = ("fitted", "re-measured", "group", "common", "shift", "re-measure", "shifted",
               "model", "model, all")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value}"

    for row in rows:
        table.add_row(
            Path(str(row["fitted"])).stem,
            Path(str(row["remeasured"])).stem,
            str(row["group"]),
            str(row["common"]),
            cell(row["shift_pct"]),
            cell(row["remeasure_mape_pct"]),
            cell(row["remeasure_shifted_mape_pct"]),
            cell(row["model_mape_pct"]),
            f"{cell(row['model_mape_all_pct'])} ({row['samples']})",
        )
    console.print(table)
    total = Table(title="All pairs (weighted by common configurations)")
    for column in ("group", "pairs", "common", "re-measure", "shifted", "model"):
        total.add_column(column, justify="left" if column == "group" else "right")
    for row in summary:
        total.add_row(
            str(row["group"]),
            str(row["pairs"]),
            str(row["common"]),
            cell(row["remeasure_mape_pct"]),
            cell(row["remeasure_shifted_mape_pct"]),
            cell(row["model_mape_pct"]),
        )
    console.print(total)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, nargs="+", required=True, help="campaign dumps")
    parser.add_argument("--op-types", nargs="+", default=list(DEFAULT_OP_TYPES))
    parser.add_argument("--cv", type=int, default=5, help="folds of the CV")
    parser.add_argument("--out", type=Path, default=Path("bench/results/campaign_agreement.json"))
    args = parser.parse_args(argv)
    if len(args.samples) < 2:
        parser.error("give at least two campaign dumps of the same device")
    campaigns = [(str(p), read_json(p)) for p in args.samples]
    rows = agreement_rows(campaigns, args.op_types, args.cv)
    summary = pooled(rows)
    print_table(rows, summary)
    write_results(
        args.out,
        {
            "campaigns": [{"file": name, "samples": len(s)} for name, s in campaigns],
            "cv": args.cv,
            "op_types": list(args.op_types),
            "summary": summary,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
