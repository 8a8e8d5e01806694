"""Device schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Generous bound on a host's threads (big servers have 256 hardware threads).
MAX_THREADS = 256


class ExecutionConfig(BaseModel):
    """Runtime + delegate + threads + core mask; a time model belongs to one such config."""

    model_config = ConfigDict(extra="allow")

    runtime: str = Field(min_length=1, max_length=64)
    runtime_version: str = Field(min_length=1, max_length=64)
    delegate: str = Field(min_length=1, max_length=64)
    threads: int = Field(ge=1, le=MAX_THREADS)
    core_mask: str | int | list[int] | None = None


class DeviceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["local", "adb", "ssh"]
    host: str = Field(min_length=1, max_length=200)
    execution_config: ExecutionConfig


class DeviceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    host: str
    execution_config: dict[str, Any]
    status: str
    last_seen_at: datetime | None
    created_at: datetime
