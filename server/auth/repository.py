"""Token queries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.tables import Token


def add_token(session: Session, kind: str, name: str, token_sha256: str) -> Token:
    token = Token(kind=kind, name=name, token_sha256=token_sha256)
    session.add(token)
    session.flush()
    return token


def find_token(session: Session, token_sha256: str) -> Token | None:
    return session.scalars(
        select(Token).where(Token.token_sha256 == token_sha256, Token.revoked.is_(False))
    ).one_or_none()
