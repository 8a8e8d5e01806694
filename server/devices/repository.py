"""Device queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from server.tables import Device


def upsert_device(
    session: Session,
    *,
    name: str,
    kind: str,
    host: str,
    execution_config: dict[str, Any],
    agent_token_id: int | None,
) -> Device:
    """Insert the device or, if (name, execution_config) exists, refresh it; returns the row."""
    values: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "host": host,
        "execution_config": execution_config,
        "status": "online",
        "last_seen_at": func.now(),
    }
    refresh: dict[str, Any] = {
        "host": host,
        "kind": kind,
        "status": "online",
        "last_seen_at": func.now(),
    }
    if agent_token_id is not None:
        values["agent_token_id"] = agent_token_id
        refresh["agent_token_id"] = agent_token_id
    statement = (
        insert(Device)
        .values(**values)
        .on_conflict_do_update(constraint="uq_devices_name_execution_config", set_=refresh)
        .returning(Device.id)
    )
    device_id = session.execute(statement).scalar_one()
    device = session.get(Device, device_id, populate_existing=True)
    assert device is not None
    return device


def get_device(session: Session, device_id: int, *, for_update: bool = False) -> Device | None:
    return session.get(Device, device_id, with_for_update=for_update)


def list_devices(session: Session) -> list[Device]:
    return list(session.scalars(select(Device).order_by(Device.id)))


def touch_device(session: Session, device_id: int) -> None:
    """Record that the device's agent reported just now."""
    session.execute(
        update(Device)
        .where(Device.id == device_id)
        .values(last_seen_at=func.now(), status="online")
    )


def claim_fit_request(session: Session, device_id: int, stale_before: datetime) -> bool:
    """Atomically mark a fit as requested unless one is already pending (requested after
    ``stale_before``); True when the caller should send the message."""
    claimed = session.execute(
        update(Device)
        .where(
            Device.id == device_id,
            (Device.fit_requested_at.is_(None)) | (Device.fit_requested_at < stale_before),
        )
        .values(fit_requested_at=func.now())
        .returning(Device.id)
    ).first()
    return claimed is not None


def clear_fit_request(session: Session, device_id: int) -> None:
    session.execute(update(Device).where(Device.id == device_id).values(fit_requested_at=None))
