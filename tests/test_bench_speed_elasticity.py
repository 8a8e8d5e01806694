"""bench.speed_elasticity: how far each network's time moved with the speed it was timed at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import speed_elasticity


def _network(
    name: str, family: str, measured_ms: float, speed: float, canary_ms: float
) -> dict[str, Any]:
    return {
        "name": name,
        "family": family,
        "measured_ms": measured_ms,
        "speed": speed,
        "measurement": {"canary_ms": canary_ms},
    }


BEFORE = [
    _network("mlp_a", "mlp", 1.0, 1.0, 0.10),
    _network("cnn_a", "cnn", 2.0, 1.0, 0.10),
    _network("cnn_b", "cnn", 4.0, 1.0, 0.10),
    _network("steady", "cnn", 1.0, 1.0, 0.10),
]
AFTER = [
    _network("mlp_a", "mlp", 1.1, 1.2, 0.12),  # moved half as much as the speed
    _network("cnn_a", "cnn", 2.4, 1.2, 0.13),  # moved with it
    _network("cnn_b", "cnn", 5.2, 1.2, 0.12),  # moved more
    _network("steady", "cnn", 1.05, 1.01, 0.10),  # the speed barely moved: no elasticity
    _network("new", "cnn", 1.0, 1.2, 0.12),  # not in the first document
]


def test_elasticity_is_the_measured_change_over_the_speed_change():
    rows = {r["name"]: r for r in speed_elasticity.elasticities(BEFORE, AFTER)}
    assert set(rows) == {"mlp_a", "cnn_a", "cnn_b", "steady"}
    assert rows["mlp_a"]["elasticity"] == pytest.approx(0.5)
    assert rows["cnn_a"]["elasticity"] == pytest.approx(1.0)
    assert rows["cnn_b"]["elasticity"] == pytest.approx(1.5)
    assert rows["steady"]["elasticity"] is None and rows["steady"]["measured_ratio"] == 1.05
    families = speed_elasticity.by_family(list(rows.values()))
    assert families == {
        "cnn": {"median_elasticity": pytest.approx(1.25), "networks": 2},
        "mlp": {"median_elasticity": pytest.approx(0.5), "networks": 1},
    }


def test_the_canary_can_stand_for_the_speed():
    rows = {r["name"]: r for r in speed_elasticity.elasticities(BEFORE, AFTER, key="canary_ms")}
    assert rows["cnn_a"]["speed_ratio"] == pytest.approx(1.3)
    assert rows["cnn_a"]["elasticity"] == pytest.approx(0.2 / 0.3)


def test_main_writes_the_families_and_rows(tmp_path: Path) -> None:
    before, after, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "out.json"
    run = {"device": {"id": 1}, "model_version": 4, "trained_at": "2026-12-02T13:49:19Z"}
    before.write_text(json.dumps({"run": run, "networks": BEFORE}))
    after.write_text(json.dumps({"run": run, "networks": AFTER}))
    assert speed_elasticity.main([str(before), str(after), "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["families"]["mlp"]["median_elasticity"] == pytest.approx(0.5)
    assert len(document["networks"]) == 4


def test_runs_of_two_models_are_refused(tmp_path: Path) -> None:
    """Each run's speeds are relative to its own model's reference canary."""
    before, after, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "out.json"
    run = {"device": {"id": 1}, "model_version": 4, "trained_at": "2026-12-02T13:49:19Z"}
    before.write_text(json.dumps({"run": run, "networks": BEFORE}))
    after.write_text(
        json.dumps({"run": {**run, "trained_at": "2026-12-02T15:14Z"}, "networks": AFTER})
    )
    assert speed_elasticity.main([str(before), str(after), "--out", str(out)]) == 2
    assert not out.exists()
