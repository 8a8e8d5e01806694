"""Model version queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.tables import ModelVersion


def latest_version(session: Session, device_id: int) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.device_id == device_id)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    ).one_or_none()


# The metric under which a version records the fresh campaign its samples start from
# (server.samples.repository.fit_start_campaign; absent or None: all the device's samples).
FIT_START_METRIC = "fit_start_campaign"


def fitted_sample_count(version: ModelVersion | None, start_campaign: int | None) -> int:
    """How many of the device's samples in the current fit scope ``version`` was fitted on: its
    ``sample_count`` if it was fitted from the same fresh campaign, else none of them."""
    if version is None or (version.metrics or {}).get(FIT_START_METRIC) != start_campaign:
        return 0
    return version.sample_count


def list_versions(session: Session, device_id: int) -> list[ModelVersion]:
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.device_id == device_id)
            .order_by(ModelVersion.version)
        )
    )


def add_version(
    session: Session,
    *,
    device_id: int,
    tree: dict[str, Any],
    metrics: dict[str, Any],
    sample_count: int,
    trained_at: datetime,
) -> ModelVersion:
    """Store a new version numbered one above the device's latest (UNIQUE(device, version)
    refuses a concurrent duplicate)."""
    current = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.device_id == device_id)
    )
    version = ModelVersion(
        device_id=device_id,
        version=int(current or 0) + 1,
        tree=tree,
        metrics=metrics,
        sample_count=sample_count,
        trained_at=trained_at,
    )
    session.add(version)
    session.flush()
    return version
