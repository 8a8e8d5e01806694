"""Errors raised at the API edge, shaped like FastAPI's own 422 body so clients read one format."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError


def field_error(
    loc: Sequence[str | int], message: str, error_type: str = "value_error"
) -> RequestValidationError:
    """A 422 naming the offending field, e.g. ``field_error(("body", "file"), "not TFLite")``."""
    return RequestValidationError([{"loc": tuple(loc), "msg": message, "type": error_type}])


def not_found(what: str, identifier: int | str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {identifier} not found")


def conflict(message: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, message)
