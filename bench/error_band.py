"""Does a prediction's error band hold on real networks? ``python -m bench.error_band``.

``POST /models/{device}/predict`` answers with ``expected_error_pct``
(:class:`models.timemodel.ErrorBand`): the op types' cross-validated MAPE weighted by their share
of the network's predicted op time. This script scores that band on the stored benchmark runs
(``bench/results/accuracy*.json``, or the files given): for every network of every run, the band
computed from the run's model version (its ``per_op_type`` CV MAPE and the network's
``predicted_by_op_type_ms``) against the network's measured error (``ours``, fastest round). Per
run: the networks, the median band, the MAPE, and the shares of networks whose absolute error
was within the band and within twice the band. It measures nothing; it writes
``bench/results/error_band.json``. Runs written before the per-op-type times were stored are
skipped.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import write_results
from bench.runs import RESULTS_DIR, distinct_documents
from models.timemodel import error_band, within_band_pct

# How many bands wide the looser coverage column is.
WIDE_BAND_FACTOR = 2.0


def network_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each network of one results document with its band and its measured error (%), for the
    networks that have both."""
    per_op_type = (document.get("run") or {}).get("per_op_type") or {}
    rows: list[dict[str, Any]] = []
    for network in document.get("networks") or []:
        by_type = network.get("predicted_by_op_type_ms")
        error = network.get("error_pct")
        if not by_type or error is None:
            continue
        band = error_band(by_type, per_op_type)
        if band.expected_error_pct is None:
            continue
        rows.append(
            {
                "name": network["name"],
                "expected_error_pct": band.expected_error_pct,
                "unvalidated_ms": band.unvalidated_ms,
                "error_pct": float(error),
            }
        )
    return rows


def coverage(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The band's coverage over ``rows`` (:func:`network_rows`)."""
    bands = [r["expected_error_pct"] for r in rows]
    errors = [r["error_pct"] for r in rows]
    return {
        "networks": len(rows),
        "median_band_pct": statistics.median(bands),
        "mape_pct": statistics.fmean(abs(e) for e in errors),
        "within_band_pct": within_band_pct(errors, bands),
        "within_wide_band_pct": within_band_pct(errors, bands, WIDE_BAND_FACTOR),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.error_band", description=__doc__)
    parser.add_argument(
        "files", nargs="*", type=Path, help="results documents (default: accuracy*.json)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "error_band.json")
    args = parser.parse_args(argv)
    paths = list(args.files) or sorted(RESULTS_DIR.glob("accuracy*.json"))
    runs: list[dict[str, Any]] = []
    for name, document in distinct_documents(paths):
        rows = network_rows(document)
        if rows:
            finished = (document.get("run") or {}).get("finished_at")
            runs.append({"file": name, "finished_at": finished, **coverage(rows), "rows": rows})
    runs.sort(key=lambda r: str(r["finished_at"] or ""))
    all_rows = [row for run in runs for row in run["rows"]]
    table = Table(title="error band against the measured network error (ours, fastest round)")
    for heading in ("run", "finished", "networks", "median band", "MAPE", "within band",
                    f"within {WIDE_BAND_FACTOR:g}x band"):  # fmt: skip
        table.add_column(heading, justify="left" if heading == "run" else "right")
    for run in [*runs, {"file": "all runs", "finished_at": None, **coverage(all_rows)}]:
        table.add_row(
            run["file"],
            str(run["finished_at"] or "")[:16].replace("T", " "),
            str(run["networks"]),
            f"{run['median_band_pct']:.1f}%",
            f"{run['mape_pct']:.1f}%",
            f"{run['within_band_pct']:.0f}%",
            f"{run['within_wide_band_pct']:.0f}%",
        )
    Console(width=140).print(table)
    write_results(
        args.out,
        {"wide_band_factor": WIDE_BAND_FACTOR, "all_runs": coverage(all_rows), "runs": runs},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
