"""``fdiot agent``: register this host's CPU as a device and serve its benchmark queue.

Steps: discover the local CPU device (:func:`agent.devices.local_device`), obtain an agent token,
register the device over HTTP (idempotent), then run one Celery worker consuming ``device.<id>``
with concurrency 1 and prefetch 1 as a child process, until SIGTERM / SIGINT. While the worker
runs, the device is re-registered periodically so that the server sees the agent alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from fdiot.celery_config import device_queue
from fdiot.client import FarmClient, FarmError
from fdiot.processes import keep_off_measurement_core
from fdiot.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The agent waits this long (seconds) for the server at start-up: `fdiot up` and the tests start
# the server and the agent together, and a lab host may boot before its server.
REGISTER_RETRY_S = 300.0
# The device is re-registered (its last_seen_at refreshed) this often while the worker runs.
HEARTBEAT_EVERY_S = 30.0
# After the first stop signal the worker finishes its job (warm shutdown); a second signal, or
# this long without exiting, stops it at once (cold shutdown; acks_late re-delivers the job).
WARM_SHUTDOWN_S = 120.0
# Linux prctl option: deliver a signal to the child when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
# Kombu's Redis transport keeps delivered, unacknowledged messages in this hash (and their
# delivery times in the sorted set), keyed by delivery tag (kombu.transport.redis.Channel).
_UNACKED_KEY = "unacked"
_UNACKED_INDEX_KEY = "unacked_index"


def agent_token_file(settings: Settings) -> Path:
    return settings.home / "agent_token"


def obtain_agent_token(settings: Settings, *, renew: bool = False) -> str:
    """The token this agent sends: ``FDIOT_TOKEN``, else (local mode, admin token at hand) one
    created through ``POST /tokens`` and kept in ``FDIOT_HOME/agent_token``.

    ``renew`` creates a fresh one even if the file exists (the stored one was refused).
    """
    if settings.token:
        return settings.token
    token_file = agent_token_file(settings)
    if token_file.exists() and not renew:
        return token_file.read_text().strip()
    if not settings.admin_token:
        raise FarmError(
            0,
            "no agent token: set FDIOT_TOKEN to one made by `fdiot token create --kind agent` "
            "(or run in local mode next to the admin token)",
        )
    with FarmClient(
        settings=settings, token=settings.admin_token, retry_for_s=REGISTER_RETRY_S
    ) as admin:
        created = admin.create_token("agent", f"agent@{socket.gethostname()}")
    settings.home.mkdir(parents=True, exist_ok=True)
    token_file.write_text(created["token"])
    token_file.chmod(0o600)
    return str(created["token"])


def register_device(settings: Settings, token: str) -> dict[str, Any]:
    """``POST /devices`` for the configured device (this host's CPU by default); returns it."""
    from agent.devices import configured_device

    spec = configured_device(settings)
    with FarmClient(settings=settings, token=token, retry_for_s=REGISTER_RETRY_S) as client:
        return client.register_device(spec.name, spec.kind, spec.host, dict(spec.execution_config))


def restore_unacked(redis_url: str, queue: str) -> int:
    """Put back on ``queue`` the messages an earlier run of this agent took but never finished.

    A killed worker leaves its ``acks_late`` message in Kombu's ``unacked`` hash, where Redis would
    return it only after the visibility timeout (hours). One agent serves each device queue, so at
    start-up every unacked message of that queue belongs to a dead worker: restoring it resumes
    the interrupted job now (its samples so far are kept; ``done_indices`` skips them). A second
    agent on the same device would at worst see a duplicate message, which the device lock and the
    job's status turn into a no-op. Returns how many messages were restored.
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    restored = 0
    try:
        for tag, raw in client.hgetall(_UNACKED_KEY).items():
            try:
                _, _, routing_key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            if routing_key != queue:
                continue

            def _move(pipe: Any, tag: Any = tag) -> None:
                current = pipe.hget(_UNACKED_KEY, tag)
                pipe.multi()
                pipe.hdel(_UNACKED_KEY, tag)
                pipe.zrem(_UNACKED_INDEX_KEY, tag)
                if current:
                    message, _exchange, _routing_key = json.loads(current)
                    with contextlib.suppress(KeyError, TypeError):
                        message["headers"]["redelivered"] = True
                        message["properties"]["delivery_info"]["redelivered"] = True
                    # Kombu consumes with BRPOP: RPUSH puts the message first in line, as
                    # Kombu's own restore does.
                    pipe.rpush(queue, json.dumps(message))

            client.transaction(_move, _UNACKED_KEY)
            restored += 1
    finally:
        client.close()
    return restored


def worker_command(device_id: int) -> list[str]:
    """The Celery worker serving one device: its own queue, one job at a time, no prefetch."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "agent.tasks",
        "worker",
        "-Q",
        device_queue(device_id),
        "-c",
        "1",
        "--prefetch-multiplier",
        "1",
        "-n",
        f"agent-{device_id}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM if the agent dies, so no orphan keeps the queue."""
    # Not Linux (no prctl): the agent's own signal handler is the only guard.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_agent(settings: Settings | None = None) -> int:
    """Register the local device and run its worker until SIGTERM/SIGINT; returns an exit code."""
    settings = settings or get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    token = obtain_agent_token(settings)
    try:
        device = register_device(settings, token)
    except FarmError as error:
        if error.status_code != 401 or settings.token:
            raise
        # The stored token belongs to an older database (e.g. a fresh test stack): make a new one.
        token = obtain_agent_token(settings, renew=True)
        device = register_device(settings, token)
    device_id = int(device["id"])
    log.info(
        "device %s (%s) registered; serving %s", device_id, device["name"], device_queue(device_id)
    )

    if settings.redis_url:
        restored = restore_unacked(settings.redis_url, device_queue(device_id))
        if restored:
            log.info(
                "restored %s interrupted job message(s) to %s", restored, device_queue(device_id)
            )
    env = dict(os.environ)
    env["FDIOT_TOKEN"] = token
    env["FDIOT_HOME"] = str(settings.home.resolve())
    env["FDIOT_URL"] = settings.url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    repo_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    # The worker builds models and talks HTTP off the core its measuring child is pinned to.
    restrict = keep_off_measurement_core(settings, env)

    def _prepare_worker() -> None:
        restrict()
        _die_with_parent()

    worker = subprocess.Popen(worker_command(device_id), env=env, preexec_fn=_prepare_worker)

    stop_signals = 0

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_signals
        stop_signals += 1
        # Celery: SIGTERM = finish the current job then exit; SIGQUIT = exit now.
        forward = signal.SIGTERM if stop_signals == 1 else signal.SIGQUIT
        log.info("stop requested (%s); %s to worker", signal.Signals(signum).name, forward.name)
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(forward)

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with FarmClient(settings=settings, token=token, retry_for_s=0.0) as heartbeat:
            while True:
                try:
                    code = worker.wait(
                        timeout=WARM_SHUTDOWN_S if stop_signals else HEARTBEAT_EVERY_S
                    )
                    break
                except subprocess.TimeoutExpired:
                    pass
                if stop_signals:
                    worker.send_signal(signal.SIGQUIT)
                    continue
                try:
                    heartbeat.register_device(
                        device["name"], device["kind"], device["host"], device["execution_config"]
                    )
                except FarmError as error:
                    log.warning("heartbeat failed: %s", error.detail)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    log.info("worker exited with %s", code)
    # A worker stopped by our own signal is a clean stop.
    return 0 if stop_signals or code == 0 else code
