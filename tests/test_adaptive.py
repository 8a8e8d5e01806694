"""Adaptive rounds of campaigns: the budget kept at creation, ``campaign.adapt`` sent once the
first round ended, the adaptive jobs stored once and queued, the campaign finishing only after
them, and the reconciler re-sending a lost ``campaign.adapt``. Real PostgreSQL and Redis; the
tasks' bodies run directly, samples are synthetic and posted through the agent API."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from fdiot.settings import Settings
from tests.helpers import (
    auth,
    celery_worker,
    post_campaign,
    run_jobs_synthetically,
    run_sql,
    wait_for_worker,
)

FIT_QUEUE = "fit"


def _adapt_messages(broker: redis.Redis, campaign_id: int) -> int:
    """``campaign.adapt(campaign_id)`` messages waiting in the fit queue."""
    count = 0
    for raw in broker.lrange(FIT_QUEUE, 0, -1):
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != "campaign.adapt":
            continue
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # Celery protocol 2 body: [args, kwargs, embed]
        count += args == [campaign_id]
    return count


def _job_configs(client: TestClient, agent_token: str, job_ids: list[int]) -> list[dict[str, Any]]:
    """The configurations (``{index, op_type, config}``) of the jobs, as the agent reads them."""
    agent = auth(agent_token)
    return [
        c
        for job_id in job_ids
        for c in client.get(f"/agent/jobs/{job_id}", headers=agent).json()["configs"]
    ]


# -- planning (pure) -----------------------------------------------------------------------------


def test_adaptive_budget_and_split() -> None:
    from server.jobs.planning import adaptive_budget, split_adaptive_budget

    assert adaptive_budget(2500, None, 0.2, 200) == 500
    assert adaptive_budget(199, None, 0.2, 200) == 0  # small campaigns: none by default
    assert adaptive_budget(100, 30, 0.2, 200) == 30  # an explicit budget wins
    assert adaptive_budget(2500, 0, 0.2, 200) == 0  # 0 disables

    split = split_adaptive_budget({"conv2d": 3.0, "add": 1.0, "relu": 0.0}, 10)
    assert sum(split.values()) == 10
    assert split["conv2d"] > split["add"] > 0 and "relu" not in split
    assert split_adaptive_budget({"conv2d": 1.0, "add": 1.0, "mul": 1.0}, 100) in (
        {"conv2d": 34, "add": 33, "mul": 33},
        {"conv2d": 33, "add": 34, "mul": 33},
        {"conv2d": 33, "add": 33, "mul": 34},
    )
    assert split_adaptive_budget({"conv2d": 0.0}, 10) == {}


# -- API and tasks -------------------------------------------------------------------------------


@pytest.mark.stack
def test_campaign_keeps_an_adaptive_budget(
    client: TestClient, client_token: str, device: dict[str, Any], migrated: Settings
) -> None:
    large = post_campaign(client, client_token, device["id"], op_types=["add"], samples=300, seed=1)
    assert large["adaptive_samples"] == round(300 * migrated.adaptive_fraction)
    assert large["adapted_at"] is None
    # The first round is planned with the rest (plus the invoke-overhead minimum).
    assert large["samples_requested"] == sum(large["plan"].values())
    assert large["plan"]["add"] == 300 - large["adaptive_samples"]

    small = post_campaign(client, client_token, device["id"], op_types=["add"], samples=50, seed=1)
    assert small["adaptive_samples"] == 0
    off = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=300, adaptive_samples=0
    )
    assert off["adaptive_samples"] == 0 and off["plan"]["add"] == 300
    forced = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=50, adaptive_samples=20
    )
    assert forced["adaptive_samples"] == 20 and forced["plan"]["add"] == 30

    too_many = client.post(
        f"/devices/{device['id']}/campaigns",
        json={"op_types": ["add"], "samples": 50, "adaptive_samples": 51},
        headers=auth(client_token),
    )
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["field"] == "adaptive_samples"


@pytest.mark.stack
def test_adaptive_round_runs_once_then_the_campaign_finishes(
    client: TestClient,
    client_token: str,
    agent_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
) -> None:
    pytest.importorskip("models.timemodel")
    from worker.broker import pending_job_ids
    from worker.tasks import run_adapt

    campaign = post_campaign(
        client,
        client_token,
        device["id"],
        op_types=["fully_connected", "add"],
        samples=120,
        adaptive_samples=40,
        seed=5,
    )
    first_round = campaign["job_ids"]
    initial_samples = campaign["samples_requested"]
    assert campaign["adaptive_samples"] == 40

    # Before the first round ended the task adds nothing.
    early = run_adapt(campaign["id"])
    assert early.skipped == "first round still running" and early.job_ids == []

    run_jobs_synthetically(client, agent_token, first_round)
    state = client.get(f"/campaigns/{campaign['id']}").json()
    assert state["status"] == "running"  # held open for the adaptive round
    assert state["adapted_at"] is None
    assert _adapt_messages(broker, campaign["id"]) == 1  # sent after the last job's commit

    report = run_adapt(campaign["id"])
    assert report.skipped is None and report.samples_added == 40 and report.job_ids
    assert not report.finished
    state = client.get(f"/campaigns/{campaign['id']}").json()
    assert state["adapted_at"] is not None
    assert state["samples_requested"] == initial_samples + 40
    assert state["samples_requested"] == sum(state["plan"].values())
    assert state["job_ids"] == first_round + report.job_ids
    assert set(report.job_ids) <= pending_job_ids(broker, f"device.{device['id']}")
    adaptive_configs = _job_configs(client, agent_token, report.job_ids)
    assert {c["op_type"] for c in adaptive_configs} <= {"fully_connected", "add"}

    # Idempotent: a duplicate message adds nothing.
    again = run_adapt(campaign["id"])
    assert again.job_ids == [] and again.skipped == "already adapted or finished"
    assert client.get(f"/campaigns/{campaign['id']}").json()["jobs_total"] == len(state["job_ids"])

    run_jobs_synthetically(client, agent_token, report.job_ids)
    state = client.get(f"/campaigns/{campaign['id']}").json()
    assert state["status"] == "done"
    assert state["samples_done"] == state["samples_requested"]
    from server.db import get_sessionmaker
    from server.tables import Device

    with get_sessionmaker()() as session:
        row = session.get(Device, device["id"])  # finishing the campaign asked for a fit
        assert row is not None and row.fit_requested_at is not None


@pytest.mark.stack
def test_reconciler_resends_a_lost_adapt_and_an_empty_round_finishes(
    client: TestClient,
    client_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
    migrated: Settings,
) -> None:
    from worker.tasks import run_adapt, run_reconcile

    campaign = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=20, adaptive_samples=5
    )
    # The first round finished behind the API's back (no samples stored).
    run_sql("UPDATE jobs SET status = 'done' WHERE campaign_id = :c", c=campaign["id"])
    report = run_reconcile()
    assert campaign["id"] in report.campaigns_adapt_sent
    assert campaign["id"] not in report.campaigns_finished
    assert _adapt_messages(broker, campaign["id"]) == 1
    assert client.get(f"/campaigns/{campaign['id']}").json()["status"] == "running"

    # A recent request is not re-sent...
    assert campaign["id"] not in run_reconcile().campaigns_adapt_sent
    # ...an old one whose message was lost is.
    broker.delete(FIT_QUEUE)
    run_sql(
        "UPDATE campaigns SET adapt_requested_at = now() - make_interval(secs => :s) WHERE id = :c",
        s=2 * migrated.reconcile_after_s,
        c=campaign["id"],
    )
    assert campaign["id"] in run_reconcile().campaigns_adapt_sent
    assert _adapt_messages(broker, campaign["id"]) == 1

    # No sample to adapt from: the round is empty, marked, and the campaign finishes.
    adapted = run_adapt(campaign["id"])
    assert adapted.job_ids == [] and adapted.finished
    state = client.get(f"/campaigns/{campaign['id']}").json()
    assert state["status"] == "done" and state["adapted_at"] is not None
    assert campaign["id"] not in run_reconcile().campaigns_adapt_sent


@pytest.mark.stack
def test_a_campaign_whose_jobs_all_failed_is_not_adapted(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    campaign = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=20, adaptive_samples=5
    )
    for job_id in campaign["job_ids"]:
        failed = client.post(
            f"/agent/jobs/{job_id}/fail", json={"error": "boom"}, headers=auth(agent_token)
        )
        assert failed.status_code == 200
    state = client.get(f"/campaigns/{campaign['id']}").json()
    assert state["status"] == "failed" and state["adapted_at"] is None


@pytest.mark.stack
def test_a_real_fit_worker_runs_campaign_adapt(
    client: TestClient,
    client_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
    tmp_path: Any,
) -> None:
    """``campaign.adapt`` sent by name with no queue (the route picks ``fit``) is registered and
    run by a real Celery worker of the fit queue."""
    from fdiot.celery_config import CAMPAIGN_ADAPT
    from worker.celery_app import celery_app

    campaign = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=20, adaptive_samples=5
    )
    run_sql("UPDATE jobs SET status = 'done' WHERE campaign_id = :c", c=campaign["id"])
    broker.delete(FIT_QUEUE)  # fits left by earlier tests are not this test's business
    celery_app.send_task(CAMPAIGN_ADAPT, args=[campaign["id"]])
    assert _adapt_messages(broker, campaign["id"]) == 1
    log_path = tmp_path / "fit-worker.log"
    with celery_worker(FIT_QUEUE, "fit-test@%h", log_path) as worker:
        wait_for_worker(
            worker,
            log_path,
            lambda: client.get(f"/campaigns/{campaign['id']}").json()["adapted_at"] is not None,
        )
    assert client.get(f"/campaigns/{campaign['id']}").json()["status"] == "done"


def test_small_campaigns_still_draw_enough_chain_probes() -> None:
    from fdiot.settings import Settings
    from models.opspace import OP_TYPES
    from server.jobs.planning import MIN_CHAIN_PROBES, adaptive_budget, plan_campaign

    small = plan_campaign(list(OP_TYPES), 320, seed=1, job_size=50)
    assert small.counts["conv_chain"] == MIN_CHAIN_PROBES
    drawn = [c for job in small.jobs for c in job if c["op_type"] == "conv_chain"]
    assert len(drawn) == MIN_CHAIN_PROBES
    # The default campaign's first round (its adaptive round only measures them again) keeps
    # ~60 of them.
    settings = Settings()
    first_round = settings.default_campaign_samples - adaptive_budget(
        settings.default_campaign_samples,
        None,
        settings.adaptive_fraction,
        settings.adaptive_min_campaign_samples,
    )
    assert (
        plan_campaign(list(OP_TYPES), first_round, seed=1, job_size=50).counts["conv_chain"] >= 60
    )
    assert "conv_chain" not in plan_campaign(["conv2d"], 100, seed=1, job_size=50).counts


def test_the_demo_draws_enough_probes_for_the_extra_curve_below_a_small_knee() -> None:
    """The network extra curve needs MIN_CHAIN_EXTRA_PROBES quiet probes within the cache knee;
    the 800-sample demo of 2026-11-30 20:07 drew 17 and had 9 within its 15.5 MB knee."""
    from fdiot.demo import DEMO_CAMPAIGN_SAMPLES
    from fdiot.settings import Settings
    from models.features import cost_features
    from models.opspace import OP_TYPES
    from models.timemodel import MIN_CHAIN_EXTRA_PROBES
    from server.jobs.planning import adaptive_budget, plan_campaign

    settings = Settings()
    first_round = DEMO_CAMPAIGN_SAMPLES - adaptive_budget(
        DEMO_CAMPAIGN_SAMPLES,
        None,
        settings.adaptive_fraction,
        settings.adaptive_min_campaign_samples,
    )
    for seed in range(10):
        plan = plan_campaign(list(OP_TYPES), first_round, seed=seed, job_size=50)
        weights_mb = [
            cost_features("conv_chain", c["config"])["param_bytes"] / 1e6
            for job in plan.jobs
            for c in job
            if c["op_type"] == "conv_chain"
        ]
        # The first VM's knee (6.8 MB), with a fifth of the probes lost as disturbed.
        assert 0.8 * sum(w <= 6.8 for w in weights_mb) >= MIN_CHAIN_EXTRA_PROBES


def test_each_chain_probe_is_followed_by_its_layers_alone() -> None:
    from models.opspace import OP_TYPES, chain_layers
    from server.jobs.planning import plan_campaign

    plan = plan_campaign(list(OP_TYPES), 640, seed=3, job_size=50)
    drawn = [(c["op_type"], c["config"]) for job in plan.jobs for c in job]
    assert plan.total_samples == len(drawn)
    assert plan.counts["conv2d"] == sum(1 for op_type, _ in drawn if op_type == "conv2d")
    probes = [i for i, (op_type, _) in enumerate(drawn) if op_type == "conv_chain"]
    assert probes
    for i in probes:
        layers = []
        for layer in chain_layers(drawn[i][1]):
            if layer not in layers:
                layers.append(layer)
        assert drawn[i + 1 : i + 1 + len(layers)] == [("conv2d", layer) for layer in layers]


def test_probe_retimes_follow_each_probe_with_its_layers_within_the_budget() -> None:
    from models.opspace import chain_layers, sample_configs
    from worker.fitting import probe_retimes

    configs = sample_configs("conv_chain", 6, seed=2)
    probes = [{"op_type": "conv_chain", "config": c} for c in configs]
    probes.append({"op_type": "conv_chain", "config": dict(configs[5])})  # measured twice
    drawn = probe_retimes(probes, 1000)
    again = [c for op_type, c in drawn if op_type == "conv_chain"]
    assert again == [configs[4], configs[3], configs[2], configs[1], configs[0]]  # newest first
    for i, (op_type, config) in enumerate(drawn):
        if op_type == "conv_chain":
            layers = []
            for layer in chain_layers(config):
                if layer not in layers:
                    layers.append(layer)
            assert [c for _, c in drawn[i + 1 : i + 1 + len(layers)]] == layers
    first_two = len(probe_retimes(probes[:2], 1000))
    assert len(probe_retimes(probes, first_two)) <= first_two
    assert probe_retimes(probes, 0) == []


def test_the_adaptive_round_measures_the_probes_and_the_slowest_samples_again(
    client: TestClient,
    client_token: str,
    agent_token: str,
    device: dict[str, Any],
) -> None:
    pytest.importorskip("models.timemodel")
    from models.opspace import config_key
    from worker.tasks import run_adapt

    campaign = post_campaign(
        client,
        client_token,
        device["id"],
        op_types=["fully_connected", "conv2d", "conv_chain"],
        samples=200,
        adaptive_samples=100,
        seed=11,
    )
    run_jobs_synthetically(client, agent_token, campaign["job_ids"])

    def configs_of(job_ids: list[int]) -> list[tuple[str, Any]]:
        return [
            (c["op_type"], config_key(c["config"]))
            for c in _job_configs(client, agent_token, job_ids)
        ]

    first = configs_of(campaign["job_ids"])
    report = run_adapt(campaign["id"])
    assert report.samples_added == 100
    adaptive = configs_of(report.job_ids)
    first_probes = {key for op_type, key in first if op_type == "conv_chain"}
    again_probes = [key for op_type, key in adaptive if op_type == "conv_chain"]
    assert again_probes and set(again_probes) <= first_probes
    assert len(again_probes) == len(set(again_probes))
    # Synthetic labels carry 2% noise: some op samples ran more than 5% over a quick fit.
    again_ops = {(t, k) for t, k in adaptive if t != "conv_chain"} & set(first)
    assert again_ops
