"""Multipart uploads of .tflite files with a size limit enforced while the body is read.

FastAPI's ``UploadFile`` parameter would have the whole body spooled before the route runs; here
the route reads the stream itself, stops at ``settings.max_upload_bytes`` with a 413, and only
then parses the multipart form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.datastructures import UploadFile
from starlette.types import Message

from fdiot.settings import get_settings
from server.errors import field_error

# Room for the multipart boundaries, part headers and small text fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


# OpenAPI description of the multipart body (the route parses it itself, see the module doc).
def multipart_openapi(extra_fields: dict[str, Any] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    properties.update(extra_fields or {})
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": properties, "required": ["file"]}
                }
            },
        }
    }


@dataclass(frozen=True)
class Upload:
    """The uploaded file's bytes, its client-side file name, and the form's text fields."""

    content: bytes
    filename: str | None
    fields: dict[str, str]


def _too_large(limit_bytes: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"upload exceeds the limit of {limit_bytes} bytes (FDIOT_MAX_UPLOAD_BYTES)",
    )


async def read_tflite_upload(request: Request) -> Upload:
    """Read a multipart body with a ``file`` part, enforcing the upload limit (413) on the
    declared Content-Length and on the bytes actually received."""
    limit_bytes = get_settings().max_upload_bytes
    body_limit_bytes = limit_bytes + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit_bytes:
        raise _too_large(limit_bytes)
    chunks: list[bytes] = []
    received_bytes = 0
    async for chunk in request.stream():
        received_bytes += len(chunk)
        if received_bytes > body_limit_bytes:
            raise _too_large(limit_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    buffered = Request(request.scope, receive=replay)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise field_error(
            ("body", "file"), "expected a multipart/form-data upload with a file part"
        )
    try:
        form = await buffered.form(max_part_size=body_limit_bytes)
    except Exception as exc:  # malformed multipart: the client's fault, not ours
        raise field_error(("body", "file"), f"malformed multipart body: {exc}") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise field_error(("body", "file"), "Field required", "missing")
    content = await upload.read()
    if len(content) > limit_bytes:
        raise _too_large(limit_bytes)
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    await form.close()
    return Upload(content=content, filename=upload.filename, fields=fields)
