"""Helpers of the server and worker tests: auth headers, tokens, device bodies, synthetic samples
for estimator-level checks, and a tiny real .tflite. Fixtures live in ``conftest.py``."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_token(client: TestClient, admin_token: str, kind: str) -> str:
    response = client.post(
        "/tokens",
        json={"kind": kind, "name": f"{kind}-{uuid.uuid4().hex[:6]}"},
        headers=auth(admin_token),
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def post_campaign(client: TestClient, token: str, device_id: int, **body: Any) -> dict[str, Any]:
    """POST a campaign for ``device_id`` with ``body`` as JSON; asserts 202 and returns it."""
    response = client.post(f"/devices/{device_id}/campaigns", json=body, headers=auth(token))
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


def run_sql(statement: str, **params: Any) -> None:
    """Run one SQL statement against the test database and commit (behind the API's back)."""
    from sqlalchemy import text

    from server.db import get_sessionmaker

    with get_sessionmaker()() as session:
        session.execute(text(statement), params)
        session.commit()


@contextmanager
def celery_worker(queues: str, node_name: str, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real one-process Celery worker of ``queues`` (logging to ``log_path``), stopped on exit."""
    from fdiot.processes import celery_worker_command

    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            celery_worker_command(queues, node_name),
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield worker
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def wait_for_worker(
    worker: subprocess.Popen[bytes],
    log_path: Path,
    done: Callable[[], bool],
    timeout_s: float = 90.0,  # a cold Celery start plus one task, with headroom on a busy CPU
) -> None:
    """Poll ``done`` every 0.5 s until true; fail with the worker's log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert worker.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.5)


def device_body(name: str | None = None, threads: int = 1) -> dict[str, Any]:
    return {
        "name": name or f"test-{uuid.uuid4().hex[:8]}",
        "kind": "local",
        "host": "testhost",
        "execution_config": {
            "runtime": "litert",
            "runtime_version": "2.3.0",
            "delegate": "xnnpack",
            "threads": threads,
            "core_mask": "1",
        },
    }


# Synthetic-but-realistic latencies for tests that need many samples without a device: an
# XNNPACK-like core at ~10 GFLOP/s that computes output channels in tiles of 16 (the step seen in
# shared/evidence/conv_channel_steps.csv), ~5 GB/s of memory bandwidth, 20 us per op.
SYNTHETIC_FLOPS_PER_MS = 10e9 / 1000
SYNTHETIC_BYTES_PER_MS = 5e9 / 1000
SYNTHETIC_OP_MS = 0.02
SYNTHETIC_TILE = 16


def synthetic_sample(
    index: int, op_type: str, config: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    import math

    import numpy as np

    from models.features import cost_features

    features = cost_features(op_type, config)
    width = int(config.get("cout", config.get("units", config.get("c", 1))) or 1)
    tiled = math.ceil(width / SYNTHETIC_TILE) * SYNTHETIC_TILE / width
    moved = features["input_bytes"] + features["output_bytes"] + features["param_bytes"]
    median_ms = (
        SYNTHETIC_OP_MS
        + features["flops"] * tiled / SYNTHETIC_FLOPS_PER_MS
        + moved / SYNTHETIC_BYTES_PER_MS
    )
    noise = float(np.random.default_rng([seed, index]).normal(1.0, 0.02))
    median_ms *= noise
    return {
        "index": index,
        "op_type": op_type,
        "config": config,
        "features": features,
        "latency": {
            "median_ms": median_ms,
            "p10_ms": median_ms * 0.98,
            "p90_ms": median_ms * 1.03,
            "std_ms": median_ms * 0.02,
            "runs": 50,
        },
        "environment": {"runtime": "synthetic", "host": "test"},
    }


def run_jobs_synthetically(
    client: TestClient, agent_token: str, job_ids: list[int], measure_s: float | None = None
) -> int:
    """Post a synthetic sample for every configuration of the jobs (each ``measure_s`` of device
    time, when given), then complete them, through the agent API; returns how many samples."""
    agent = auth(agent_token)
    posted_count = 0
    for job_id in job_ids:
        job = client.get(f"/agent/jobs/{job_id}", headers=agent).json()
        samples = [synthetic_sample(c["index"], c["op_type"], c["config"]) for c in job["configs"]]
        if measure_s is not None:
            for sample in samples:
                sample["environment"]["measure_s"] = measure_s
        posted = client.post(
            f"/agent/jobs/{job_id}/samples", json={"samples": samples}, headers=agent
        )
        assert posted.status_code == 200, posted.text
        done = client.post(f"/agent/jobs/{job_id}/complete", json={}, headers=agent)
        assert done.status_code == 200, done.text
        posted_count += len(samples)
    return posted_count


def tiny_tflite() -> bytes:
    """A real single-conv .tflite (written by the agent's flatbuffer builder, no TensorFlow)."""
    from agent.builder import build_op_model
    from models.opspace import validate_config

    config = validate_config("conv2d", {"h": 8, "cin": 4, "cout": 8, "kh": 3})
    return build_op_model("conv2d", config)
