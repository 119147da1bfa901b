"""Errors on the wire: Cohere's ``{id, message}`` bodies, status codes, the in-stream ERROR end."""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import Any

from ..errors import APIError, Cancelled, EngineError, NbChatError, ValidationError, redact

log = logging.getLogger("nbchat.server")

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# error_type of an in-stream ERROR end -> the HTTP status it becomes when nothing was sent yet
_TYPE_STATUS = {"UPSTREAM_ERROR": 502, "CANCELLED": 499, "TIMEOUT": 504}


def error_body(message: str) -> bytes:
    return dumps({"id": str(uuid.uuid4()), "message": redact(message)}).encode("utf-8")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(
        error_body(message), status_code=status, media_type="application/json", headers=headers
    )


def status_for(exc: BaseException) -> tuple[int, str, str]:
    """Map an exception raised before the first byte to (HTTP status, message, error_type).

    Messages never carry stack traces; unexpected exceptions only say "internal server error"
    (the traceback goes to the server log, redacted).
    """
    if isinstance(exc, ValidationError):
        if exc.message.startswith("unknown field"):
            return 422, exc.message, "INVALID_REQUEST"  # what Cohere answers (recorded capture)
        return 400, f"invalid request: {exc.message}", "INVALID_REQUEST"
    if isinstance(exc, Cancelled):
        return 499, exc.message or "request cancelled", "CANCELLED"
    if isinstance(exc, APIError):
        # upstream answer (proxying backends): keep its status; no answer at all -> 503
        status = exc.status_code if exc.status_code and 400 <= exc.status_code < 600 else 503
        return status, exc.message, "UPSTREAM_ERROR"
    if isinstance(exc, EngineError):
        return 500, exc.message or "engine error", "ENGINE_ERROR"
    if isinstance(exc, NbChatError):
        return 500, exc.message or type(exc).__name__, "INTERNAL_ERROR"
    log.error("generation failed: %s", redact("".join(traceback.format_exception(exc))))
    return 500, "internal server error", "INTERNAL_ERROR"


def status_for_end(delta: dict[str, Any]) -> int:
    """The HTTP status for a stream that ended in ERROR before any content was produced."""
    return _TYPE_STATUS.get(str(delta.get("error_type") or ""), 500)


def error_end(message: str, error_type: str) -> dict[str, Any]:
    """The in-stream error Cohere sends once the 200 and some events are already out."""
    return {
        "type": "message-end",
        "delta": {
            "finish_reason": "ERROR",
            "usage": {},
            "error": redact(message),
            "error_type": error_type,
        },
    }
