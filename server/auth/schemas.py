"""Token schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class TokenCreate(BaseModel):
    kind: Literal["agent", "client"]
    name: str = Field(min_length=1, max_length=200)


class TokenCreated(BaseModel):
    """The new token; ``token`` is shown here once and stored only as its SHA-256."""

    id: int
    kind: str
    name: str
    token: str
    created_at: datetime
