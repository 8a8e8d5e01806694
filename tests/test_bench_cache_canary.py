"""bench.cache_canary's figures (the timing loop runs in the benchmark)."""

from __future__ import annotations

import pytest

from bench.cache_canary import summarize


def _row(l2: float, l3: float, net: float, l2_after: float | None = None) -> dict[str, float]:
    return {"l2": l2, "l3": l3, "net": net, "l2_after": l2 if l2_after is None else l2_after}


def test_summary_splits_network_times_by_canary_state() -> None:
    rows = (
        [_row(1.0, 10.0, 5.0)] * 4  # both quiet: the network's fast time
        + [_row(1.0, 15.0, 7.0)] * 4  # L2 quiet, L3 slow (1.5x): the network slow too
        + [_row(1.0, 10.0, 9.0, l2_after=1.5)] * 2  # L2 slow after the network: not quiet
        + [_row(1.05, 10.5, 5.1)]  # within 1.1x of both floors: quiet
    )
    summary = summarize(rows, ["net"], quiet_ratio=1.1, slow_ratio=1.3)
    assert summary["rounds"] == 11 and summary["l2_floor_ms"] == 1.0
    assert summary["l2_quiet_share"] == pytest.approx(9 / 11)
    assert summary["l3_quiet_share"] == pytest.approx(7 / 11)
    by = summary["networks"]["net"]
    assert by["all"]["rounds"] == 11
    assert by["l2_quiet"]["rounds"] == 9 and by["l2_quiet"]["p90_over_p10"] > 1.3
    assert by["l2_and_l3_quiet"]["rounds"] == 5
    assert by["l2_and_l3_quiet"]["p90_over_p10"] == pytest.approx(5.1 / 5.0, rel=0.02)
    assert by["l2_quiet_l3_slow"]["rounds"] == 4 and by["l2_quiet_l3_slow"]["p50_ms"] == 7.0


def test_too_few_rounds_give_a_count_only() -> None:
    rows = [_row(1.0, 10.0, 5.0), _row(1.0, 20.0, 9.0)]
    assert summarize(rows, ["net"])["networks"]["net"]["l2_quiet_l3_slow"] == {"rounds": 1}


def test_spread_table_has_a_row_per_condition_and_dashes_for_too_few_rounds() -> None:
    from bench.cache_canary import spread_table

    rows = [_row(1.0, 10.0, 5.0)] * 4 + [_row(1.0, 20.0, 9.0)]
    table = spread_table(
        "t", ("network", "condition", "rounds"), summarize(rows, ["net"])["networks"]
    )
    assert table.row_count == 4
    cells = {column.header: list(column.cells) for column in table.columns}
    assert cells["condition"][-1] == "l2_quiet_l3_slow" and cells["p50 ms"][-1] == "-"
    assert cells["p50 ms"][0] == "5.000"


def test_explained_spread_tells_which_canary_moves_the_network() -> None:
    from bench.cache_canary import explained_spread, explained_table

    # The network follows the L3 canary exactly (elasticity 0.5) and not the L2 one, which moves
    # on its own; one L2-only wobble keeps the L2 fit from being singular.
    l3_levels = [10.0, 12.0, 15.0, 20.0, 11.0, 18.0]
    rows = [
        _row(1.0 + 0.1 * (i % 3), l3, 2.0 * l3**0.5, l2_after=1.0 + 0.1 * (i % 2))
        for i, l3 in enumerate(l3_levels * 3)
    ]
    fits = explained_spread(rows, ["net"])["net"]
    assert fits["none"]["residual_p90_over_p10"] > 1.2
    assert fits["l3"]["residual_p90_over_p10"] == pytest.approx(1.0)
    assert fits["l3"]["elasticities"]["l3"] == pytest.approx(0.5)
    assert fits["l2_and_l3"]["elasticities"]["l2"] == pytest.approx(0.0, abs=1e-9)
    assert fits["l2"]["residual_p90_over_p10"] > fits["l3"]["residual_p90_over_p10"]
    table = explained_table({"net": fits})
    assert table.row_count == 1
    assert list(table.columns[-1].cells) == ["L2 0.00, L3 0.50"]
