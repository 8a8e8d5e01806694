"""Reading the Redis broker's state: which ``bench.run`` messages are waiting or being run.

Kombu's Redis transport keeps a queue's messages in a Redis list named after the queue, and
messages delivered but not yet acknowledged in the hash ``unacked``. The reconciler reads both so
that a job whose message is only waiting behind others is never sent twice.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from fdiot.celery_config import BENCH_RUN

# Kombu's Redis transport: hash of delivered, unacknowledged messages (kombu.transport.redis).
UNACKED_KEY = "unacked"


def _job_id(raw: bytes | str) -> int | None:
    """The job id of a serialized ``bench.run`` message, or None for anything else."""
    try:
        message: dict[str, Any] = json.loads(raw)
        if message.get("headers", {}).get("task") != BENCH_RUN:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # protocol 2 body: [args, kwargs, embed]
        return int(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def waiting_job_ids(client: redis.Redis, queue: str) -> set[int]:
    """Ids of jobs with a ``bench.run`` message waiting (not yet delivered) in ``queue``."""
    found: set[int] = set()
    for raw in client.lrange(queue, 0, -1):
        job_id = _job_id(raw)
        if job_id is not None:
            found.add(job_id)
    return found


def pending_job_ids(client: redis.Redis, queue: str) -> set[int]:
    """Ids of jobs with a ``bench.run`` message waiting in ``queue`` or delivered and unacked."""
    found = waiting_job_ids(client, queue)
    for raw in client.hvals(UNACKED_KEY):
        try:
            message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if routing_key == queue:
            job_id = _job_id(json.dumps(message))
            if job_id is not None:
                found.add(job_id)
    return found
