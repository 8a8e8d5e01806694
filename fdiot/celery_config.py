"""Queue names, task names and the Celery configuration shared by the server, the fit worker and
the agents (docs/internals.md, "Queues and tasks").

Agents never import ``server/`` or ``worker/``; this module is the one place both sides read the
names from, so a renamed queue cannot split the farm in two.
"""

from __future__ import annotations

from typing import Any

from fdiot.settings import Settings

# Task names (dotted, stable: they are what travels in a message).
BENCH_RUN = "bench.run"  # bench.run(job_id): one campaign job or one network benchmark on a device
TIMEMODEL_FIT = "timemodel.fit"  # timemodel.fit(device_id, force=False): fit a new model version
JOBS_RECONCILE = "jobs.reconcile"  # jobs.reconcile(): re-send lost messages, requeue stale jobs
# campaign.adapt(campaign_id): plan a campaign's adaptive round once its first round ended; on
# the fit queue because ranking the samples by cross-validated error fits trees (CPU-bound).
CAMPAIGN_ADAPT = "campaign.adapt"

# result.skipped (or result.stopped) of a campaign job left unrun (or cut short) because the
# campaign's device-time budget was spent: written by the server and by the agent.
BUDGET_SPENT = "the campaign's device-time budget was spent"

# Queue consumed by the fit worker: CPU-bound tree fitting, kept away from device queues.
FIT_QUEUE = "fit"
# Queue consumed by the control worker: the periodic reconciler (beat) and other housekeeping.
CONTROL_QUEUE = "control"
# Prefix of the per-device queues: one agent worker (concurrency 1) consumes each.
DEVICE_QUEUE_PREFIX = "device."

# Fit time limit: fitting a few thousand samples with cross-validation takes seconds to minutes
# on one core; half an hour means something is wrong.
FIT_TIME_LIMIT_S = 1800
# Soft limits fire this many seconds before the hard ones so that a task can record its failure.
SOFT_LIMIT_MARGIN_S = 30


def device_queue(device_id: int) -> str:
    """Name of the queue consumed by the agent worker of ``device_id``."""
    return f"{DEVICE_QUEUE_PREFIX}{device_id}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration every process of the farm uses (server, fit worker, agents)."""
    if settings.redis_url is None:
        raise RuntimeError("REDIS_URL is not set and no embedded stack is running")
    return {
        "broker_url": settings.redis_url,
        # Results travel through Postgres (job rows, model versions), never through Celery.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        # A message is acknowledged only when the task finishes: a killed worker loses no job.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per worker process: a device runs one benchmark at a time.
        "worker_prefetch_multiplier": 1,
        # Redis re-delivers an unacknowledged message after this long: it must exceed the
        # longest job or a running benchmark would run twice (STYLE.md, "Traps").
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "task_time_limit": settings.job_time_limit_s,
        "task_soft_time_limit": max(1, settings.job_time_limit_s - SOFT_LIMIT_MARGIN_S),
        "task_routes": {
            TIMEMODEL_FIT: {"queue": FIT_QUEUE},
            CAMPAIGN_ADAPT: {"queue": FIT_QUEUE},
            JOBS_RECONCILE: {"queue": CONTROL_QUEUE},
            # bench.run has no static route: the sender names device.<id>.
        },
        "task_default_queue": CONTROL_QUEUE,
        "beat_schedule": {
            "jobs-reconcile": {
                "task": JOBS_RECONCILE,
                "schedule": settings.reconcile_every_s,
                "options": {"queue": CONTROL_QUEUE},
            }
        },
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
