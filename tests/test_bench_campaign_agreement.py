"""bench/campaign_agreement.py: the model against a re-measurement in another campaign."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import campaign_agreement
from models.features import cost_features
from models.opspace import sample_configs
from models.timemodel import fit_device_model

DW = "depthwise_conv2d"
OVERHEAD_MS = 0.02


def _campaign(seed: int, n: int, noise: float, speed: float) -> list[dict[str, Any]]:
    """Depthwise samples of one known law on the same ``n`` configurations (drawn with seed 1),
    this campaign's host ``speed`` times slower, labels moved by ``noise``."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = [
        {"op_type": "invoke_overhead", "config": {}, "latency": {"median_ms": OVERHEAD_MS}}
        for _ in range(5)
    ]
    for config in sample_configs(DW, n, 1):
        f = cost_features(DW, config)
        t = OVERHEAD_MS + 2e-8 * f["flops"] + 5e-8 * (f["input_bytes"] + f["output_bytes"])
        out.append({
            "op_type": DW, "config": config, "features": f,
            "latency": {"median_ms": speed * t * rng.normal(1.0, noise)},
        })  # fmt: skip
    return out


def test_a_model_of_quiet_labels_beats_a_noisy_remeasurement(tmp_path: Path) -> None:
    quiet = _campaign(1, 80, 0.005, 1.0)
    noisy = _campaign(2, 80, 0.08, 1.1)
    files = []
    for name, samples in (("quiet", quiet), ("noisy", noisy)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(samples))
        files.append(str(path))
    out = tmp_path / "agreement.json"
    argv = ["--samples", *files, "--op-types", DW, "--cv", "3", "--out", str(out)]
    assert campaign_agreement.main(argv) == 0
    document = json.loads(out.read_text())
    rows = {(Path(r["fitted"]).stem, r["group"]): r for r in document["rows"]}
    row = rows[("quiet", DW)]
    assert row["remeasured"] == files[1]
    assert row["common"] == row["samples"] > 60
    # The other host ran 10% slower: the raw re-measurement carries that shift, the shifted one
    # only the 8% noise, and a model of the quiet campaign's own labels beats both.
    assert row["shift_pct"] == pytest.approx(10.0, abs=3.0)
    assert row["remeasure_mape_pct"] > row["remeasure_shifted_mape_pct"] > 3.0
    assert row["model_mape_pct"] < 2.0
    # Over all of the op type's samples the model's MAPE is what the fit reports as its CV.
    _, metrics = fit_device_model(quiet, cv=3)
    assert row["model_mape_all_pct"] == pytest.approx(
        100 * metrics["per_op_type"][DW]["cv_mape"], abs=0.01
    )
    # Fitted on the noisy campaign, the model is no better than its noisy labels allow.
    assert rows[("noisy", DW)]["model_mape_pct"] > 3.0
    summary = {r["group"]: r for r in document["summary"]}
    assert summary[DW]["pairs"] == 2
    assert summary[DW]["common"] == 2 * row["common"]


def test_keep_predictions_gives_each_samples_out_of_fold_prediction() -> None:
    samples = _campaign(1, 40, 0.01, 1.0)
    _, metrics = fit_device_model(samples, cv=3, keep_predictions=True)
    per_op = metrics["per_op_type"][DW]
    rows = per_op["cv_predictions"]
    assert len(rows) == per_op["samples"] == 40
    errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows]
    assert np.mean(errors) == pytest.approx(per_op["cv_mape"])
    assert "cv_predictions" not in fit_device_model(samples, cv=3)[1]["per_op_type"][DW]


def test_convs_split_into_pointwise_and_spatial_kernels() -> None:
    assert campaign_agreement.group_of("conv2d", {"kh": 1, "kw": 1}) == "conv2d/1x1"
    assert campaign_agreement.group_of("conv2d", {"kh": 1, "kw": 3}) == "conv2d/kxk"
    assert campaign_agreement.group_of(DW, {"kh": 1, "kw": 1}) == DW


def test_needs_two_campaigns(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text("[]")
    with pytest.raises(SystemExit):
        campaign_agreement.main(["--samples", str(path)])
