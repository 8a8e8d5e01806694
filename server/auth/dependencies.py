"""Route dependencies: ``Authorization: Bearer <token>``; 401 when missing or unknown, 403 when the
token's kind may not call the route."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fdiot.settings import get_settings
from server.auth.service import Principal, authenticate
from server.db import SessionDep

_bearer = HTTPBearer(auto_error=False)


def require(*kinds: str) -> Callable[..., Principal]:
    """A dependency admitting tokens of ``kinds`` only."""

    def dependency(
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        unauthorized = {"WWW-Authenticate": "Bearer"}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=unauthorized
            )
        principal = authenticate(session, get_settings(), credentials.credentials)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "unknown or revoked token", headers=unauthorized
            )
        if principal.kind not in kinds:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a {principal.kind} token may not do this; needs one of: {', '.join(kinds)}",
            )
        return principal

    return dependency


AdminDep = Annotated[Principal, Depends(require("admin"))]
# Device registration: the agent that serves the device, or an operator.
RegistrarDep = Annotated[Principal, Depends(require("admin", "agent"))]
# Work requests (campaigns, benchmarks): users of the farm.
ClientDep = Annotated[Principal, Depends(require("admin", "client"))]
# Agent routes; the admin may act for an agent (operations, tests).
AgentDep = Annotated[Principal, Depends(require("agent", "admin"))]
