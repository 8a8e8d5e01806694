"""The Celery app of the server side: the fit worker (queue ``fit``), the control worker and beat
(queue ``control``). The server uses it only to *send* tasks by name.

Run the workers with::

    celery -A worker.celery_app worker -Q fit --concurrency 1 --prefetch-multiplier 1
    celery -A worker.celery_app worker -Q control --concurrency 1 --prefetch-multiplier 1 -B
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from celery import Celery

from fdiot.celery_config import FIT_TIME_LIMIT_S, SOFT_LIMIT_MARGIN_S, celery_config
from fdiot.settings import get_settings


class _SettingsConfig(Mapping[str, Any]):
    """Celery configuration read from the settings the first time Celery looks at it.

    Importing the app (the server does, at start-up) must not need Redis's address yet: in tests
    and with ``fdiot up`` the embedded stack is started after the import.
    """

    @cached_property
    def _values(self) -> dict[str, Any]:
        values = celery_config(get_settings())
        values["imports"] = ["worker.tasks"]
        # The fit worker and the reconciler: one task at a time, never more fetched than run.
        values["worker_concurrency"] = 1
        return values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


celery_app = Celery("fdiot", set_as_current=False)
celery_app.config_from_object(_SettingsConfig())

# Fit limits differ from a device job's (settings.job_time_limit_s): named here, used in tasks.py.
FIT_TIME_LIMITS_S = {
    "time_limit": FIT_TIME_LIMIT_S,
    "soft_time_limit": FIT_TIME_LIMIT_S - SOFT_LIMIT_MARGIN_S,
}

app = celery_app  # `celery -A worker.celery_app` finds `app`
