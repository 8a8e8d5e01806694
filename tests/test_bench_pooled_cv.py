"""bench/pooled_cv.py: campaigns pooled one more per row, fitted as the fit worker does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import pooled_cv
from models.features import cost_features
from models.opspace import config_key, sample_configs

DW = "depthwise_conv2d"

OVERHEAD_MS = 0.02


def _campaign(seed: int, n: int, noise: float) -> list[dict[str, Any]]:
    """Depthwise samples of a known law (+ invoke overhead), labels moved by ``noise``."""
    rng = np.random.default_rng(seed)
    out = [
        {"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": OVERHEAD_MS}}
        for _ in range(5)
    ]
    for config in sample_configs("depthwise_conv2d", n, seed):
        f = cost_features("depthwise_conv2d", config)
        t = OVERHEAD_MS + 2e-8 * f["flops"] + 5e-8 * (f["input_bytes"] + f["output_bytes"])
        out.append({
            "op_type": "depthwise_conv2d", "config": config, "features": f,
            "latency": {"median_ms": t * rng.normal(1.0, noise)},
        })  # fmt: skip
    return out


def test_pools_campaigns_one_more_per_row(tmp_path: Path) -> None:
    files = []
    for seed in (1, 2, 3):
        path = tmp_path / f"c{seed}.json"
        path.write_text(json.dumps(_campaign(seed, 40, 0.01)))
        files.append(str(path))
    out = tmp_path / "pooled.json"
    assert (
        pooled_cv.main(["--samples", *files, "--cv", "3", "--repeats", "2", "--out", str(out)]) == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [len(r["campaigns"]) for r in rows] == [1, 2, 3]
    assert [r["campaigns"] for r in rows][-1] == files
    # A configuration drawn by two campaigns counts once (models.timemodel.fastest_per_config).
    distinct = [
        len({config_key(c) for seed in (1, 2, 3)[:k] for c in sample_configs(DW, 40, seed)})
        for k in (1, 2, 3)
    ]
    assert distinct[-1] > 100
    assert [r["samples"] for r in rows] == distinct
    for row in rows:
        assert len(row["cv_mape_splits_pct"]) == 2
        assert row["cv_mape_pct"] == pytest.approx(np.mean(row["cv_mape_splits_pct"]), abs=0.01)
        # A law the leaves can express, 1% label noise: the CV error stays near that noise.
        assert 0.0 < row["cv_mape_pct"] < 5.0


def test_needs_samples_or_a_dump() -> None:
    with pytest.raises(SystemExit):
        pooled_cv.parse_args([])


def test_a_dump_can_keep_one_campaigns_samples() -> None:
    samples: list[dict[str, Any]] = [{"job_id": 1}, {"job_id": 2}, {"op_type": DW}]
    assert pooled_cv.of_jobs(samples, {2, 3}) == [samples[1]]
    assert pooled_cv.parse_args(["--dump", "c.json", "--campaign", "2"]).campaign == 2
    assert pooled_cv.parse_args(["--dump", "c.json"]).campaign is None
