"""bench.error_band: the prediction's error band scored on stored benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.error_band import coverage, main, network_rows


def _document(finished_at: str) -> dict[str, Any]:
    return {
        "run": {
            "finished_at": finished_at,
            "per_op_type": {"conv2d": {"cv_mape": 0.05}, "add": {"cv_mape": 0.20}},
        },
        "networks": [
            # band (3 x 5% + 1 x 20%) / 4 = 8.75%: an error of -8% is within it
            {"name": "a", "predicted_by_op_type_ms": {"conv2d": 3.0, "add": 1.0},
             "error_pct": -8.0},
            # band 5%, error 7%: within twice the band only; the fallback time is reported
            {"name": "b", "predicted_by_op_type_ms": {"conv2d": 2.0, "reshape": 0.5},
             "error_pct": 7.0},
            # band 5%, error 12%: outside both
            {"name": "c", "predicted_by_op_type_ms": {"conv2d": 1.0}, "error_pct": 12.0},
            {"name": "no_band", "predicted_by_op_type_ms": {"reshape": 1.0}, "error_pct": 1.0},
            {"name": "old_run", "error_pct": 1.0},
        ],
    }  # fmt: skip


def test_networks_get_the_band_of_their_op_mix_and_the_coverage_counts_them() -> None:
    rows = network_rows(_document("2026-12-03T18:00:00"))
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["expected_error_pct"] == pytest.approx(8.75)
    assert rows[1]["unvalidated_ms"] == pytest.approx(0.5)
    summary = coverage(rows)
    assert summary["networks"] == 3 and summary["median_band_pct"] == pytest.approx(5.0)
    assert summary["mape_pct"] == pytest.approx(9.0)
    assert summary["within_band_pct"] == pytest.approx(100 / 3)
    assert summary["within_wide_band_pct"] == pytest.approx(200 / 3)


def test_main_scores_each_run_and_all_together(tmp_path: Path) -> None:
    first, second = tmp_path / "accuracy_a.json", tmp_path / "accuracy_b.json"
    first.write_text(json.dumps(_document("2026-12-03T18:00:00")))
    second.write_text(json.dumps(_document("2026-12-03T17:00:00")))
    (tmp_path / "accuracy.json").write_text(first.read_text())  # a copy: counted once
    out = tmp_path / "band.json"
    assert (
        main([str(p) for p in sorted(tmp_path.glob("accuracy*.json"))] + ["--out", str(out)]) == 0
    )
    written = json.loads(out.read_text())
    assert [r["file"] for r in written["runs"]] == ["accuracy_b", "accuracy_a"]
    assert written["all_runs"]["networks"] == 6
    assert written["all_runs"]["within_band_pct"] == pytest.approx(100 / 3)


def test_the_accuracy_report_scores_the_band_of_its_own_run(tmp_path: Path) -> None:
    from bench import zoo
    from bench.accuracy import NetworkResult, report

    def result(name: str, measured_ms: float, predicted_ms: float) -> NetworkResult:
        return NetworkResult(
            name, zoo.NETWORKS[name].family, measured_ms, None, None, predicted_ms,
            predicted_by_op_type_ms={"conv2d": predicted_ms},
        )  # fmt: skip

    run = {"mode": "test", "per_op_type": {"conv2d": {"cv_mape": 0.05, "samples": 300}}}
    # errors +4% (within the 5% band) and +8% (within twice it)
    results = [result("vgg_w16_64", 2.5, 2.6), result("resnet20_32", 2.5, 2.7)]
    document = report(results, run, tmp_path / "accuracy.json")
    band = json.loads((tmp_path / "accuracy.json").read_text())["error_band"]
    assert band == document["error_band"]
    assert band["median_band_pct"] == pytest.approx(5.0)
    assert band["within_band_pct"] == 50.0 and band["within_wide_band_pct"] == 100.0
