"""``/devices``."""

from __future__ import annotations

from fastapi import APIRouter

from server.auth.dependencies import RegistrarDep
from server.db import SessionDep
from server.devices import repository
from server.devices.schemas import DeviceCreate, DeviceRead
from server.devices.service import device_or_404, register_device

router = APIRouter(tags=["devices"])


@router.get("/devices")
def list_devices(session: SessionDep) -> list[DeviceRead]:
    return [DeviceRead.model_validate(d) for d in repository.list_devices(session)]


@router.get("/devices/{device_id}")
def get_device(device_id: int, session: SessionDep) -> DeviceRead:
    return DeviceRead.model_validate(device_or_404(session, device_id))


@router.post("/devices")
def create_device(body: DeviceCreate, session: SessionDep, principal: RegistrarDep) -> DeviceRead:
    """Register a device; posting the same (name, execution_config) again returns the same row."""
    return DeviceRead.model_validate(register_device(session, body, principal))
