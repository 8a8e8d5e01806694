"""bench.runs: one row per accuracy results document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.runs import collect, main


def _document(finished_at: str, within_5: float, within_10: float, dw_cv: float) -> dict[str, Any]:
    return {
        "run": {
            "finished_at": finished_at,
            "sample_count": 3713,
            "measurement_cost": {"measuring_s": 1800.0},
            "per_op_type": {"depthwise_conv2d": {"cv_mape": dw_cv, "samples": 1269}},
        },
        "summary": {
            "ours": {
                "count": 27,
                "mape_pct": 3.0,
                "within_5_pct": within_5,
                "within_10_pct": within_10,
                "max_error_pct": 9.0,
            }
        },
        "networks": [],
    }


def test_rows_are_oldest_first_and_judge_the_network_targets(tmp_path: Path) -> None:
    late, early = tmp_path / "accuracy_b.json", tmp_path / "accuracy_a.json"
    late_doc = _document("2026-11-30T15:27:00+00:00", 66.7, 81.5, 0.064)
    late_doc["run"]["per_op_type_splits"] = {
        "depthwise_conv2d": {"cv_mape": 0.060, "cv_mape_splits": [0.064, 0.056, 0.060]}
    }
    late.write_text(json.dumps(late_doc))
    early.write_text(json.dumps(_document("2026-11-30T12:16:00+00:00", 88.9, 96.3, 0.052)))
    bare = tmp_path / "accuracy_c.json"
    bare.write_text(json.dumps({"run": {}, "summary": {}}))
    copy = tmp_path / "accuracy.json"  # bench.accuracy's copy of the latest run
    copy.write_text(late.read_text())
    rows = collect([copy, late, bare, early])
    assert [r["file"] for r in rows] == ["accuracy_a", "accuracy_b", "accuracy_c"]
    assert rows[0]["network_targets_met"] is True  # 88.9 >= 80 and 96.3 >= 95
    assert rows[1]["network_targets_met"] is False  # 66.7 < 80
    assert rows[0]["measuring_min"] == pytest.approx(30.0)
    assert rows[0]["cv_mape_pct"]["depthwise_conv2d"] == pytest.approx(5.2)
    assert rows[1]["cv_mape_pct"]["depthwise_conv2d"] == pytest.approx(6.0)  # mean of the splits
    assert rows[0]["cv_mape_pct"]["conv2d"] is None  # not in the document
    assert rows[2]["network_targets_met"] is None and rows[2]["samples"] is None


def test_main_prints_and_writes_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "accuracy_x.json"
    doc.write_text(json.dumps(_document("2026-11-30T15:27:00+00:00", 81.0, 95.0, 0.05)))
    out = tmp_path / "runs.json"
    main([str(doc), "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["runs"][0]["file"] == "accuracy_x" and written["runs"][0]["network_targets_met"]
    assert "accuracy_x" in capsys.readouterr().out
    main([str(doc), "--out", str(out), "--markdown"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run |") and table[1].startswith("|---")
    assert table[2].startswith("| `accuracy_x` | 2026-11-30 15:27 | 3713 | 30.0 | 3.0% | 81% | 95%")
    assert "| met |" in table[2] and table[2].endswith("| - | 5.00% | - |")
