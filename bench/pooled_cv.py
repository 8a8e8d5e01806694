"""Would an op type's tree be better with more samples than one campaign gives? Pool campaigns.

A campaign's sample count per op type is a choice (``models.opspace.CAMPAIGN_WEIGHTS``). Whether
more samples would lower an op type's cross-validated MAPE, or whether it is held up by label
noise (``bench/label_noise.py``) or by what the trees can express, shows when several campaigns
of the same device are pooled: each campaign draws its configurations with its own seed, so two
campaigns are about twice the samples of one (from the same sampler, with each campaign's drift
between them). Nothing is measured; the device is not touched.

First save each campaign's samples (``FDIOT_HOME`` of the run, the farm started)::

    FDIOT_HOME=/tmp/bench14 python -m bench.pooled_cv --dump /tmp/campaign14.json

then pool them, in the given order, one more campaign per row::

    python -m bench.pooled_cv --samples /tmp/campaign14.json /tmp/campaign13.json ... \\
        --op-types depthwise_conv2d fully_connected --out bench/results/pooled_cv.json

Each row fits the op type's own samples as the fit worker does (:func:`models.timemodel.
fit_device_model`: quiet samples only, the invoke overhead from the pooled ``invoke_overhead``
samples) and cross-validates it with ``--cv`` folds, repeated ``--repeats`` times. Convs that
run as dense layers, which the fit worker adds to ``fully_connected``, are not pooled with it.
Prints a table and writes it as JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import read_json, write_json, write_results
from models.timemodel import fit_device_model
from server.jobs.planning import OVERHEAD_OP_TYPE

console = Console()

JSON = dict[str, Any]


def pooled_rows(
    campaigns: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    op_types: Sequence[str],
    cv: int,
    repeats: int,
) -> list[JSON]:
    """One row per op type and pool size: the first k campaigns pooled, k = 1..len(campaigns)."""
    rows: list[JSON] = []
    for op_type in op_types:
        for k in range(1, len(campaigns) + 1):
            pool = campaigns[:k]
            samples = [
                s for _, own in pool for s in own if s["op_type"] in (op_type, OVERHEAD_OP_TYPE)
            ]
            _, metrics = fit_device_model(samples, cv=cv, cv_repeats=repeats)
            per_op = metrics["per_op_type"].get(op_type, {})
            rows.append(
                {
                    "op_type": op_type,
                    "campaigns": [name for name, _ in pool],
                    "samples": per_op.get("samples", 0),
                    "cv_mape_pct": _pct(per_op.get("cv_mape")),
                    "cv_mape_splits_pct": [_pct(v) for v in per_op.get("cv_mape_splits", [])],
                    "disturbed_samples": metrics["disturbed_samples"],
                }
            )
            console.print(
                f"{op_type}: {k} campaign(s), {rows[-1]['samples']} samples, "
                f"CV MAPE {rows[-1]['cv_mape_pct']}%"
            )
    return rows


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100.0 * float(value), 2)


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="CV MAPE of pooled campaigns")
    for column in ("op type", "campaigns", "samples", "CV MAPE %", "splits %"):
        table.add_column(column, justify="left" if column == "op type" else "right")
    for row in rows:
        table.add_row(
            row["op_type"],
            str(len(row["campaigns"])),
            str(row["samples"]),
            "-" if row["cv_mape_pct"] is None else f"{row['cv_mape_pct']:.2f}",
            " / ".join(f"{v:.2f}" for v in row["cv_mape_splits_pct"] if v is not None),
        )
    console.print(table)


def dump_samples(path: Path, device: int, campaign: int | None = None) -> int:
    """Write the device's stored samples (from the farm of ``FDIOT_HOME``) to ``path``; with
    ``campaign``, only the samples that campaign's jobs measured (a home that profiled a device
    twice holds both campaigns; the fit worker pools them)."""
    from bench.accuracy import fetch_samples, query_rows
    from fdiot.settings import get_settings
    from fdiot.stack import ensure_stack

    ensure_stack(get_settings())
    samples = fetch_samples(device, fit_scope=False)
    if campaign is not None:
        rows = query_rows("SELECT id FROM jobs WHERE campaign_id = %s", (campaign,))
        samples = of_jobs(samples, {int(row["id"]) for row in rows})
    write_json(path, samples)
    return len(samples)


def of_jobs(samples: Sequence[JSON], job_ids: set[int]) -> list[JSON]:
    """The samples measured by one of ``job_ids``."""
    return [s for s in samples if s.get("job_id") in job_ids]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, nargs="*", default=[], help="campaign dumps")
    parser.add_argument("--dump", type=Path, help="write FDIOT_HOME's samples here and stop")
    parser.add_argument("--device", type=int, default=1, help="device id to dump")
    parser.add_argument("--campaign", type=int, help="dump only this campaign's samples")
    parser.add_argument("--op-types", nargs="+", default=["depthwise_conv2d"])
    parser.add_argument("--cv", type=int, default=5, help="folds of the CV")
    parser.add_argument("--repeats", type=int, default=2, help="CV splits, averaged")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pooled_cv.json"))
    args = parser.parse_args(argv)
    if args.dump is None and not args.samples:
        parser.error("give --samples FILE... to pool, or --dump FILE to save a campaign")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dump is not None:
        count = dump_samples(args.dump, args.device, args.campaign)
        console.print(f"wrote {count} samples to {args.dump}")
        return 0
    campaigns = [(str(p), read_json(p)) for p in args.samples]
    rows = pooled_rows(campaigns, args.op_types, args.cv, args.repeats)
    print_table(rows)
    write_results(
        args.out,
        {
            "campaigns": [{"file": name, "samples": len(s)} for name, s in campaigns],
            "cv": args.cv,
            "repeats": args.repeats,
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
