"""The server-side tasks run as plain functions against the real database and Redis:
the reconciler re-sends lost messages and requeues silent jobs; the fit makes a model version."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from fdiot.settings import Settings
from tests.helpers import (
    auth,
    celery_worker,
    post_campaign,
    run_sql,
    synthetic_sample,
    wait_for_worker,
)

pytestmark = pytest.mark.stack


def _age_jobs(job_ids: list[int], column: str, seconds: int) -> None:
    run_sql(
        f"UPDATE jobs SET {column} = now() - make_interval(secs => :s) WHERE id = ANY(:ids)",
        s=seconds,
        ids=job_ids,
    )


def test_reconcile_resends_a_lost_message_once(
    client: TestClient,
    client_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
    migrated: Settings,
) -> None:
    from worker.broker import pending_job_ids
    from worker.tasks import run_reconcile

    queue = f"device.{device['id']}"
    campaign = post_campaign(client, client_token, device["id"], op_types=["relu"], samples=10)
    job_ids = campaign["job_ids"]
    assert pending_job_ids(broker, queue) == set(job_ids)

    # Messages that are only waiting in the queue are not lost, however old.
    _age_jobs(job_ids, "enqueued_at", 10 * migrated.reconcile_after_s)
    run_reconcile()
    assert broker.llen(queue) == len(job_ids)

    broker.delete(queue)  # Redis lost the messages
    run_reconcile()
    assert pending_job_ids(broker, queue) == set(job_ids)
    assert broker.llen(queue) == len(job_ids)  # each re-sent exactly once
    job = client.get(f"/jobs/{job_ids[0]}").json()
    assert job["status"] == "queued"


def test_reconcile_requeues_a_silent_running_job(
    client: TestClient,
    client_token: str,
    agent_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
    migrated: Settings,
) -> None:
    from worker.broker import pending_job_ids
    from worker.tasks import run_reconcile

    queue = f"device.{device['id']}"
    campaign = post_campaign(client, client_token, device["id"], op_types=["relu"], samples=3)
    job_id = campaign["job_ids"][0]
    broker.delete(queue)  # the agent took the message...
    client.post(f"/agent/jobs/{job_id}/start", headers=auth(agent_token))
    assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
    run_reconcile()
    assert client.get(f"/jobs/{job_id}").json()["status"] == "running"  # still heard from

    _age_jobs([job_id], "heartbeat_at", 2 * migrated.job_stale_after_s)  # ...and died
    run_reconcile()
    assert client.get(f"/jobs/{job_id}").json()["status"] == "queued"
    assert job_id in pending_job_ids(broker, queue)


def test_reconcile_finishes_campaigns(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    from worker.tasks import run_reconcile

    campaign = post_campaign(client, client_token, device["id"], op_types=["relu"], samples=2)
    # Finished behind the API's back (as when two agents end the last jobs concurrently).
    run_sql("UPDATE jobs SET status = 'done' WHERE campaign_id = :c", c=campaign["id"])
    run_reconcile()
    assert client.get(f"/campaigns/{campaign['id']}").json()["status"] == "done"


def test_fit_task_makes_a_model_version(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    """Synthetic-but-realistic conv2d/fully_connected/add samples posted through the API, then
    ``timemodel.fit``'s body run directly: version 1 with metrics, served by GET /models."""
    pytest.importorskip("models.timemodel")
    from worker.tasks import run_fit

    campaign = post_campaign(
        client,
        client_token,
        device["id"],
        op_types=["conv2d", "fully_connected", "add"],
        samples=120,
        seed=11,
    )
    agent = auth(agent_token)
    for job_id in campaign["job_ids"]:
        job = client.get(f"/agent/jobs/{job_id}", headers=agent).json()
        samples = [synthetic_sample(c["index"], c["op_type"], c["config"]) for c in job["configs"]]
        assert (
            client.post(
                f"/agent/jobs/{job_id}/samples", json={"samples": samples}, headers=agent
            ).status_code
            == 200
        )
        client.post(f"/agent/jobs/{job_id}/complete", json={}, headers=agent)

    version = run_fit(device["id"])
    if version is None:  # a farm fit worker in this session took the request first
        import time

        deadline = time.monotonic() + 120
        while client.get(f"/models/{device['id']}").status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(1)
    model = client.get(f"/models/{device['id']}").json()
    assert model["version"] >= 1
    assert model["sample_count"] == campaign["samples_requested"]
    assert {"conv2d", "fully_connected", "add"} <= set(model["op_types"])
    assert model["op_types"]["conv2d"]["rules"]
    assert model["network_rules"].startswith("network: t = sum of op times")
    assert "networks" in model["metrics"] and "weight_reload" in model["metrics"]
    assert run_fit(device["id"]) is None  # nothing new: no new version
    versions = client.get(f"/models/{device['id']}/versions").json()
    assert [v["version"] for v in versions] == [model["version"]]
    # A forced refit (POST /models/{id}/fit) makes a new version from the same samples.
    assert run_fit(device["id"], force=True) == model["version"] + 1
    refitted = client.get(f"/models/{device['id']}").json()
    assert refitted["version"] == model["version"] + 1
    assert refitted["sample_count"] == model["sample_count"]

    # The served model predicts an uploaded network op by op (numpy only, no TensorFlow).
    from tests.helpers import tiny_tflite

    response = client.post(
        f"/models/{device['id']}/predict", files={"file": ("t.tflite", tiny_tflite())}
    )
    assert response.status_code == 200, response.text
    prediction = response.json()
    assert prediction["version"] == refitted["version"]
    assert [op["op_type"] for op in prediction["ops"]] == ["conv2d"]
    assert prediction["ops"][0]["predicted_ms"] > 0
    assert prediction["ops"][0]["reload_ms"] == 0.0  # a tiny network stays in the cache
    # The speed the times are for: the model's reference canary (None without canaries).
    assert prediction["reference_canary_ms"] == refitted["metrics"].get("reference_canary_ms")
    assert prediction["total_ms"] == pytest.approx(
        prediction["overhead_ms"] + prediction["ops"][0]["predicted_ms"]
    )
    # How far to trust it: a conv-only network's band is the conv trees' CV error; the
    # version's network validation comes along (no benchmark networks here).
    conv_cv = refitted["metrics"]["per_op_type"]["conv2d"]["cv_mape"]
    assert prediction["expected_error_pct"] == pytest.approx(100 * conv_cv)
    assert prediction["unvalidated_ms"] == 0.0
    assert prediction["validation_networks"] == refitted["metrics"]["networks"]["count"]
    within = refitted["metrics"]["networks"]["within_band_pct"]
    assert prediction["validation_within_band_pct"] == within
    # The exported document rebuilds the served model: the same prediction offline.
    from models.features import parse_tflite
    from models.timemodel import DeviceTimeModel

    exported = client.get(f"/models/{device['id']}/export").json()
    assert exported["version"] == refitted["version"]
    assert exported["device_id"] == device["id"]
    offline = DeviceTimeModel.from_dict(exported["model"]).predict_network(
        parse_tflite(tiny_tflite())
    )
    assert offline.total_ms == pytest.approx(prediction["total_ms"])
    not_tflite = client.post(f"/models/{device['id']}/predict", files={"file": ("x", b"nope" * 8)})
    assert not_tflite.status_code == 422 and not_tflite.json()["detail"][0]["field"] == "file"

    if importlib.util.find_spec("models.plots") is not None:
        png = client.get(f"/models/{device['id']}/plots/conv2d.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")


def test_a_real_celery_worker_runs_the_reconciler(
    client: TestClient,
    client_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
    migrated: Settings,
    tmp_path: Any,
) -> None:
    """``jobs.reconcile`` sent by name to queue ``control`` and run by a real Celery worker
    (the app, its config, the task registration) re-sends a lost message."""
    from fdiot.celery_config import CONTROL_QUEUE, JOBS_RECONCILE
    from worker.broker import pending_job_ids
    from worker.celery_app import celery_app

    queue = f"device.{device['id']}"
    campaign = post_campaign(client, client_token, device["id"], op_types=["relu"], samples=2)
    _age_jobs(campaign["job_ids"], "enqueued_at", 10 * migrated.reconcile_after_s)
    broker.delete(queue)
    log_path = tmp_path / "control-worker.log"
    with celery_worker(CONTROL_QUEUE, "control-test@%h", log_path) as worker:
        celery_app.send_task(JOBS_RECONCILE, queue=CONTROL_QUEUE)
        wait_for_worker(
            worker, log_path, lambda: pending_job_ids(broker, queue) == set(campaign["job_ids"])
        )
