"""How repeatable the op samples a model is fitted on are: the floor under its CV MAPE.

A model's cross-validated MAPE compares its predictions with labels measured once, at campaign
time. Re-measuring a random subset of a device's stored samples now, with the same protocol
(:class:`agent.runner.MeasurementChild`), shows how far a label moves on its own:

- ``shift``: the median of re-measured / stored, the host's speed now against campaign time;
- ``canary_shift``: the median of the canary (a fixed conv, timed around each attempt) now
  against the one stored with the sample: the same speed change as seen by the canary. When the
  two agree for every op type, a label can be carried to another host speed by its canary;
- ``normalised_re_mape``: mean ``|ratio / canary ratio - 1|``, how far a label moves once each
  sample's own canary ratio (not the op type's median) is divided out;
- ``re_mape``: mean ``|ratio / shift - 1|``, how far one label moves once that shift is removed;
- ``label_noise``: ``re_mape / sqrt(2)``, the noise of one measurement if the stored and the new
  one are independent and equally noisy (for normal errors ``E|X - Y| = sqrt(2) E|X|``). A model
  that predicted every op's true time exactly would still show about this CV MAPE.

Each op type is also split into quartiles of its working set (input + output + parameter bytes):
ops whose tensors fit the caches re-measure far closer than those that spill them.

Reads the samples from the farm's PostgreSQL (``--start`` runs ``fdiot up`` for the run; leave no
campaign running, as the agent measures on the same reserved core), or from a campaign dump
(``--samples``, ``python -m bench.pooled_cv --dump``; no farm needed). Prints a table and writes
``bench/results/label_noise.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.builder import build_op_model
from agent.runner import MeasurementChild
from bench import read_json, write_results
from bench.accuracy import fetch_samples, start_farm, stop_farm
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings
from models.timemodel import is_pointwise, quiet_samples, sample_latency_ms, working_set_bytes

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OP_TYPES = ("conv2d", "depthwise_conv2d", "fully_connected")
# Samples slower than this are skipped: a 100 ms depthwise sample would take most of the run.
DEFAULT_MAX_MS = 20.0
QUARTILES = 4


def pick(
    samples: Sequence[Mapping[str, Any]], op_types: Sequence[str], per_op: int, max_ms: float,
    seed: int,
) -> list[Mapping[str, Any]]:  # fmt: skip
    """``per_op`` quiet samples of each op type at most ``max_ms``, drawn at random."""
    rng = random.Random(seed)
    # As timed: the labels are compared with a re-measurement, not carried to a reference speed.
    kept, _ = quiet_samples(samples, speed_normalise=False)
    chosen: list[Mapping[str, Any]] = []
    for op_type in op_types:
        own = [s for s in kept if s["op_type"] == op_type and sample_latency_ms(s) <= max_ms]
        chosen += rng.sample(own, min(per_op, len(own)))
    return chosen


def _stats(ratios: Sequence[float], shift: float) -> dict[str, float]:
    moved = [abs(r / shift - 1.0) for r in ratios]
    re_mape = statistics.fmean(moved)
    return {
        "n": len(ratios),
        "re_mape": re_mape,
        "label_noise": re_mape / math.sqrt(2.0),
        "p90_moved": statistics.quantiles(moved, n=10)[-1] if len(moved) > 1 else moved[0],
    }


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per op type: shift, re-measure MAPE and label noise, overall and per working-set quartile.

    ``rows`` carry ``op_type``, ``stored_ms``, ``remeasured_ms`` and ``working_set_bytes``.
    """
    out: dict[str, Any] = {}
    for op_type in sorted({str(r["op_type"]) for r in rows}):
        own = sorted(
            (r for r in rows if r["op_type"] == op_type), key=lambda r: r["working_set_bytes"]
        )
        ratios = [float(r["remeasured_ms"]) / float(r["stored_ms"]) for r in own]
        shift = statistics.median(ratios)
        quartiles = []
        for q in range(QUARTILES):
            lo, hi = q * len(own) // QUARTILES, (q + 1) * len(own) // QUARTILES
            if lo == hi:
                continue
            quartiles.append(
                {
                    "working_set_bytes_min": own[lo]["working_set_bytes"],
                    "working_set_bytes_max": own[hi - 1]["working_set_bytes"],
                    **_stats(ratios[lo:hi], shift),
                }
            )
        out[op_type] = {"shift": shift, **_stats(ratios, shift), "quartiles": quartiles}
        canary_ratios = [
            float(r["remeasured_canary_ms"]) / float(r["stored_canary_ms"])
            for r in own
            if r.get("remeasured_canary_ms") and r.get("stored_canary_ms")
        ]
        if len(canary_ratios) == len(own):
            out[op_type]["canary_shift"] = statistics.median(canary_ratios)
            out[op_type]["normalised_re_mape"] = statistics.fmean(
                abs(r / c - 1.0) for r, c in zip(ratios, canary_ratios, strict=True)
            )
        # Convolutions also by kernel: a 1x1 kernel runs as a GEMM, the others through IGEMM.
        kernels: dict[str, list[float]] = {}
        for r, ratio in zip(own, ratios, strict=True):
            config = r.get("config") or {}
            if op_type == "conv2d" and "kw" in config:
                kernels.setdefault("1x1" if is_pointwise(config) else "kxk", []).append(ratio)
        if kernels:
            out[op_type]["kernels"] = {k: _stats(v, shift) for k, v in sorted(kernels.items())}
    return out


def remeasure(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Measure each sample's op again in a fresh child: stored and new median (ms)."""
    settings = get_settings()
    reserve_measurement_core(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = []
    with MeasurementChild(settings) as child:
        for i, sample in enumerate(samples, 1):
            model = build_op_model(sample["op_type"], sample["config"])
            stats = child.measure(model)
            rows.append(
                {
                    "op_type": sample["op_type"],
                    "config": sample["config"],
                    "working_set_bytes": working_set_bytes(sample.get("features") or {}),
                    "stored_ms": sample_latency_ms(sample),
                    "remeasured_ms": stats.median_ms,
                    "stored_canary_ms": (sample.get("environment") or {}).get("canary_ms"),
                    "remeasured_canary_ms": stats.canary_ms,
                }
            )
            if i % 20 == 0:
                print(f"{i}/{len(samples)} re-measured", flush=True)
    return rows


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def print_table(summary: Mapping[str, Any], cv_mape: Mapping[str, float]) -> None:
    print(f"{'op type':<18}{'working set MB':>18}{'n':>5}{'re-MAPE':>9}{'noise':>8}{'CV MAPE':>9}")
    for op_type, s in summary.items():
        cv = cv_mape.get(op_type)
        cv_text = f"{cv:.1%}" if cv is not None else "-"
        canary = (
            f", canary {s['canary_shift'] - 1:+.1%}, normalised re-MAPE "
            f"{s['normalised_re_mape']:.1%}"
            if "canary_shift" in s
            else ""
        )
        print(f"{op_type:<18}{'all':>18}{s['n']:>5}{s['re_mape']:>9.1%}{s['label_noise']:>8.1%}"
              f"{cv_text:>9}   (shift {s['shift'] - 1:+.1%}{canary})")  # fmt: skip
        for q in s["quartiles"]:
            span = f"{_mb(q['working_set_bytes_min'])}-{_mb(q['working_set_bytes_max'])}"
            print(f"{'':<18}{span:>18}{q['n']:>5}{q['re_mape']:>9.1%}{q['label_noise']:>8.1%}")
        for kernel, k in s.get("kernels", {}).items():
            print(f"{'':<18}{kernel + ' kernels':>18}{k['n']:>5}{k['re_mape']:>9.1%}"
                  f"{k['label_noise']:>8.1%}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.label_noise", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", type=int, default=1, help="device id whose samples to use")
    parser.add_argument("--op-types", nargs="*", default=list(DEFAULT_OP_TYPES))
    parser.add_argument("--per-op", type=int, default=60, help="samples re-measured per op type")
    parser.add_argument("--max-ms", type=float, default=DEFAULT_MAX_MS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", action="store_true", help="run `fdiot up` for the benchmark")
    parser.add_argument(
        "--samples",
        type=Path,
        help="a campaign dump (python -m bench.pooled_cv --dump) to draw from instead of the farm",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "label_noise.json")
    args = parser.parse_args(argv)
    if args.samples is not None:
        stored = read_json(args.samples)
        cv_mape: dict[str, float] = {}
    else:
        farm: subprocess.Popen[bytes] | None = start_farm(None) if args.start else None
        try:
            stored = fetch_samples(args.device)
            cv_mape = _latest_cv_mape(args.device)
        finally:
            if farm is not None:
                stop_farm(farm)
    if not stored:
        parser.error(f"device {args.device} has no stored samples")
    chosen = pick(stored, args.op_types, args.per_op, args.max_ms, args.seed)
    rows = remeasure(chosen)
    summary = summarize(rows)
    print_table(summary, cv_mape)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "device": args.device,
        "stored_samples": len(stored),
        "samples_file": None if args.samples is None else str(args.samples),
        "cv_mape_latest_version": cv_mape,
        "summary": summary,
        "rows": rows,
    }
    write_results(args.out, document, indent=2)
    return 0


def _latest_cv_mape(device_id: int) -> dict[str, float]:
    """CV MAPE per op type of the device's latest model version (empty if none)."""
    from fdiot.client import FarmClient

    settings = get_settings()
    with FarmClient(settings.url, token=settings.admin_token) as client:
        versions = client.model_versions(device_id)
    if not versions:
        return {}
    latest = max(versions, key=lambda v: int(v["version"]))
    per_op = (latest.get("metrics") or {}).get("per_op_type") or {}
    return {op: float(m["cv_mape"]) for op, m in per_op.items() if m.get("cv_mape") is not None}


if __name__ == "__main__":
    raise SystemExit(main())
