"""Is the reload rate's spread between campaigns the probes' sampling, or the host's state?

A network whose weights exceed the cache pays :attr:`models.timemodel.DeviceTimeModel.
reload_ms_per_param_byte` per weight byte of its ops, fitted from the campaign's ``conv_chain``
probes beyond the cache (:func:`models.timemodel.reload_rate_from_probes`); how many probes a
campaign draws is a choice (``models.opspace``). If campaigns of one device disagree on the rate
because each drew only 11-21 probes there, more probes would settle it; if each campaign's rate is
tight and they still disagree, the host's memory system was in another state (neighbours'
traffic in the shared L3 and memory) and more probes would not help. Each campaign dump is fitted
as the fit worker fits it, then its probes beyond the cache are resampled with replacement
(``--resamples``, the probes within the cache kept) and the rate refitted: the bootstrap standard
deviation and 90% interval against the rates of the other campaigns. Nothing is measured.

    python -m bench.reload_spread --samples /work/dumps/vm5.json /work/dumps/vm5_second.json \\
        --out bench/results/reload_spread.json

Prints a table and writes it as JSON (ps per byte: 1e-9 ms per byte).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import write_results
from models.timemodel import (
    ChainProbe,
    DeviceTimeModel,
    chain_probe_times,
    chain_reload_bytes,
    fit_device_model,
    fitting_samples,
    reload_rate_from_probes,
)
from worker.fitting import CV_FOLDS

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_RESAMPLES = 1000
PS_PER_MS = 1e9


def bootstrap_rates(
    probes: Sequence[ChainProbe], model: DeviceTimeModel, resamples: int, seed: int = 0
) -> list[float]:
    """The reload rate (ps per byte) refitted on ``resamples`` resamplings with replacement of
    the probes beyond ``model.cache_bytes``, those within it kept as they are."""
    if model.cache_bytes is None:
        return []
    cache_bytes = model.cache_bytes
    beyond = [p for p in probes if chain_reload_bytes(p.param_bytes, cache_bytes) > 0]
    within = [p for p in probes if chain_reload_bytes(p.param_bytes, cache_bytes) == 0]
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(resamples if beyond else 0):
        drawn = [beyond[i] for i in rng.integers(0, len(beyond), len(beyond))]
        rate = reload_rate_from_probes(drawn + within, model)["ms_per_param_byte"]
        if rate is not None:
            rates.append(rate * PS_PER_MS)
    return rates


def campaign_row(name: str, samples: Sequence[Any], resamples: int) -> dict[str, Any]:
    """One campaign: its fitted rate, probes beyond the cache and the rate's bootstrap spread."""
    model, metrics = fit_device_model(samples, cv=CV_FOLDS)
    kept, _, _ = fitting_samples(samples)
    probes = chain_probe_times(
        [s for s in kept if s["op_type"] == "conv_chain"],
        model,
        [s for s in kept if s["op_type"] == "conv2d"],
    )
    rates = bootstrap_rates(probes, model, resamples)
    rate = model.reload_ms_per_param_byte
    return {
        "campaign": name,
        "cache_bytes": model.cache_bytes,
        "probes": len(probes),
        "probes_beyond_cache": metrics["weight_reload"]["probes_beyond_cache"],
        "rate_ps_per_byte": None if rate is None else rate * PS_PER_MS,
        "bootstrap_sd_ps_per_byte": float(np.std(rates)) if rates else None,
        "bootstrap_90pct_ps_per_byte": (
            [float(np.quantile(rates, 0.05)), float(np.quantile(rates, 0.95))] if rates else None
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, nargs="+", required=True, help="campaign dumps")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "reload_spread.json")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'campaign':<24}{'probes':>8}{'beyond':>8}{'rate ps/B':>11}{'boot sd':>9}"
          f"{'90% interval':>16}")  # fmt: skip
    for path in args.samples:
        row = campaign_row(path.name, json.loads(path.read_text()), args.resamples)
        rows.append(row)
        rate, sd, band = (row[k] for k in ("rate_ps_per_byte", "bootstrap_sd_ps_per_byte",
                                           "bootstrap_90pct_ps_per_byte"))  # fmt: skip
        shown = "-" if band is None else f"{band[0]:.1f}-{band[1]:.1f}"
        print(f"{row['campaign']:<24}{row['probes']:>8}{row['probes_beyond_cache']:>8}"
              f"{'-' if rate is None else f'{rate:.1f}':>11}"
              f"{'-' if sd is None else f'{sd:.1f}':>9}{shown:>16}", flush=True)  # fmt: skip
    rates = [r["rate_ps_per_byte"] for r in rows if r["rate_ps_per_byte"] is not None]
    sds = [r["bootstrap_sd_ps_per_byte"] for r in rows if r["bootstrap_sd_ps_per_byte"] is not None]
    summary: dict[str, Any] = {
        "campaigns": len(rows),
        "rate_range_ps_per_byte": [min(rates), max(rates)] if rates else None,
        "median_bootstrap_sd_ps_per_byte": float(np.median(sds)) if sds else None,
    }
    if rates and sds:
        print(f"rates between campaigns: {min(rates):.1f}-{max(rates):.1f} ps/B; median bootstrap "
              f"sd within one: {np.median(sds):.1f} ps/B")  # fmt: skip
    write_results(args.out, {"resamples": args.resamples, "campaigns": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
