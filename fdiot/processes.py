"""The farm's long-running processes and how to start them, shared by ``fdiot up`` and the tests.

Each role is a separate OS process so that any one of them can crash (or be killed in a fault
test) without taking the others down; PostgreSQL stays the source of truth between restarts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fdiot.settings import Settings

ROLES = ("server", "fit-worker", "agent")


def split_cores(settings: Settings) -> tuple[int, set[int] | None]:
    """The core that measurements own, and the cores every other process of the farm may use.

    Fits, HTTP handling and model building would otherwise share the measuring core and show up
    as noise in the latencies; with a single core there is nothing to split (``None``).
    """
    allowed = os.sched_getaffinity(0)
    core = settings.core if settings.core is not None else max(allowed)
    others = allowed - {core}
    return core, (others or None)


def reserve_measurement_core(settings: Settings) -> int:
    """Fix the measurement core (``FDIOT_CORE``) and move this process off it, so that what it
    starts next (embedded PostgreSQL and Redis, the server, fit worker and agent) stays off it too;
    only the agent's measurement child pins itself there. Returns the core."""
    core, others = split_cores(settings)
    settings.core = core
    os.environ["FDIOT_CORE"] = str(core)
    if others:
        os.sched_setaffinity(0, others)
    return core


def keep_off_measurement_core(settings: Settings, env: dict[str, str]) -> Callable[[], None]:
    """Pin the measurement core in ``env`` (``FDIOT_CORE``) and return a ``preexec_fn`` that keeps
    a child process off it."""
    core, others = split_cores(settings)
    env["FDIOT_CORE"] = str(core)

    def restrict() -> None:
        if others:
            os.sched_setaffinity(0, others)

    return restrict


def celery_worker_command(queues: str, node_name: str, extra: Sequence[str] = ()) -> list[str]:
    """The command line of a one-process Celery worker of ``worker.celery_app``.

    ``queues`` is Celery's comma-separated ``-Q`` list; ``extra`` options (such as ``-B``) go
    before the node name. One process, one message at a time: a fit or a reconcile pass is long
    and must not hold a second message hostage.
    """
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        "-c",
        "1",
        "--prefetch-multiplier",
        "1",
        *extra,
        "-n",
        node_name,
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        "INFO",
    ]


def role_command(role: str, settings: Settings) -> list[str]:
    """The command line of one role, run with this interpreter."""
    python = sys.executable
    if role == "server":
        return [
            python,
            "-m",
            "uvicorn",
            "server.main:app",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--log-level",
            "warning",
        ]
    if role == "fit-worker":
        schedule = str((settings.home / "celerybeat-schedule").resolve())
        return celery_worker_command("fit,control", "fit@%h", extra=("-B", "-s", schedule))
    if role == "agent":
        return [python, "-m", "fdiot.cli", "agent"]
    raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")


def check_port_free(host: str, port: int) -> None:
    """Raise unless ``host:port`` can be bound: a server already there (another farm) would
    answer this farm's health check, and its clients would then get 401s from it."""
    with socket.socket() as sock:
        # As uvicorn binds: connections of a server just stopped (TIME_WAIT) do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as busy:
            raise RuntimeError(
                f"{host}:{port} is in use (another farm's server?): stop it with `fdiot down` "
                "in its FDIOT_HOME, or set FDIOT_PORT and FDIOT_URL for this one"
            ) from busy


@dataclass
class FarmProcesses:
    """Starts, stops and kills the farm's roles; logs go to ``FDIOT_HOME/logs/<role>.log``."""

    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log_path(self, role: str) -> Path:
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"{role}.log"

    def start(self, role: str) -> subprocess.Popen[bytes]:
        if role in self.procs and self.procs[role].poll() is None:
            return self.procs[role]
        if role == "server":
            check_port_free(self.settings.host, self.settings.port)
        log_file = self.log_path(role).open("ab")
        proc = subprocess.Popen(
            role_command(role, self.settings),
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a signal to the group reaches Celery's pool children too
            preexec_fn=keep_off_measurement_core(self.settings, self.env),
        )
        self.procs[role] = proc
        if role == "server":
            self.wait_healthy()
        return proc

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.settings.host}:{self.settings.port}/healthz"
        while time.monotonic() < deadline:
            proc = self.procs.get("server")
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log_path('server')}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not become healthy; see {self.log_path('server')}")

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        """Kill a role's whole process group (SIGKILL by default: a crash, not a shutdown)."""
        proc = self.procs.pop(role, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        for role in reversed(list(self.procs)):
            self.kill(role, signal.SIGTERM)
