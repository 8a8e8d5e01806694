"""End to end: the farm's real processes (uvicorn server, Celery fit worker, `fdiot agent` with its
Celery worker measuring with LiteRT on this CPU), real PostgreSQL and Redis.

Each test drives the farm through the HTTP API or the CLI and asserts on what ends up in
PostgreSQL: every requested sample measured exactly once, even when the agent, the server or the
fit worker is killed (SIGKILL) in the middle of a campaign. No assertion is about a duration;
the timeouts below only keep a broken farm from hanging the test run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from fdiot.client import FarmClient

pytestmark = pytest.mark.stack

# Safety limits (seconds) on waits: generous for a loaded 2-core host, never asserted on.
CAMPAIGN_TIMEOUT_S = 540.0
JOB_TIMEOUT_S = 300.0
FIT_TIMEOUT_S = 300.0
OP_TYPES = ["conv2d", "fully_connected"]


def _client(farm: Any) -> FarmClient:
    client: FarmClient = farm.client()
    return client


def _campaign_samples(farm: Any, campaign_id: int) -> list[dict[str, Any]]:
    """The campaign's sample rows as stored in PostgreSQL."""
    with (
        psycopg.connect(farm.settings.database_url) as conn,
        conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
    ):
        cur.execute(
            """
            SELECT s.job_id, s.index, s.op_type, s.config, s.median_ms, s.p10_ms, s.p90_ms,
                   s.runs, s.environment
            FROM samples s JOIN jobs j ON j.id = s.job_id
            WHERE j.campaign_id = %s
            """,
            (campaign_id,),
        )
        return list(cur.fetchall())


def _assert_complete_once(farm: Any, campaign: dict[str, Any]) -> list[dict[str, Any]]:
    """The campaign finished with every requested sample stored exactly once, measured by LiteRT."""
    assert campaign["status"] == "done", campaign
    assert campaign["jobs_failed"] == 0, campaign
    assert campaign["samples_done"] == campaign["samples_requested"], campaign
    rows = _campaign_samples(farm, campaign["id"])
    keys = [(row["job_id"], row["index"]) for row in rows]
    assert len(keys) == len(set(keys)), "a sample was stored twice"
    assert len(rows) == campaign["samples_requested"], "a sample was lost"
    for row in rows:
        assert row["op_type"] in campaign["op_types"]
        assert row["median_ms"] > 0
        assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["runs"] >= farm.settings.min_runs
        assert row["environment"]["runtime"] == "litert"
        assert row["environment"]["runtime_version"] == "2.3.0"
        assert len(row["environment"]["model_sha256"]) == 64
    return rows


def _wait_progress(client: FarmClient, campaign_id: int, samples: int) -> dict[str, Any]:
    """Wait until at least ``samples`` samples of the campaign are stored (and it is not done)."""
    deadline = time.monotonic() + CAMPAIGN_TIMEOUT_S
    while time.monotonic() < deadline:
        campaign = client.campaign(campaign_id)
        if campaign["samples_done"] >= samples or campaign["status"] == "done":
            return campaign
        time.sleep(0.2)
    raise TimeoutError(f"campaign {campaign_id} made no progress")


def _wait_model(client: FarmClient, device_id: int, min_samples: int) -> dict[str, Any]:
    """Wait for a model version of the device fitted on at least ``min_samples`` samples."""
    return client.wait_model(
        device_id, min_samples=min_samples, timeout_s=FIT_TIMEOUT_S, poll_s=1.0
    )


@pytest.fixture(scope="module")
def tiny_network() -> bytes:
    """A small CNN (conv, pool, depthwise conv, dense) converted by TFLiteConverter."""
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 1, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    flatbuffer: bytes = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return flatbuffer


def test_agent_registered_the_local_cpu(farm: Any) -> None:
    runner = CliRunner()
    result = runner.invoke(_cli_app(), ["devices", "--json"])
    assert result.exit_code == 0, result.output
    devices = json.loads(result.output)
    local = next(d for d in devices if d["id"] == farm.device_id)
    assert local["kind"] == "local"
    assert local["execution_config"]["runtime"] == "litert"
    assert local["execution_config"]["threads"] == farm.settings.threads
    assert {"id", "name", "kind", "execution_config", "status"} <= set(local)


def test_small_campaign_fills_postgres_and_fits_a_model(farm: Any, tmp_path: Path) -> None:
    client = _client(farm)
    # 40 samples: conv2d gets 26, so its tree (MIN_SAMPLES_FOR_TREE = 12) survives a noisy host
    # leaving samples out as disturbed; at 24 (15 conv2d) a CI run beside other work lost it.
    campaign = client.create_campaign(farm.device_id, op_types=OP_TYPES, samples=40, seed=1)
    campaign = client.wait_campaign(campaign["id"], timeout_s=CAMPAIGN_TIMEOUT_S)
    rows = _assert_complete_once(farm, campaign)
    # The planner adds invoke_overhead samples: the fixed cost every network prediction needs.
    assert set(OP_TYPES) <= {row["op_type"] for row in rows}

    current = _wait_model(client, farm.device_id, min_samples=len(rows))
    assert current["version"] >= 1
    # Which op types get a tree depends on the fitter's minimum samples per type.
    assert set(OP_TYPES) & set(current["op_types"])

    result = CliRunner().invoke(_cli_app(), ["models", "--device", str(farm.device_id)])
    assert result.exit_code == 0, result.output
    assert "conv2d" in result.output

    # --export writes the whole model; it rebuilds with the network terms the farm fitted.
    from models.timemodel import DeviceTimeModel

    path = tmp_path / "model.json"
    args = ["models", "--device", str(farm.device_id), "--export", str(path)]
    result = CliRunner().invoke(_cli_app(), args)
    assert result.exit_code == 0, result.output
    assert "wrote time model v" in result.output and str(path) in result.output
    model = DeviceTimeModel.from_dict(json.loads(path.read_text()))
    served = client.current_model(farm.device_id)  # the version exported (no sample since)
    assert set(model.trees) == set(served["op_types"])
    assert model.overhead_ms == pytest.approx(served["overhead_ms"])
    assert model.network_rules() == served["network_rules"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing to split")
def test_services_stay_off_the_measurement_core(farm: Any) -> None:
    import psutil

    # Runs after a campaign, so the agent's measuring child exists.
    core = int(os.environ.get("FDIOT_CORE") or max(os.sched_getaffinity(0)))
    measuring_children = 0
    for role in ("server", "fit-worker", "agent"):
        proc = psutil.Process(farm.processes.procs[role].pid)
        for member in [proc, *proc.children(recursive=True)]:
            if "agent._measure_child" in " ".join(member.cmdline()):
                assert member.cpu_affinity() == [core], member.cmdline()
                measuring_children += 1
            else:
                assert core not in member.cpu_affinity(), (role, member.cmdline())
    assert measuring_children == 1


def test_benchmark_of_an_uploaded_network(farm: Any, tiny_network: bytes, tmp_path: Path) -> None:
    path = tmp_path / "tiny_cnn.tflite"
    path.write_bytes(tiny_network)
    result = CliRunner().invoke(
        _cli_app(), ["bench", "--device", str(farm.device_id), "--json", str(path)]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["runs"] >= farm.settings.min_runs
    assert 0 < answer["p10_ms"] <= answer["median_ms"] <= answer["p90_ms"]
    assert answer["model_sha256"] == hashlib.sha256(tiny_network).hexdigest()

    job = _client(farm).job(answer["job_id"])
    assert job["status"] == "done"
    assert job["result"]["environment"]["runtime"] == "litert"


def test_model_the_runtime_cannot_run_fails_its_job_and_the_agent_serves_on(
    farm: Any, tiny_network: bytes
) -> None:
    from agent.builder import build_op_model

    # A valid flatbuffer whose activations (30000 x 30000 x 4 float32 = 14 GB) exceed the
    # measuring child's memory cap: LiteRT cannot allocate it.
    unrunnable = build_op_model(
        "conv2d",
        {
            "h": 30000,
            "w": 30000,
            "cin": 4,
            "cout": 4,
            "kh": 1,
            "kw": 1,
            "stride": 1,
            "padding": "same",
            "activation": "none",
        },
    )
    client = _client(farm)
    bad = client.upload_benchmark(farm.device_id, unrunnable, name="unrunnable.tflite")
    bad = client.wait_job(bad["id"], timeout_s=JOB_TIMEOUT_S)
    assert bad["status"] == "failed"
    assert bad["error"]

    agent = farm.processes.procs["agent"]
    good = client.upload_benchmark(farm.device_id, tiny_network, name="after_failure.tflite")
    good = client.wait_job(good["id"], timeout_s=JOB_TIMEOUT_S)
    assert good["status"] == "done", good
    assert good["result"]["median_ms"] > 0
    assert agent.poll() is None, "the agent process died"


def test_the_agent_stops_measuring_when_the_campaign_budget_is_spent(farm: Any) -> None:
    from fdiot.celery_config import BUDGET_SPENT

    client = _client(farm)
    budget_s = 0.5  # a few samples' worth with the test settings
    campaign = client.create_campaign(
        farm.device_id, op_types=OP_TYPES, samples=40, seed=4, max_device_minutes=budget_s / 60
    )
    campaign = client.wait_campaign(campaign["id"], timeout_s=CAMPAIGN_TIMEOUT_S)
    assert campaign["status"] == "done", campaign
    assert 0 < campaign["samples_done"] < campaign["samples_requested"], campaign

    rows = sorted(_campaign_samples(farm, campaign["id"]), key=lambda r: (r["job_id"], r["index"]))
    spent = [float(row["environment"]["measure_s"]) for row in rows]
    # The agent stopped at the sample that crossed the budget, not before nor later.
    assert sum(spent[:-1]) < budget_s <= sum(spent)
    assert campaign["device_minutes"] * 60 == pytest.approx(sum(spent))
    jobs = [client.job(job_id) for job_id in campaign["job_ids"]]
    last = next(i for i, job in enumerate(jobs) if job["id"] == rows[-1]["job_id"])
    assert jobs[last]["result"]["stopped"] == BUDGET_SPENT
    assert all("stopped" not in job["result"] for job in jobs[:last])
    assert all(job["result"]["skipped"] == BUDGET_SPENT for job in jobs[last + 1 :])
    assert campaign["jobs_skipped"] == len(jobs) - last - 1 > 0


def test_killed_agent_resumes_the_campaign_without_loss_or_duplicates(farm: Any) -> None:
    client = _client(farm)
    campaign = client.create_campaign(farm.device_id, op_types=OP_TYPES, samples=32, seed=2)
    progress = _wait_progress(client, campaign["id"], samples=3)
    assert progress["status"] != "done", "campaign finished before the agent could be killed"

    farm.processes.kill("agent")  # SIGKILL to its process group: daemon, worker, measuring child
    farm.processes.start("agent")

    campaign = client.wait_campaign(campaign["id"], timeout_s=CAMPAIGN_TIMEOUT_S)
    _assert_complete_once(farm, campaign)


def test_killed_server_and_fit_worker_lose_no_sample(farm: Any) -> None:
    client = _client(farm)
    campaign = client.create_campaign(farm.device_id, op_types=OP_TYPES, samples=32, seed=3)
    progress = _wait_progress(client, campaign["id"], samples=3)
    assert progress["status"] != "done", "campaign finished before the server could be killed"

    farm.processes.kill("fit-worker")
    farm.processes.kill("server")
    time.sleep(3.0)  # the agent keeps measuring and retrying its posts while the server is away
    farm.processes.start("server")  # waits for /healthz
    farm.processes.start("fit-worker")

    campaign = client.wait_campaign(campaign["id"], timeout_s=CAMPAIGN_TIMEOUT_S)
    rows = _assert_complete_once(farm, campaign)
    _wait_model(client, farm.device_id, min_samples=len(rows))


def _cli_app() -> Any:
    from fdiot.cli import app
    from fdiot.settings import get_settings

    get_settings.cache_clear()  # the farm fixture set FDIOT_URL / FDIOT_PORT after first use
    return app


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing to split")
def test_fdiot_up_moves_itself_and_what_it_starts_off_the_measurement_core(tmp_path: Path) -> None:
    """`fdiot up` calls reserve_measurement_core before starting PostgreSQL and Redis: they
    inherit its affinity. Checked in a child interpreter so this test process keeps its cores."""
    code = (
        "import json, os, subprocess, sys\n"
        "from fdiot.processes import reserve_measurement_core\n"
        "from fdiot.settings import Settings\n"
        f"core = reserve_measurement_core(Settings(home={str(tmp_path)!r}))\n"
        "probe = 'import os; print(sorted(os.sched_getaffinity(0)))'\n"
        "started = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)\n"
        "print(json.dumps({'core': core, 'env': os.environ['FDIOT_CORE'],\n"
        "    'own': sorted(os.sched_getaffinity(0)), 'started': json.loads(started.stdout)}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    core = max(os.sched_getaffinity(0))
    assert seen["core"] == int(seen["env"]) == core
    assert seen["own"] and core not in seen["own"]
    assert seen["started"] == seen["own"]
