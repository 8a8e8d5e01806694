"""Every recorded accuracy run in one table (``python -m bench.runs``).

``bench.accuracy`` writes one results document per run (``bench/results/accuracy*.json``); this
script reads them all (or the files given), and prints one row per run, oldest first: when it
finished, the samples and device minutes of its campaign, the networks' MAPE and shares within
±5% and ±10% (``ours``, fastest round where the run measured rounds), and the cross-validated
MAPE of the three op types with the most samples (the mean of the repeated splits where the run
made them, as the README quotes it). A ``--skip-profile`` re-measurement shares its campaign's
columns; ``accuracy.json``, a copy of the latest run under its own name, is listed once. It
measures nothing; it writes the rows to ``bench/results/runs.json`` so that the README's figures
can be checked against the documents they came from.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import write_results

RESULTS_DIR = Path(__file__).parent / "results"
# Shown where a document lacks a figure.
MISSING = "-"
# The network targets: shares of networks within ±5% and ±10% (percent).
TARGET_WITHIN_5_PCT = 80.0
TARGET_WITHIN_10_PCT = 95.0
# Op types with a CV column (the three with the most samples in a default campaign) and their
# column headings.
CV_OP_TYPES = ("conv2d", "depthwise_conv2d", "fully_connected")
CV_HEADINGS = ("CV conv", "CV dw", "CV dense")


def run_row(name: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """One run's row from its results document (None where the document lacks a figure)."""
    run = document.get("run") or {}
    ours = (document.get("summary") or {}).get("ours") or {}
    cost = run.get("measurement_cost") or {}
    # The mean of the repeated CV splits (bench.accuracy --cv-splits) where there are any, else
    # the model version's own split.
    per_op = {**(run.get("per_op_type") or {}), **(run.get("per_op_type_splits") or {})}
    within_5, within_10 = ours.get("within_5_pct"), ours.get("within_10_pct")
    measuring_s = cost.get("measuring_s")
    return {
        "file": name,
        "finished_at": run.get("finished_at"),
        "samples": run.get("sample_count"),
        "measuring_min": None if measuring_s is None else float(measuring_s) / 60.0,
        "networks": ours.get("count"),
        "mape_pct": ours.get("mape_pct"),
        "within_5_pct": within_5,
        "within_10_pct": within_10,
        "max_error_pct": ours.get("max_error_pct"),
        "network_targets_met": None
        if within_5 is None or within_10 is None
        else bool(within_5 >= TARGET_WITHIN_5_PCT and within_10 >= TARGET_WITHIN_10_PCT),
        "cv_mape_pct": {
            op_type: None
            if (per_op.get(op_type) or {}).get("cv_mape") is None
            else 100.0 * float(per_op[op_type]["cv_mape"])
            for op_type in CV_OP_TYPES
        },
    }


def distinct_documents(paths: Sequence[Path]) -> list[tuple[str, Any]]:
    """``(name, document)`` of the results documents at ``paths``; of identical documents only
    the one with the longest name (``accuracy.json`` copies a named run)."""
    documents: dict[str, tuple[str, Any]] = {}
    for path in sorted(paths, key=lambda p: -len(p.stem)):
        text = path.read_text()
        documents.setdefault(text, (path.stem, json.loads(text)))
    return list(documents.values())


def collect(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Rows of the results documents at ``paths`` (:func:`distinct_documents`), oldest first
    (undated ones last)."""
    rows = [run_row(name, document) for name, document in distinct_documents(paths)]
    return sorted(rows, key=lambda r: (r["finished_at"] is None, str(r["finished_at"] or "")))


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return MISSING if value is None else f"{value:.{digits}f}{unit}"


HEADINGS = (
    "run",
    "finished (UTC)",
    "samples",
    "device min",
    "MAPE",
    "±5%",
    "±10%",
    "targets",
    *CV_HEADINGS,
)


def row_cells(r: Mapping[str, Any]) -> list[str]:
    """One run's cells, in :data:`HEADINGS` order, for both the console and Markdown tables."""
    met = r["network_targets_met"]
    return [
        str(r["file"]),
        str(r["finished_at"] or MISSING)[:16].replace("T", " "),
        MISSING if r["samples"] is None else str(r["samples"]),
        _fmt(r["measuring_min"]),
        _fmt(r["mape_pct"], unit="%"),
        _fmt(r["within_5_pct"], 0, "%"),
        _fmt(r["within_10_pct"], 0, "%"),
        MISSING if met is None else ("met" if met else "missed"),
        *(_fmt(r["cv_mape_pct"][t], 2, "%") for t in CV_OP_TYPES),
    ]


def render(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="accuracy runs (networks: ours, fastest round)")
    for heading in HEADINGS:
        table.add_column(heading, no_wrap=heading == "run")
    for r in rows:
        table.add_row(*row_cells(r))
    return table


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table (the README's list of runs)."""
    lines = ["| " + " | ".join(HEADINGS) + " |", "|---" * len(HEADINGS) + "|"]
    for r in rows:
        first, *rest = row_cells(r)
        lines.append("| " + " | ".join([f"`{first}`", *rest]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runs", description=__doc__)
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="results documents (default: bench/results/accuracy*.json)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "runs.json")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    paths = list(args.files) or sorted(RESULTS_DIR.glob("accuracy*.json"))
    rows = collect(paths)
    if args.markdown:
        print(markdown(rows))
    else:
        Console(width=160).print(render(rows))
    write_results(
        args.out,
        {
            "targets": {
                "within_5_pct": TARGET_WITHIN_5_PCT,
                "within_10_pct": TARGET_WITHIN_10_PCT,
            },
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
