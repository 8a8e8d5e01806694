"""The agent's Celery app and its one task, ``bench.run(job_id)`` (docs/internals.md).

Run by ``fdiot agent`` as ``celery -A agent.tasks worker -Q device.<id> -c 1``. The task talks to
the server over HTTP only (agent token in ``FDIOT_TOKEN``): it reads the job, marks it running,
measures, and reports. Measurements run in a long-lived :class:`agent.runner.MeasurementChild`
(one per worker process), so a model that crashes the runtime fails its job, not the worker.

Crash safety: an ops job posts each sample as soon as it is measured and skips ``done_indices``
when it runs again, so a killed agent loses at most the op in flight and never duplicates one
(the server is idempotent on (job_id, index)). A Redis lock per device guards against two
benchmarks at once on one device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_shutdown

from fdiot.celery_config import BENCH_RUN, BUDGET_SPENT, celery_config
from fdiot.client import FarmClient
from fdiot.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The device lock is a lease renewed while the job runs, not one timeout longer than the job: if
# the agent is killed, the lease runs out within this many seconds and the restarted agent resumes.
LOCK_LEASE_S = 15.0
# Renew the lease three times per lease period, so one late renewal never loses it.
LOCK_RENEW_EVERY_S = LOCK_LEASE_S / 3
# A job whose device is busy is retried after this many seconds (a new message, same queue).
LOCK_BUSY_RETRY_S = 5
# Keep posted error messages under the server's limit (server/jobs/schemas.py MAX_ERROR_CHARS).
MAX_ERROR_CHARS = 10_000
# How many per-config failure messages a completed job's result lists in full.
MAX_LISTED_FAILURES = 50


def create_app(settings: Settings | None = None) -> Celery:
    """The agent's Celery app: the farm's shared configuration, plus this module's task."""
    settings = settings or get_settings()
    celery_app = Celery("fdiot-agent")
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = create_app()


class _WorkerState:
    """Per worker process: one HTTP client and one measuring child, created on first use."""

    client: FarmClient | None = None
    child: Any = None  # agent.runner.MeasurementChild (imported lazily: numpy, LiteRT)


_state = _WorkerState()


def agent_client(settings: Settings) -> FarmClient:
    """The worker's client: retries for as long as a job may run, so a restarting server never
    costs a measured sample."""
    if _state.client is None:
        _state.client = FarmClient(
            settings=settings,
            token=settings.token,
            retry_for_s=float(settings.job_time_limit_s),
            retry_server_errors=True,
        )
    return _state.client


def measurement_child(settings: Settings) -> Any:
    """The worker's long-lived measurer: a :class:`MeasurementChild` (it restarts itself after a
    crash) on the local CPU, a ``benchmark_model`` runner on an adb phone or SSH board."""
    if _state.child is None:
        from agent.devices import device_runner

        _state.child = device_runner(settings)
    return _state.child


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _close_child(**_: Any) -> None:
    if _state.child is not None:
        _state.child.close()
        _state.child = None
    if _state.client is not None:
        _state.client.close()
        _state.client = None


class DeviceBusy(Exception):
    """Another worker holds this device's lock."""


@contextmanager
def device_lock(redis_url: str, device_id: int) -> Iterator[None]:
    """Hold ``lock:device:<id>`` for the duration of the block; raise DeviceBusy if it is held.

    The lock is a lease of ``LOCK_LEASE_S`` renewed by a background thread, so it outlives the
    longest job while it runs and disappears soon after a killed agent.
    """
    connection = redis.Redis.from_url(redis_url)
    lock = connection.lock(f"lock:device:{device_id}", timeout=LOCK_LEASE_S)
    if not lock.acquire(blocking=False):
        connection.close()
        raise DeviceBusy(f"device {device_id} is running another job")
    stop = threading.Event()

    def _renew() -> None:
        while not stop.wait(LOCK_RENEW_EVERY_S):
            try:
                lock.reacquire()
            except (redis.RedisError, redis.exceptions.LockError) as error:
                log.warning("could not renew lock:device:%s: %s", device_id, error)

    renewer = threading.Thread(target=_renew, name=f"lock-device-{device_id}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        # The lease may have expired (e.g. Redis restarted): then there is nothing to release.
        with contextlib.suppress(redis.RedisError, redis.exceptions.LockError):
            lock.release()
        connection.close()


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _environment(model: bytes, settings: Settings) -> dict[str, Any]:
    """The sample's environment (runtime, threads, affinity, governor...) for ``model``."""
    from agent.environment import environment_info

    environment = dict(environment_info(model, settings))
    environment.setdefault("model_sha256", hashlib.sha256(model).hexdigest())
    return environment


@app.task(  # type: ignore[untyped-decorator]
    name=BENCH_RUN,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def bench_run(self: Task, job_id: int) -> dict[str, Any]:
    """Run one job on this worker's device: an ops batch or one network. Returns a summary."""
    settings = get_settings()
    client = agent_client(settings)
    job = client.agent_job(job_id)
    if job["status"] in ("done", "failed"):
        return {"job_id": job_id, "skipped": job["status"]}
    assert settings.redis_url is not None  # celery_config refused to build without it
    try:
        with device_lock(settings.redis_url, int(job["device_id"])):
            job = client.agent_job(job_id)  # fresh done_indices, now that the device is ours
            if job["status"] in ("done", "failed"):
                return {"job_id": job_id, "skipped": job["status"]}
            return run_job(client, job, settings)
    except DeviceBusy as busy:
        log.info("job %s: %s; retrying in %s s", job_id, busy, LOCK_BUSY_RETRY_S)
        raise self.retry(countdown=LOCK_BUSY_RETRY_S) from None


def run_job(client: FarmClient, job: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Start, measure and report one job; the device lock is held by the caller."""
    job_id = int(job["id"])
    client.start_job(job_id)
    try:
        if job["kind"] == "network":
            return _run_network(client, job_id, settings)
        return _run_ops(client, job, settings)
    except SoftTimeLimitExceeded:
        client.fail_job(job_id, f"time limit of {settings.job_time_limit_s} s exceeded")
        raise


def _run_network(client: FarmClient, job_id: int, settings: Settings) -> dict[str, Any]:
    from agent.runner import MeasurementError

    model = client.agent_job_model(job_id)
    try:
        stats = measurement_child(settings).measure_network(model)
    except MeasurementError as error:
        log.warning("job %s: model could not be measured: %s", job_id, error)
        client.fail_job(job_id, _error_text(error))
        return {"job_id": job_id, "status": "failed"}
    environment = _environment(model, settings)
    environment.update(stats.quality())
    result: dict[str, Any] = {
        **stats.to_dict(),
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "environment": environment,
    }
    client.complete_job(job_id, result)
    return {"job_id": job_id, "status": "done", "median_ms": stats.median_ms}


def _run_ops(client: FarmClient, job: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    from agent.runner import MeasurementError

    job_id = int(job["id"])
    done = set(job.get("done_indices") or [])
    pending = [c for c in job["configs"] if c["index"] not in done]
    # The campaign's device-time budget: measure until this job's samples took what is left.
    left_s = job.get("device_s_left")
    budget_left_s = float(left_s) if left_s is not None else math.inf
    if budget_left_s <= 0:
        skipped = {"samples_measured": 0, "skipped": BUDGET_SPENT, "configs_left": len(pending)}
        client.complete_job(job_id, skipped)
        return {"job_id": job_id, "status": "done", **skipped}
    child = measurement_child(settings)
    measured = 0
    device_s = 0.0
    stopped = False  # by the budget
    failures: list[dict[str, Any]] = []
    for item, outcome in _measure_stream(pending, child):
        if isinstance(outcome, MeasurementError):
            log.warning("job %s config %s failed: %s", job_id, item["index"], outcome)
            failures.append(
                {"index": item["index"], "op_type": item["op_type"], "error": str(outcome)}
            )
            continue
        stats, features, model = outcome
        device_s += stats.measure_s or 0.0
        environment = _environment(model, settings)
        environment.update(stats.quality())
        sample = {
            "index": item["index"],
            "op_type": item["op_type"],
            "config": item["config"],
            "features": features,
            "latency": stats.to_dict(),
            "environment": environment,
        }
        # One sample per post, as soon as it is measured: a killed agent loses one op at most.
        client.post_samples(job_id, [sample])
        measured += 1
        stopped = device_s >= budget_left_s
        if stopped:
            break  # the generator has built the next model but not measured it
    if failures and measured == 0 and len(done) == 0:
        summary = "; ".join(f"#{f['index']} {f['op_type']}: {f['error']}" for f in failures[:5])
        client.fail_job(job_id, _truncate(f"all {len(failures)} configs failed: {summary}"))
        return {"job_id": job_id, "status": "failed", "failed": len(failures)}
    result: dict[str, Any] = {
        "samples_measured": measured,
        "device_s": device_s,
        "samples_resumed": len(done),
        "configs_failed": len(failures),
        "failures": [
            {**f, "error": _truncate(f["error"], 500)} for f in failures[:MAX_LISTED_FAILURES]
        ],
    }
    if stopped:
        result["configs_left"] = len(pending) - measured - len(failures)
        result["stopped"] = BUDGET_SPENT
    client.complete_job(job_id, result)
    return {"job_id": job_id, "status": "done", **result}


def _truncate(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _measure_stream(
    configs: list[dict[str, Any]], child: Any
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Build and measure each ``{index, op_type, config}`` in order, yielding ``(item, outcome)``
    where outcome is ``(LatencyStats, features, model bytes)`` or a ``MeasurementError``.

    The next op model is built here while the child times the current one (the child is pinned
    to its own core), as :func:`agent.runner.measure_configs` does; this loop also keeps the
    model bytes, whose sha256 goes into the sample's environment.
    """
    from agent.runner import MeasurementError

    def prepare(item: dict[str, Any]) -> tuple[bytes, dict[str, Any]] | MeasurementError:
        from agent.builder import build_op_model
        from models.features import cost_features

        try:
            features = dict(cost_features(item["op_type"], item["config"]))
            return build_op_model(item["op_type"], item["config"]), features
        except Exception as error:  # a bad config fails its sample, not the job
            return MeasurementError(f"could not build {item['op_type']}: {_error_text(error)}")

    items = iter(configs)
    current = next(items, None)
    prepared = prepare(current) if current is not None else None
    while current is not None:
        assert prepared is not None
        following = next(items, None)
        if isinstance(prepared, MeasurementError):
            outcome: Any = prepared
            prepared_next = prepare(following) if following is not None else None
        else:
            model, features = prepared
            started = time.monotonic()
            child.submit(model, float(features.get("param_bytes", 0.0)))
            prepared_next = prepare(following) if following is not None else None
            try:
                stats = child.result()
            except MeasurementError as error:
                outcome = error
            else:
                if stats.measure_s is None:  # a runner that does not time itself (adb, ssh)
                    stats = dataclasses.replace(stats, measure_s=time.monotonic() - started)
                outcome = (stats, features, model)
        yield current, outcome
        current, prepared = following, prepared_next


__all__ = ["app", "bench_run", "create_app", "device_lock", "run_job"]
