"""bench.label_noise: which samples it re-measures and how it summarizes their movement."""

from __future__ import annotations

import math

import pytest

from bench.label_noise import pick, summarize


def _row(ws: float, stored: float, new: float, op: str = "conv2d") -> dict[str, object]:
    return {"op_type": op, "working_set_bytes": ws, "stored_ms": stored, "remeasured_ms": new}


def test_summary_removes_the_host_shift_and_splits_by_working_set():
    # The host runs 2% faster now; the two largest working sets also moved 10% on their own.
    rows = [_row(ws, 1.0, 0.98) for ws in (1e3, 2e3, 3e3, 4e3, 5e3, 6e3)]
    rows += [_row(9e6, 1.0, 0.98 * 1.1), _row(1e7, 1.0, 0.98 * 0.9)]
    result = summarize(rows)["conv2d"]
    assert result["shift"] == pytest.approx(0.98)
    assert result["n"] == 8
    assert result["re_mape"] == pytest.approx(0.2 / 8)
    assert result["label_noise"] == pytest.approx(result["re_mape"] / math.sqrt(2))
    quartiles = result["quartiles"]
    assert [q["n"] for q in quartiles] == [2, 2, 2, 2]
    assert [q["re_mape"] for q in quartiles[:3]] == pytest.approx([0.0, 0.0, 0.0])
    assert quartiles[3]["re_mape"] == pytest.approx(0.1)
    assert quartiles[3]["working_set_bytes_min"] == 9e6


def test_summary_compares_the_labels_shift_with_the_canarys():
    # The host slowed 16% as a whole: labels and canary move together, one label 4% more.
    rows = [_row(1e3 * (i + 1), 1.0, 1.16) for i in range(4)] + [_row(5e3, 1.0, 1.16 * 1.04)]
    for row in rows:
        row.update(stored_canary_ms=0.43, remeasured_canary_ms=0.43 * 1.16)
    result = summarize(rows)["conv2d"]
    assert result["shift"] == pytest.approx(1.16)
    assert result["canary_shift"] == pytest.approx(1.16)
    assert result["normalised_re_mape"] == pytest.approx(0.04 / 5)
    # Rows without canaries (runs before 2026-12-01) have no canary shift.
    assert "canary_shift" not in summarize([_row(1e3, 1.0, 1.1)])["conv2d"]


def test_pick_draws_quiet_samples_under_the_time_limit_per_op_type():
    def sample(op: str, ms: float, quiet: bool = True) -> dict[str, object]:
        return {
            "op_type": op,
            "config": {},
            "latency": {"median_ms": ms},
            "environment": {"quiet": quiet},
        }

    samples = [sample("conv2d", 1.0) for _ in range(5)] + [sample("conv2d", 50.0)]
    samples += [sample("conv2d", 1.0, quiet=False)] + [sample("add", 0.1) for _ in range(3)]
    chosen = pick(samples, ["conv2d", "add"], per_op=10, max_ms=20.0, seed=0)
    assert sum(s["op_type"] == "conv2d" for s in chosen) == 5  # not the 50 ms, not the disturbed
    assert sum(s["op_type"] == "add" for s in chosen) == 3
    assert len(pick(samples, ["conv2d"], per_op=2, max_ms=20.0, seed=0)) == 2


def test_draws_from_a_campaign_dump_without_the_farm(tmp_path, monkeypatch):
    import json

    from bench import label_noise

    stored = [
        {
            "op_type": "conv2d",
            "config": {"i": i},
            "features": {"input_bytes": 1e3 * (i + 1)},
            "latency": {"median_ms": 1.0},
            "environment": {"quiet": True},
        }
        for i in range(8)
    ]
    dump = tmp_path / "campaign.json"
    dump.write_text(json.dumps(stored))

    def no_farm(*_args, **_kwargs):
        raise AssertionError("the farm is not asked when a dump is given")

    measured = []

    def remeasure(samples):
        measured.extend(samples)
        return [
            {
                "op_type": s["op_type"],
                "config": s["config"],
                "working_set_bytes": 1e3,
                "stored_ms": 1.0,
                "remeasured_ms": 1.1,
            }
            for s in samples
        ]

    monkeypatch.setattr(label_noise, "fetch_samples", no_farm)
    monkeypatch.setattr(label_noise, "start_farm", no_farm)
    monkeypatch.setattr(label_noise, "remeasure", remeasure)
    out = tmp_path / "noise.json"
    argv = ["--samples", str(dump), "--op-types", "conv2d", "--per-op", "5", "--out", str(out)]
    assert label_noise.main(argv) == 0
    assert len(measured) == 5
    document = json.loads(out.read_text())
    assert document["samples_file"] == str(dump)
    assert document["stored_samples"] == 8
    assert document["summary"]["conv2d"]["shift"] == pytest.approx(1.1)


def test_convolutions_are_also_summarized_by_kernel():
    rows = [
        {**_row(1e3, 1.0, 1.0), "config": {"kh": 1, "kw": 1}},
        {**_row(2e3, 1.0, 1.2), "config": {"kh": 1, "kw": 1}},
        {**_row(3e3, 1.0, 1.0), "config": {"kh": 3, "kw": 3}},
    ]
    kernels = summarize(rows)["conv2d"]["kernels"]
    assert kernels["1x1"]["n"] == 2 and kernels["kxk"]["n"] == 1
    assert kernels["1x1"]["re_mape"] == pytest.approx(0.1)
    assert kernels["kxk"]["re_mape"] == pytest.approx(0.0)
    assert "kernels" not in summarize([_row(1e3, 1.0, 1.0, op="add")])["add"]
