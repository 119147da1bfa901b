"""`nbchat serve`: Cohere's Chat API v2 over HTTP, in front of any nbchat backend.

POST /v2/chat speaks the exact v2 wire format (the official ``cohere`` SDK works against it):
``stream: true`` gives ``text/event-stream`` framed as ``event: <type>\\ndata: <json>\\n\\n`` and a
final ``data: [DONE]`` -- or, when the client accepts only ``application/json`` (litellm),
the same events as newline-delimited JSON; otherwise the JSON response. Errors before the first
byte are ``{id, message}`` with Cohere's status codes; an error after it is a ``message-end``
with ``finish_reason: ERROR``. GET /v2/models (and /v1/models) lists the models.

Hardening: loopback by default, optional bearer token (constant-time compare), a request body
limit (413) and deadline (408), malformed bodies are 4xx before any model work, a cap on
concurrent generations (503, never a hang), backpressure from the socket to the engine (a slow
client keeps memory flat), and a client that disconnects or stops reading cancels its
generation so the engine is freed. starlette and uvicorn are imported only when a server is built.

Modules: `app` (routing, validation) · `response` (framing, errors on the wire) · `bridge`
(thread -> event loop, bounded) · `errors` · `run` (`serve`).
"""

from __future__ import annotations

from .app import create_app, stream_framing
from .run import DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, is_loopback, serve

__all__ = [
    "create_app",
    "serve",
    "stream_framing",
    "is_loopback",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
]
