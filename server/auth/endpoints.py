"""``POST /tokens``."""

from __future__ import annotations

from fastapi import APIRouter, status

from server.auth.dependencies import AdminDep
from server.auth.schemas import TokenCreate, TokenCreated
from server.auth.service import issue_token
from server.db import SessionDep

router = APIRouter(tags=["auth"])


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, session: SessionDep, _admin: AdminDep) -> TokenCreated:
    """Create an agent or client token; the token is in this answer only."""
    token, secret = issue_token(session, body.kind, body.name)
    return TokenCreated(
        id=token.id, kind=token.kind, name=token.name, token=secret, created_at=token.created_at
    )
