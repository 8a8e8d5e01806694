"""Device registration."""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.auth.service import Principal
from server.devices import repository
from server.devices.schemas import DeviceCreate
from server.errors import not_found
from server.tables import Device


def register_device(session: Session, body: DeviceCreate, principal: Principal) -> Device:
    """Idempotent on (name, execution_config); an agent registering a device becomes its agent."""
    agent_token_id = principal.token_id if principal.kind == "agent" else None
    return repository.upsert_device(
        session,
        name=body.name,
        kind=body.kind,
        host=body.host,
        execution_config=body.execution_config.model_dump(mode="json"),
        agent_token_id=agent_token_id,
    )


def device_or_404(session: Session, device_id: int, *, for_update: bool = False) -> Device:
    device = repository.get_device(session, device_id, for_update=for_update)
    if device is None:
        raise not_found("device", device_id)
    return device
