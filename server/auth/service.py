"""Issuing and checking tokens: admin from settings, agent/client tokens stored as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from fdiot.settings import Settings
from server.auth import repository
from server.tables import Token

# 32 random bytes, URL-safe: the same strength as the generated admin token.
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's kind, and its row id (``None`` for the admin token)."""

    kind: str
    token_id: int | None
    name: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, kind: str, name: str) -> tuple[Token, str]:
    """Create a token row; returns the row and the secret (shown to the caller once)."""
    secret = secrets.token_urlsafe(TOKEN_BYTES)
    return repository.add_token(session, kind, name, hash_token(secret)), secret


def authenticate(session: Session, settings: Settings, presented: str) -> Principal | None:
    """The principal of a presented bearer token, or ``None`` if it is unknown or revoked."""
    admin_token = settings.ensure_admin_token()
    if secrets.compare_digest(presented.encode(), admin_token.encode()):
        return Principal(kind="admin", token_id=None, name="admin")
    token = repository.find_token(session, hash_token(presented))
    if token is None:
        return None
    return Principal(kind=token.kind, token_id=token.id, name=token.name)
