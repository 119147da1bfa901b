"""Every error nbchat raises.

NbChatError
├── ValidationError (ValueError)   a request rejected before anything is sent; names the field
├── APIError                       an error answer from a v2 endpoint: .status_code, .id, .message
│   └── ConnectionError            no answer at all (refused, DNS, timeout, dropped mid-stream);
│                                  status_code is None
├── StreamError                    the stream itself is broken (bad SSE framing, invalid JSON),
│                                  carries the offending line
├── EngineError                    the embedded engine failed to load or decode
└── Cancelled                      raised to callers waiting on a turn that was stopped

API keys never appear in these messages: every message passes through `redact()`.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = [
    "NbChatError",
    "ValidationError",
    "APIError",
    "ConnectionError",
    "StreamError",
    "EngineError",
    "Cancelled",
    "redact",
]

_KEY_ENV = (
    "CO_API_KEY",
    "COHERE_API_KEY",
    "NBCHAT_API_KEY",
    "OPENAI_API_KEY",
    "NBCHAT_SERVER_TOKEN",
)
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret (e.g. a key passed to Client(api_key=...)) so redact() hides it."""
    if value and len(value) >= 4:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    """Replace every known secret (env keys, registered keys, bearer tokens) in text."""
    if not isinstance(text, str):
        text = str(text)
    secrets = set(_extra_secrets)
    for name in _KEY_ENV:
        v = os.environ.get(name)
        if v and len(v) >= 4:
            secrets.add(v)
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return re.sub(r"(?i)(bearer\s+)[^\s\"',]+", r"\1***", text)


def _redact_all(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {_redact_all(k): _redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_all(v) for v in value]
    return value


class NbChatError(Exception):
    """Base class of every nbchat error."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ValidationError(NbChatError, ValueError):
    """A request that breaks a v2 rule; nothing was sent.

    `.field` is the dotted path of the offending field (e.g. ``messages[2].tool_call_id``),
    `.value` the value given and `.allowed` a short description of what is allowed.
    """

    def __init__(
        self, field: str, value: Any = None, allowed: str = "", message: str | None = None
    ):
        self.field = field
        self.value = value
        self.allowed = allowed
        if message is None:
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            message = f"invalid {field}: {shown}" + (f"; allowed: {allowed}" if allowed else "")
        super().__init__(message)


class APIError(NbChatError):
    """An error answer from a v2 endpoint (Cohere's `{id, message}` body)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        id: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.id = id
        # a server or proxy may echo the key back: keep it out of every attribute
        self.body = _redact_all(body)
        self.headers = {k: redact(str(v)) for k, v in dict(headers or {}).items()}
        prefix = f"HTTP {status_code}: " if status_code is not None else ""
        super().__init__(prefix + redact(message))
        self._raw_message = redact(message)

    @property
    def message(self) -> str:  # the server's message, without the status prefix
        return self._raw_message


class ConnectionError(APIError):
    """No (complete) answer: connection refused, timeout, or the stream dropped midway."""


class StreamError(NbChatError):
    """Malformed stream: bad SSE line or invalid JSON in `data:`. `.line` holds the raw line."""

    def __init__(self, message: str, line: str | bytes | None = None) -> None:
        self.line = line
        super().__init__(message)


class EngineError(NbChatError):
    """The embedded engine failed (load, context overflow, decode)."""


class Cancelled(NbChatError):
    """The turn was stopped by the user (Stop, cancel(), KeyboardInterrupt)."""
