"""Queue and task names of the farm (docs/internals.md, "Queues and tasks").

Defined in :mod:`fdiot.celery_config` so that agents, which never import ``worker/``, read the very
same names; re-exported here for the server and the workers.
"""

from fdiot.celery_config import (
    BENCH_RUN,
    CAMPAIGN_ADAPT,
    CONTROL_QUEUE,
    DEVICE_QUEUE_PREFIX,
    FIT_QUEUE,
    JOBS_RECONCILE,
    TIMEMODEL_FIT,
    device_queue,
)

__all__ = [
    "BENCH_RUN",
    "CAMPAIGN_ADAPT",
    "CONTROL_QUEUE",
    "DEVICE_QUEUE_PREFIX",
    "FIT_QUEUE",
    "JOBS_RECONCILE",
    "TIMEMODEL_FIT",
    "device_queue",
]
