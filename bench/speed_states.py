"""Refit a campaign with and without speed states: ``python -m bench.speed_states``.

A host that changes speed as a whole for minutes (``models.timemodel.SPEED_STATE_WINDOW``) leaves
a campaign with labels timed at two or more speeds. Without speed states the fitter keeps the
samples timed near its reference canary and leaves the others out as disturbed; with them it
carries every sample timed in a steady state to the reference speed. Nothing is measured: this
refits a campaign dump (``python -m bench.pooled_cv --dump``) once per variant,

- ``off``: no speed states (the fitter until 2026-12-01);
- ``window_N``: speed states over N samples (15 is the default, 1 is each sample's own canary),

and reports per op type the cross-validated MAPE and samples each variant fits on, and, as the
comparison that does not change with the samples kept, the out-of-fold error of each variant on
the configurations that ``off`` fits (their labels as ``off`` has them: timed near the
reference speed). Prints a table and writes ``bench/results/speed_states.json``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import read_json, write_results
from models import timemodel
from models.opspace import config_key

RESULTS = Path(__file__).resolve().parent / "results" / "speed_states.json"
DEFAULT_WINDOWS = (1, 7, 15, 31)
DEFAULT_OP_TYPES = ("conv2d", "depthwise_conv2d", "fully_connected", "lstm", "gru")
console = Console()


@contextlib.contextmanager
def state_window(window: int) -> Iterator[None]:
    """Fit with ``window`` as the speed-state window, restored afterwards."""
    saved = timemodel.SPEED_STATE_WINDOW
    timemodel.SPEED_STATE_WINDOW = window
    try:
        yield
    finally:
        timemodel.SPEED_STATE_WINDOW = saved


def _oof(metrics: Mapping[str, Any]) -> dict[tuple[str, Any], tuple[float, float]]:
    """(op type, configuration) -> (label ms, out-of-fold prediction ms) of the first split."""
    out = {}
    for op_type, m in metrics["per_op_type"].items():
        for row in m.get("cv_predictions") or []:
            key = (op_type, config_key(row["config"]))
            out[key] = (float(row["measured_ms"]), float(row["predicted_ms"]))
    return out


def variant_metrics(
    samples: Sequence[Mapping[str, Any]], normalise: bool, cv_repeats: int
) -> dict[str, Any]:
    """One refit's metrics (with the first split's out-of-fold predictions)."""
    _, metrics = timemodel.fit_device_model(
        samples, cv=5, cv_repeats=cv_repeats, keep_predictions=True, speed_normalise=normalise
    )
    return metrics


def summarize(variants: Mapping[str, Mapping[str, Any]], op_types: Sequence[str]) -> dict[str, Any]:
    """Per variant: samples, CV MAPE per op type, and the out-of-fold MAPE on ``off``'s
    configurations against ``off``'s labels."""
    common = _oof(variants["off"])
    out: dict[str, Any] = {}
    for name, metrics in variants.items():
        oof = _oof(metrics)
        per_op: dict[str, Any] = {}
        for op_type in op_types:
            m = metrics["per_op_type"].get(op_type) or {}
            shared = [
                abs(oof[key][1] / label - 1.0)
                for key, (label, _) in common.items()
                if key[0] == op_type and key in oof
            ]
            per_op[op_type] = {
                "samples": m.get("samples"),
                "cv_mape": m.get("cv_mape"),
                "on_off_configs": float(np.mean(shared)) if shared else None,
                "off_configs_predicted": len(shared),
            }
        out[name] = {
            "samples": metrics["samples"],
            "disturbed": sum(metrics["disturbed_samples"].values()),
            "speed": metrics.get("speed"),
            "reference_canary_ms": metrics.get("reference_canary_ms"),
            "per_op_type": per_op,
        }
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def print_table(summary: Mapping[str, Any], op_types: Sequence[str]) -> None:
    table = Table(title="Speed states: CV MAPE % (samples) / out-of-fold MAPE % on off's configs")
    table.add_column("variant")
    table.add_column("samples", justify="right")
    table.add_column("disturbed", justify="right")
    for op_type in op_types:
        table.add_column(op_type, justify="right")
    for name, v in summary.items():
        cells = [name, str(v["samples"]), str(v["disturbed"])]
        for op_type in op_types:
            m = v["per_op_type"][op_type]
            cells.append(
                f"{_pct(m['cv_mape'])} ({m['samples'] or 0}) / {_pct(m['on_off_configs'])}"
            )
        table.add_row(*cells)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed_states", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--samples", type=Path, required=True, help="a pooled_cv --dump file")
    parser.add_argument("--windows", type=int, nargs="*", default=list(DEFAULT_WINDOWS))
    parser.add_argument("--op-types", nargs="*", default=list(DEFAULT_OP_TYPES))
    parser.add_argument("--cv-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    samples = read_json(args.samples)
    variants = {"off": variant_metrics(samples, False, args.cv_repeats)}
    for window in args.windows:
        with state_window(window):
            variants[f"window_{window}"] = variant_metrics(samples, True, args.cv_repeats)
        console.print(f"window {window}: {variants[f'window_{window}']['samples']} samples fitted")
    summary = summarize(variants, args.op_types)
    print_table(summary, args.op_types)
    write_results(
        args.out,
        {
            "samples_file": str(args.samples),
            "stored_samples": len(samples),
            "cv_repeats": args.cv_repeats,
            "variants": summary,
        },
        indent=2,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
