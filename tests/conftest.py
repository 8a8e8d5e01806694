"""Session fixtures: a real embedded PostgreSQL and Redis, the real migrations, and the farm's real
processes (uvicorn server, Celery fit worker, Celery agent measuring with LiteRT on this CPU).

Nothing here is a stand-in: tests that need the stack get the same servers ``make demo`` runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from fdiot.client import FarmClient
from fdiot.processes import FarmProcesses
from fdiot.settings import Settings, get_settings

# Faster-but-real measurement protocol for tests: fewer timed runs, same child process and pinning.
_TEST_ENV = {
    "FDIOT_WARMUP_RUNS": "3",
    "FDIOT_MIN_RUNS": "10",
    "FDIOT_MIN_TIME_S": "0.02",
    "FDIOT_MAX_REMEASURE": "1",
    # The suite shares two cores with the farm under test, so canaries run slow all the time; a
    # lenient limit keeps small test campaigns from losing their samples as "disturbed" (the
    # canary protocol itself is tested in test_agent_runner).
    "FDIOT_MAX_CANARY_RATIO": "2.5",
    # A canary over that limit waits at most this long for a quiet window before each attempt.
    "FDIOT_CANARY_WAIT_S": "0.5",
    # Networks pause before re-measuring a disturbed attempt (op samples do not): kept short.
    "FDIOT_NETWORK_DISTURBED_PAUSE_S": "0.1",
    # Short reconciler periods so fault tests see lost messages re-sent within seconds.
    "FDIOT_RECONCILE_AFTER_S": "6",
    "FDIOT_RECONCILE_EVERY_S": "2",
    "FDIOT_JOB_STALE_AFTER_S": "15",
    "FDIOT_CAMPAIGN_JOB_SIZE": "8",
    "FDIOT_FIT_EVERY_SAMPLES": "20",
}


@pytest.fixture(scope="session")
def fdiot_home() -> Iterator[Path]:
    # Not under pytest's basetemp: a second pytest run resets that to mode 0700, which would lock
    # out the embedded PostgreSQL (it runs as its own user when we are root). A short path too:
    # PostgreSQL's Unix socket path must stay under 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="fdiot-", dir="/tmp"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(fdiot_home: Path) -> Iterator[Settings]:
    """Embedded PostgreSQL + Redis in a fresh FDIOT_HOME (or DATABASE_URL/REDIS_URL if set)."""
    from fdiot.stack import ensure_stack, stop_stack

    saved = dict(os.environ)
    os.environ["FDIOT_HOME"] = str(fdiot_home)
    os.environ["FDIOT_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
    os.environ.update(_TEST_ENV)
    get_settings.cache_clear()
    settings = get_settings()
    ensure_stack(settings)
    try:
        yield settings
    finally:
        if not (saved.get("DATABASE_URL") and saved.get("REDIS_URL")):
            stop_stack(settings)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def migrated(stack: Settings) -> Settings:
    """The real Alembic migrations applied to the test database."""
    from server.prestart import upgrade_database

    upgrade_database()
    return stack


@pytest.fixture(scope="session")
def admin_token(stack: Settings) -> str:
    return stack.ensure_admin_token()


@dataclass
class Farm:
    """The running farm: base URL, admin client, the local CPU device, and process control."""

    settings: Settings
    processes: FarmProcesses
    url: str
    admin_token: str
    device_id: int

    def client(self, token: str | None = None) -> FarmClient:
        return FarmClient(base_url=self.url, token=token or self.admin_token)


@pytest.fixture(scope="module")
def farm(migrated: Settings, admin_token: str) -> Iterator[Farm]:
    """Server, fit worker and agent as real subprocesses; waits for the local device to register.

    Module-scoped: the running fit worker and reconciler would otherwise act on the rows of later
    API-level tests that drive the same queues by hand."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    os.environ["FDIOT_PORT"] = str(port)
    os.environ["FDIOT_URL"] = url
    # Other tests register "local" devices of their own: find the agent's by its name.
    agent_name = f"test-agent-{secrets.token_hex(4)}"
    os.environ["FDIOT_AGENT_NAME"] = agent_name
    get_settings.cache_clear()
    settings = get_settings()
    processes = FarmProcesses(settings=settings, env=dict(os.environ))
    try:
        processes.start("server")
        processes.start("fit-worker")
        processes.start("agent")
        client = FarmClient(base_url=url, token=admin_token)
        deadline = time.monotonic() + 120
        devices: list[dict[str, object]] = []
        while time.monotonic() < deadline and not devices:
            devices = [d for d in client.devices() if d["name"] == agent_name]
            time.sleep(0.5)
        if not devices:
            raise RuntimeError(f"agent did not register; see {processes.log_path('agent')}")
        device_id = int(str(devices[0]["id"]))
        yield Farm(settings, processes, url, admin_token, device_id)
    finally:
        processes.stop_all()


@pytest.fixture
def client(migrated: Settings) -> Iterator[TestClient]:
    """The real app in-process (real PostgreSQL and Redis), for API-level tests."""
    from server.db import reset_engine
    from server.main import app

    reset_engine()  # the engine follows the stack this session started
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def broker(migrated: Settings) -> redis.Redis:
    assert migrated.redis_url is not None
    return redis.Redis.from_url(migrated.redis_url)


@pytest.fixture
def agent_token(client: TestClient, admin_token: str) -> str:
    from tests.helpers import make_token

    return make_token(client, admin_token, "agent")


@pytest.fixture
def client_token(client: TestClient, admin_token: str) -> str:
    from tests.helpers import make_token

    return make_token(client, admin_token, "client")


@pytest.fixture
def device(client: TestClient, agent_token: str) -> dict[str, Any]:
    """A fresh device registered by ``agent_token``'s agent: no state shared between tests."""
    from tests.helpers import auth, device_body

    response = client.post("/devices", json=device_body(), headers=auth(agent_token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
