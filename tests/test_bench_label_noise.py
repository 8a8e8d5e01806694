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
