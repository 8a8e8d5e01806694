"""A campaign's device-time budget: validated at the edge, counted from the samples' measure_s,
handed to the agent with each job, and, once a round's share is spent, the round's queued jobs
skipped so the campaign moves on (adaptive round with what is left, or done). Real PostgreSQL
and Redis; samples are synthetic and posted through the agent API (the real agent stopping at
the budget is in tests/test_agent_daemon.py)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fdiot.celery_config import BUDGET_SPENT
from fdiot.settings import Settings
from tests.helpers import auth, post_campaign, run_jobs_synthetically


def _agent_job(client: TestClient, agent_token: str, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/agent/jobs/{job_id}", headers=auth(agent_token)).json()
    return job


@pytest.mark.stack
def test_budget_is_validated_and_defaults_to_the_settings(
    client: TestClient,
    client_token: str,
    agent_token: str,
    device: dict[str, Any],
    migrated: Settings,
) -> None:
    default = post_campaign(client, client_token, device["id"], op_types=["add"], samples=20)
    assert default["max_device_minutes"] == pytest.approx(migrated.default_campaign_device_minutes)
    assert default["device_minutes"] == 0 and default["jobs_skipped"] == 0
    unlimited = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=20, max_device_minutes=0
    )
    assert unlimited["max_device_minutes"] is None
    job = _agent_job(client, agent_token, unlimited["job_ids"][0])
    assert job["device_s_left"] is None

    for bad in (-1, migrated.max_campaign_device_minutes + 1):
        response = client.post(
            f"/devices/{device['id']}/campaigns",
            json={"op_types": ["add"], "samples": 20, "max_device_minutes": bad},
            headers=auth(client_token),
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["field"] == "max_device_minutes"


@pytest.mark.stack
def test_a_spent_round_skips_its_queued_jobs_and_the_adaptive_round_gets_the_rest(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    from worker.tasks import run_adapt

    budget_s = 60.0
    campaign = post_campaign(
        client,
        client_token,
        device["id"],
        op_types=["fully_connected", "add"],
        samples=100,
        adaptive_samples=20,
        seed=3,
        max_device_minutes=budget_s / 60.0,
    )
    first_round = campaign["job_ids"]
    assert len(first_round) >= 3
    first = campaign["samples_requested"]
    # The first round gets its share of the budget by samples; the adaptive round keeps the rest.
    round_s = budget_s * first / (first + campaign["adaptive_samples"])
    job = _agent_job(client, agent_token, first_round[0])
    assert job["device_s_left"] == pytest.approx(round_s)

    # The first job's samples take a little more than the round's share.
    per_sample_s = 1.01 * round_s / len(job["configs"])
    measured = run_jobs_synthetically(client, agent_token, first_round[:1], per_sample_s)
    used_s = measured * per_sample_s

    state = client.get(f"/campaigns/{campaign['id']}").json()
    assert state["device_minutes"] == pytest.approx(used_s / 60.0)
    assert state["jobs_skipped"] == len(first_round) - 1
    assert state["status"] == "running"  # held open for the adaptive round
    for job_id in first_round[1:]:
        skipped = client.get(f"/jobs/{job_id}").json()
        assert skipped["status"] == "done"
        assert skipped["result"]["skipped"] == BUDGET_SPENT
        assert skipped["started_at"] is None  # never ran

    report = run_adapt(campaign["id"])
    assert report.job_ids, report
    adaptive_job = _agent_job(client, agent_token, report.job_ids[0])
    assert adaptive_job["device_s_left"] == pytest.approx(budget_s - used_s)

    # The adaptive round spends the rest: its other jobs are skipped and the campaign finishes.
    run_jobs_synthetically(
        client, agent_token, report.job_ids[:1], (budget_s - used_s) / len(adaptive_job["configs"])
    )
    state = client.get(f"/campaigns/{campaign['id']}").json()
    assert state["status"] == "done", state
    assert state["jobs_skipped"] == len(first_round) - 1 + len(report.job_ids) - 1
    assert state["device_minutes"] == pytest.approx(budget_s / 60.0)
    assert state["samples_done"] < state["samples_requested"]
