"""The REST API against the real app, real PostgreSQL and real Redis (docs/internals.md)."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any, cast

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from agent.devices import DeviceSpec, registered
from fdiot.settings import Settings
from server.jobs.planning import MIN_OVERHEAD_SAMPLES
from tests.helpers import (
    auth,
    device_body,
    make_token,
    post_campaign,
    run_jobs_synthetically,
    synthetic_sample,
)

pytestmark = pytest.mark.stack


def queue_length(broker: redis.Redis, device_id: int) -> int:
    # Kombu's Redis transport keeps a queue's messages in a list named after the queue.
    return int(broker.llen(f"device.{device_id}"))


def field_names(response: Any) -> list[str]:
    return [error["field"] for error in response.json()["detail"]]


# -- health and auth -----------------------------------------------------------------------------


def test_healthz_reports_database_and_redis(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/devices/{device_id}/campaigns" in paths
    assert (
        "multipart/form-data"
        in paths["/models/{device_id}/predict"]["post"]["requestBody"]["content"]
    )


def test_missing_token_is_401_and_wrong_kind_is_403(
    client: TestClient, admin_token: str, client_token: str, agent_token: str
) -> None:
    assert client.post("/tokens", json={"kind": "agent", "name": "x"}).status_code == 401
    bad = auth("not-a-token")
    assert (
        client.post("/tokens", json={"kind": "agent", "name": "x"}, headers=bad).status_code == 401
    )
    as_client = auth(client_token)
    assert (
        client.post("/tokens", json={"kind": "agent", "name": "x"}, headers=as_client).status_code
        == 403
    )
    # Clients may not register devices, agents may not start campaigns.
    assert client.post("/devices", json=device_body(), headers=as_client).status_code == 403
    registered = client.post("/devices", json=device_body(), headers=auth(admin_token)).json()
    response = client.post(
        f"/devices/{registered['id']}/campaigns", json={"samples": 5}, headers=auth(agent_token)
    )
    assert response.status_code == 403
    # Reads are open.
    assert client.get("/devices").status_code == 200


def test_created_tokens_are_stored_hashed(client: TestClient, admin_token: str) -> None:
    from sqlalchemy import select

    from server.db import get_sessionmaker
    from server.tables import Token

    token = make_token(client, admin_token, "client")
    with get_sessionmaker()() as session:
        stored = list(session.scalars(select(Token.token_sha256)))
    assert token not in stored
    import hashlib

    assert hashlib.sha256(token.encode()).hexdigest() in stored


# -- devices -------------------------------------------------------------------------------------


def test_device_registration_is_idempotent(client: TestClient, agent_token: str) -> None:
    body = device_body()
    first = client.post("/devices", json=body, headers=auth(agent_token))
    again = client.post("/devices", json=body, headers=auth(agent_token))
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other_config = client.post(
        "/devices", json=device_body(body["name"], threads=2), headers=auth(agent_token)
    )
    assert other_config.json()["id"] != first.json()["id"]  # two configs: two time models
    # The same name on other silicon (the agent's `cpu` signature) is a third config, and the
    # agent's own spec finds its row, not the older one.
    moved_body = device_body(body["name"])
    moved_body["execution_config"]["cpu"] = "AMD EPYC; L3 32768K"
    moved = client.post("/devices", json=moved_body, headers=auth(agent_token)).json()
    assert moved["id"] not in {first.json()["id"], other_config.json()["id"]}
    assert moved["execution_config"]["cpu"] == "AMD EPYC; L3 32768K"
    spec = DeviceSpec(
        moved_body["name"], "local", moved_body["host"], moved_body["execution_config"]
    )
    assert registered(client.get("/devices").json(), spec) == moved
    listed = {d["id"] for d in client.get("/devices").json()}
    assert {first.json()["id"], other_config.json()["id"]} <= listed
    assert client.get(f"/devices/{first.json()['id']}").json()["name"] == body["name"]
    assert client.get("/devices/987654321").status_code == 404


def test_device_validation_names_the_field(client: TestClient, admin_token: str) -> None:
    body = device_body()
    body["execution_config"]["threads"] = 0
    response = client.post("/devices", json=body, headers=auth(admin_token))
    assert response.status_code == 422
    assert "execution_config.threads" in field_names(response)


# -- campaigns -----------------------------------------------------------------------------------


def test_campaign_creates_jobs_and_queues_one_message_per_job(
    client: TestClient,
    client_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
    migrated: Settings,
) -> None:
    response = client.post(
        f"/devices/{device['id']}/campaigns",
        json={"op_types": ["conv2d", "add"], "samples": 30, "seed": 7},
        headers=auth(client_token),
    )
    assert response.status_code == 202, response.text
    campaign = response.json()
    # invoke_overhead is always measured a few times on top of the request.
    assert campaign["op_types"] == ["conv2d", "add", "invoke_overhead"]
    assert campaign["plan"]["invoke_overhead"] >= 5
    assert campaign["samples_requested"] == sum(campaign["plan"].values())
    jobs_expected = math.ceil(campaign["samples_requested"] / migrated.campaign_job_size)
    assert campaign["jobs_total"] == jobs_expected
    assert campaign["status"] == "running"
    assert queue_length(broker, device["id"]) == jobs_expected

    from worker.broker import pending_job_ids

    assert pending_job_ids(broker, f"device.{device['id']}") == set(campaign["job_ids"])
    job = client.get(f"/jobs/{campaign['job_ids'][0]}").json()
    assert job["kind"] == "ops" and job["status"] == "queued"
    assert job["configs_total"] == migrated.campaign_job_size
    assert client.get(f"/campaigns/{campaign['id']}").json()["jobs_total"] == jobs_expected


def test_messages_are_sent_only_after_commit(
    migrated: Settings, device: dict[str, Any], broker: redis.Redis
) -> None:
    """The session dependency holds bench.run messages until its commit; a failed request sends
    none."""
    from server.db import get_db, pending_tasks, reset_engine
    from server.jobs.schemas import CampaignCreate
    from server.jobs.service import create_campaign

    reset_engine()
    body = CampaignCreate(op_types=["relu"], samples=10, seed=1)
    dependency = get_db()
    session = next(dependency)
    campaign = create_campaign(session, migrated, device["id"], body)
    jobs = len(pending_tasks(session))
    assert jobs >= 2
    assert queue_length(broker, device["id"]) == 0  # rows flushed, nothing sent yet
    with pytest.raises(StopIteration):
        next(dependency)  # the request ends: commit, then send
    assert queue_length(broker, device["id"]) == jobs

    failing = cast(Generator[Session, None, None], get_db())
    session = next(failing)
    create_campaign(session, migrated, device["id"], body)
    with pytest.raises(RuntimeError):
        failing.throw(RuntimeError("the route failed after planning"))
    assert queue_length(broker, device["id"]) == jobs  # rolled back: no message
    from server.db import get_sessionmaker
    from server.tables import Campaign

    with get_sessionmaker()() as check:
        assert check.get(Campaign, campaign.id) is not None
        assert check.get(Campaign, campaign.id + 1) is None or (
            check.get(Campaign, campaign.id + 1).device_id != device["id"]  # type: ignore[union-attr]
        )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"samples": 0}, "samples"),
        ({"samples": 10**9}, "samples"),
        ({"op_types": ["conv2d", "warp_drive"]}, "op_types"),
        (
            {
                "configs": [
                    {"op_type": "conv2d", "config": {"h": 56, "cin": 64, "cout": 99999, "kh": 3}}
                ]
            },
            "configs.0.config.cout",
        ),
        (
            {"configs": [{"op_type": "conv2d", "config": {"h": 56, "cin": 64, "kh": 3}}]},
            "configs.0.config.cout",
        ),
    ],
)
def test_campaign_validation_names_the_field(
    client: TestClient, client_token: str, device: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    response = client.post(
        f"/devices/{device['id']}/campaigns", json=body, headers=auth(client_token)
    )
    assert response.status_code == 422, response.text
    assert field in field_names(response)


def test_campaign_on_unknown_device_is_404(client: TestClient, client_token: str) -> None:
    response = client.post("/devices/987654321/campaigns", json={}, headers=auth(client_token))
    assert response.status_code == 404


def test_campaign_with_explicit_configs(
    client: TestClient, client_token: str, device: dict[str, Any]
) -> None:
    configs = [
        {"op_type": "conv2d", "config": {"h": 56, "w": 56, "cin": 64, "cout": c, "kh": 3}}
        for c in (63, 64, 65)
    ]
    response = client.post(
        f"/devices/{device['id']}/campaigns", json={"configs": configs}, headers=auth(client_token)
    )
    assert response.status_code == 202, response.text
    assert response.json()["plan"] == {"invoke_overhead": MIN_OVERHEAD_SAMPLES, "conv2d": 3}


# -- uploads -------------------------------------------------------------------------------------


def test_benchmark_upload_that_is_not_tflite_is_422_naming_file(
    client: TestClient, client_token: str, device: dict[str, Any]
) -> None:
    response = client.post(
        f"/devices/{device['id']}/benchmarks",
        files={"file": ("model.tflite", b"this is not a flatbuffer" * 10)},
        headers=auth(client_token),
    )
    assert response.status_code == 422
    assert field_names(response) == ["file"]
    missing = client.post(
        f"/devices/{device['id']}/benchmarks", data={"name": "x"}, headers=auth(client_token)
    )
    assert missing.status_code == 422 and field_names(missing) == ["file"]


def test_upload_over_the_limit_is_413(
    client: TestClient,
    client_token: str,
    device: dict[str, Any],
    migrated: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fdiot.settings import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 1000)
    big = b"\0" * 200_000  # over the limit plus the multipart allowance
    response = client.post(
        f"/devices/{device['id']}/benchmarks",
        files={"file": ("big.tflite", big)},
        headers=auth(client_token),
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    # Just over the file limit but inside the multipart allowance: counted after parsing.
    response = client.post(
        f"/models/{device['id']}/predict", files={"file": ("m.tflite", b"\0" * 1001)}
    )
    assert response.status_code == 413

    # No Content-Length (chunked): counted while reading.
    boundary = "farmboundary"

    def chunks():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '.encode()
        yield b'filename="x.tflite"\r\nContent-Type: application/octet-stream\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        f"/devices/{device['id']}/benchmarks",
        content=chunks(),
        headers={
            **auth(client_token),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert response.status_code == 413


def test_benchmark_upload_of_a_real_tflite_makes_a_network_job(
    client: TestClient,
    client_token: str,
    agent_token: str,
    device: dict[str, Any],
    broker: redis.Redis,
) -> None:
    from tests.helpers import tiny_tflite

    content = tiny_tflite()
    response = client.post(
        f"/devices/{device['id']}/benchmarks",
        files={"file": ("tiny.tflite", content)},
        data={"name": "tiny"},
        headers=auth(client_token),
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "network" and job["name"] == "tiny" and job["status"] == "queued"
    assert queue_length(broker, device["id"]) == 1
    model = client.get(f"/agent/jobs/{job['id']}/model", headers=auth(agent_token))
    assert model.content == content


# -- the agent's job routes ----------------------------------------------------------------------


def test_samples_are_idempotent_and_heartbeat_the_job(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    campaign = post_campaign(
        client, client_token, device["id"], op_types=["conv2d"], samples=6, seed=3
    )
    job_id = campaign["job_ids"][0]
    agent = auth(agent_token)
    job = client.get(f"/agent/jobs/{job_id}", headers=agent).json()
    assert job["done_indices"] == []
    started = client.post(f"/agent/jobs/{job_id}/start", headers=agent).json()
    assert started["status"] == "running" and started["attempts"] == 1
    samples = [synthetic_sample(c["index"], c["op_type"], c["config"]) for c in job["configs"][:4]]
    first = client.post(f"/agent/jobs/{job_id}/samples", json={"samples": samples}, headers=agent)
    assert first.status_code == 200, first.text
    assert first.json()["inserted"] == 4
    again = client.post(f"/agent/jobs/{job_id}/samples", json={"samples": samples}, headers=agent)
    assert again.json() == {**first.json(), "inserted": 0, "duplicates": 4, "fit_requested": False}
    after = client.get(f"/agent/jobs/{job_id}", headers=agent).json()
    assert after["done_indices"] == [c["index"] for c in job["configs"][:4]]
    assert client.get(f"/jobs/{job_id}").json()["heartbeat_at"] is not None


def test_bad_samples_are_422_naming_the_field(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    campaign = post_campaign(
        client, client_token, device["id"], op_types=["conv2d"], samples=3, seed=4
    )
    job_id = campaign["job_ids"][0]
    agent = auth(agent_token)
    job = client.get(f"/agent/jobs/{job_id}", headers=agent).json()
    conv = next(c for c in job["configs"] if c["op_type"] == "conv2d")
    sample = synthetic_sample(conv["index"], "conv2d", conv["config"])

    out_of_range = {**sample, "config": {**sample["config"], "kh": 99}}
    response = client.post(
        f"/agent/jobs/{job_id}/samples", json={"samples": [sample, out_of_range]}, headers=agent
    )
    assert response.status_code == 422
    assert field_names(response) == ["samples.1.config.kh"]
    negative = {**sample, "latency": {**sample["latency"], "median_ms": -1}}
    response = client.post(
        f"/agent/jobs/{job_id}/samples", json={"samples": [negative]}, headers=agent
    )
    assert field_names(response) == ["samples.0.latency.median_ms"]
    unknown_index = {**sample, "index": 999}
    response = client.post(
        f"/agent/jobs/{job_id}/samples", json={"samples": [unknown_index]}, headers=agent
    )
    assert field_names(response) == ["samples.0.index"]
    # Nothing was stored by the refused posts.
    assert client.get(f"/agent/jobs/{job_id}", headers=agent).json()["done_indices"] == []


def test_another_agent_may_not_report_for_the_device(
    client: TestClient, admin_token: str, client_token: str, device: dict[str, Any]
) -> None:
    campaign = post_campaign(client, client_token, device["id"], op_types=["relu"], samples=2)
    intruder = make_token(client, admin_token, "agent")
    job_id = campaign["job_ids"][0]
    assert client.post(f"/agent/jobs/{job_id}/start", headers=auth(intruder)).status_code == 403


def test_job_lifecycle_finishes_the_campaign_and_requests_a_fit(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    from server.db import get_sessionmaker
    from server.tables import Device

    campaign = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=12, seed=5
    )
    agent = auth(agent_token)
    *first_jobs, last_job = campaign["job_ids"]
    assert first_jobs, "the campaign needs more than one job"
    for job_id in campaign["job_ids"]:
        job = client.get(f"/agent/jobs/{job_id}", headers=agent).json()
        client.post(f"/agent/jobs/{job_id}/start", headers=agent)
        samples = [synthetic_sample(c["index"], c["op_type"], c["config"]) for c in job["configs"]]
        if job_id == last_job:  # the agent's flag for a sample still disturbed after its attempts
            samples[0]["environment"] = {"quiet": False, "canary_ratio": 1.6}
        client.post(f"/agent/jobs/{job_id}/samples", json={"samples": samples}, headers=agent)
        if job_id == last_job:
            response = client.post(
                f"/agent/jobs/{job_id}/fail", json={"error": "boom"}, headers=agent
            )
            assert response.json()["status"] == "failed"
        else:
            response = client.post(f"/agent/jobs/{job_id}/complete", json={}, headers=agent)
            assert response.json()["status"] == "done"
    finished = client.get(f"/campaigns/{campaign['id']}").json()
    assert finished["status"] == "done" and finished["finished_at"] is not None
    assert finished["jobs_failed"] == 1 and finished["jobs_done"] == len(first_jobs)
    assert finished["samples_done"] == finished["samples_requested"]
    assert finished["samples_disturbed"] == 1  # stored (so counted as done), left out of fits
    # A finished job cannot be started or completed again.
    assert client.post(f"/agent/jobs/{last_job}/start", headers=agent).status_code == 409
    with get_sessionmaker()() as session:
        stored = session.get(Device, device["id"])
        assert stored is not None and stored.fit_requested_at is not None


def test_fit_requests_are_deduplicated(
    client: TestClient,
    client_token: str,
    agent_token: str,
    device: dict[str, Any],
    migrated: Settings,
) -> None:
    threshold = migrated.fit_every_samples
    campaign = post_campaign(
        client, client_token, device["id"], op_types=["relu"], samples=3 * threshold, seed=6
    )
    agent = auth(agent_token)
    requested = []
    for job_id in campaign["job_ids"]:
        job = client.get(f"/agent/jobs/{job_id}", headers=agent).json()
        samples = [synthetic_sample(c["index"], c["op_type"], c["config"]) for c in job["configs"]]
        answer = client.post(
            f"/agent/jobs/{job_id}/samples", json={"samples": samples}, headers=agent
        )
        requested.append(answer.json()["fit_requested"])
    # One request once enough samples arrived, none for the burst after it (no fit ran meanwhile).
    assert requested.count(True) == 1
    # Asking for a refit while that fit is pending sends nothing more.
    refit = client.post(f"/models/{device['id']}/fit", headers=auth(client_token))
    assert refit.status_code == 202, refit.text
    assert refit.json() == {"device_id": device["id"], "requested": False, "current_version": None}


def test_models_are_404_before_the_first_fit(
    client: TestClient, client_token: str, device: dict[str, Any]
) -> None:
    assert client.get(f"/models/{device['id']}").status_code == 404
    assert client.get(f"/models/{device['id']}/versions").json() == []
    assert client.get(f"/models/{device['id']}/export").status_code == 404
    assert client.get("/models/987654321").status_code == 404
    # A refit needs a token, a known device, and samples to fit on.
    assert client.post(f"/models/{device['id']}/fit").status_code == 401
    headers = auth(client_token)
    assert client.post("/models/987654321/fit", headers=headers).status_code == 404
    no_samples = client.post(f"/models/{device['id']}/fit", headers=headers)
    assert no_samples.status_code == 409 and "no samples" in no_samples.text


def test_a_fresh_campaign_starts_the_devices_fit_samples_over(
    client: TestClient, client_token: str, agent_token: str, device: dict[str, Any]
) -> None:
    from server.db import get_sessionmaker
    from server.samples.repository import count_device_samples, device_samples, fit_start_campaign

    old = post_campaign(client, client_token, device["id"], op_types=["relu"], samples=6, seed=1)
    old_count = run_jobs_synthetically(client, agent_token, old["job_ids"])
    rejected = client.post(
        f"/devices/{device['id']}/campaigns", json={"fresh": "maybe"}, headers=auth(client_token)
    )
    assert rejected.status_code == 422 and "fresh" in rejected.text
    fresh = post_campaign(
        client, client_token, device["id"], op_types=["add"], samples=4, seed=2, fresh=True
    )
    assert fresh["fresh"] is True and old["fresh"] is False
    with get_sessionmaker()() as session:
        assert fit_start_campaign(session, device["id"]) == fresh["id"]
        assert count_device_samples(session, device["id"]) == 0  # until the fresh one measures
    fresh_count = run_jobs_synthetically(client, agent_token, fresh["job_ids"])
    # A later campaign without --fresh adds to the fresh one's samples.
    later = post_campaign(client, client_token, device["id"], op_types=["relu"], samples=3, seed=3)
    later_count = run_jobs_synthetically(client, agent_token, later["job_ids"])
    with get_sessionmaker()() as session:
        samples = device_samples(session, device["id"])
        assert {s.job_id for s in samples} == {*fresh["job_ids"], *later["job_ids"]}
        assert len(samples) == count_device_samples(session, device["id"])
        assert len(samples) == fresh_count + later_count
        relu = device_samples(session, device["id"], "relu")
        assert relu and {s.job_id for s in relu} <= set(later["job_ids"])
    # bench.accuracy reads the same scope with its own SQL (and every sample for a dump).
    from bench.accuracy import fetch_samples

    assert [s["job_id"] for s in fetch_samples(device["id"])] == [s.job_id for s in samples]
    everything = fetch_samples(device["id"], fit_scope=False)
    assert len(everything) == old_count + fresh_count + later_count


def test_a_version_counts_as_fitted_only_from_the_same_fresh_campaign() -> None:
    from server.tables import ModelVersion
    from server.timemodels.repository import FIT_START_METRIC, fitted_sample_count

    before = ModelVersion(sample_count=500, metrics={})  # fitted before fresh campaigns existed
    assert fitted_sample_count(before, None) == 500
    assert fitted_sample_count(before, 7) == 0  # campaign 7 started the samples over
    after = ModelVersion(sample_count=40, metrics={FIT_START_METRIC: 7})
    assert fitted_sample_count(after, 7) == 40 and fitted_sample_count(None, 7) == 0
