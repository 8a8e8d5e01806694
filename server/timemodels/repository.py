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
