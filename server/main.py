"""The farm's REST API (docs/internals.md, "REST API"). OpenAPI at /openapi.json and /docs.

Run with ``uvicorn server.main:app``; the schema must be at Alembic head first
(:func:`server.prestart.upgrade_database`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from fdiot.settings import get_settings
from server.auth.endpoints import router as auth_router
from server.db import get_engine
from server.devices.endpoints import router as devices_router
from server.jobs.endpoints import agent_router
from server.jobs.endpoints import router as jobs_router
from server.samples.endpoints import router as samples_router
from server.timemodels.endpoints import router as timemodels_router

log = logging.getLogger(__name__)

app = FastAPI(
    title="FastDeepIoT Farm",
    summary="Per-device execution-time models learned from real measurements (FastDeepIoT).",
    version="0.1.0",
)
for router in (
    auth_router,
    devices_router,
    jobs_router,
    agent_router,
    samples_router,
    timemodels_router,
):
    app.include_router(router)


@app.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body plus ``field``: the offending field's dotted path (``samples.3``)."""
    errors: list[dict[str, Any]] = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        where = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
        errors.append({**error, "field": ".".join(str(part) for part in where)})
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": jsonable_encoder(errors)},
    )


class Health(BaseModel):
    status: str
    database: str
    redis: str


@app.get("/healthz", tags=["health"])
def healthz() -> JSONResponse:
    """``ok`` when PostgreSQL and Redis both answer; 503 otherwise."""
    import redis

    database = redis_state = "ok"
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        database = f"error: {exc.__class__.__name__}"
    try:
        redis_url = get_settings().redis_url
        if redis_url is None:
            raise RuntimeError("REDIS_URL is not set")
        # Short timeout: a health check must answer even when Redis hangs.
        redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2).ping()
    except Exception as exc:
        redis_state = f"error: {exc.__class__.__name__}"
    healthy = database == "ok" and redis_state == "ok"
    body = Health(status="ok" if healthy else "degraded", database=database, redis=redis_state)
    return JSONResponse(
        body.model_dump(),
        status_code=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
    )
