"""The ASGI app of `nbchat serve`: routing, auth, body limits, validation, model check.

Everything about a request is decided here, before any model work: a malformed body (broken
JSON or UTF-8, too deep, too big, too slow to arrive, wrong types, unknown fields) is a 4xx in
Cohere's ``{id, message}`` shape. Then `response.ChatResponse` runs the generation.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from ..backends.base import Backend
from ..errors import ValidationError, redact
from .bridge import Backlog
from .errors import dumps, error_response, status_for
from .response import NDJSON, SSE, ChatResponse

log = logging.getLogger("nbchat.server")

_NDJSON_TYPES = frozenset({"application/json", "application/x-ndjson"})
_SSE_TYPES = frozenset({"text/event-stream", "*/*", "text/*"})


def stream_framing(accept: str) -> str:
    """SSE unless the client accepts only JSON (``application/json``): then NDJSON."""
    types = {p.split(";")[0].strip().lower() for p in accept.split(",")} - {""}
    return NDJSON if types & _NDJSON_TYPES and not types & _SSE_TYPES else SSE


class _App:
    """The ASGI application (routing by starlette). Build it with `create_app`."""

    def __init__(
        self,
        backend: Backend | None,
        *,
        token: str | None,
        max_body: int,
        max_streams: int,
        model: str | None,
        backend_factory: Callable[[], Backend] | None,
        channel_size: int,
        write_timeout: float,
        body_timeout: float,
    ) -> None:
        self._backend = backend
        self._factory = backend_factory
        self._backend_lock = threading.Lock()
        self.token = token or None
        self.max_body = max_body
        self.max_streams = max_streams
        self.model = model
        self.channel_size = channel_size
        self.write_timeout = write_timeout
        self.body_timeout = body_timeout
        self.active = 0  # generations in flight (changed on the event loop only)
        self.backlog = Backlog()  # events queued between generation threads and the loop
        self._models: list[str] | None = None
        self.app = self._build()

    # -- backend ------------------------------------------------------------------------------
    def backend(self) -> Backend:
        """The backend, created on first use (loading the engine is not done at startup)."""
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    if self._factory is not None:
                        self._backend = self._factory()
                    else:
                        from ..backends import get_backend

                        self._backend = get_backend("local", model=self.model)
        return self._backend

    def models(self) -> list[str]:
        if self._models is None:
            try:
                names = list(self.backend().models())
            except Exception as exc:  # best effort: an unreachable upstream lists nothing
                log.warning("listing models failed: %s", redact(str(exc)))
                return [self.model] if self.model else []
            if self.model and self.model not in names:
                names.insert(0, self.model)
            self._models = names
        return self._models

    # -- starlette app ------------------------------------------------------------------------
    def _build(self) -> Any:
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        async def http_error(request: Any, exc: Exception) -> Any:
            assert isinstance(exc, HTTPException)
            return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

        async def server_error(request: Any, exc: Exception) -> Any:
            log.error("unhandled error: %s", redact("".join(traceback.format_exception(exc))))
            return error_response(500, "internal server error")

        routes = [
            Route("/v2/chat", self.chat, methods=["POST"]),
            Route("/v2/models", self.list_models, methods=["GET"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: http_error, Exception: server_error},
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def _auth_error(self, request: Any) -> Any:
        if self.token is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not given.strip():
            return error_response(401, "no api key supplied", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return error_response(401, "invalid api token", {"WWW-Authenticate": "Bearer"})
        return None

    async def list_models(self, request: Any) -> Any:
        from starlette.responses import Response

        denied = self._auth_error(request)
        if denied is not None:
            return denied
        names = await asyncio.to_thread(self.models)
        body = {"models": [{"name": n, "endpoints": ["chat"]} for n in names]}
        return Response(dumps(body), media_type="application/json")

    async def _read_body(self, request: Any) -> bytes | Any:
        too_big = f"request body too large (limit {self.max_body} bytes)"
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body:
            return error_response(413, too_big)
        chunks: list[bytes] = []
        size = 0

        async def read() -> Any:
            nonlocal size
            async for chunk in request.stream():  # chunked bodies have no Content-Length
                size += len(chunk)
                if size > self.max_body:
                    return error_response(413, too_big)
                chunks.append(chunk)
            return None

        try:  # a client trickling its body holds no slot, but is not waited on forever
            refused = await asyncio.wait_for(read(), self.body_timeout)
        except asyncio.TimeoutError:
            return error_response(408, f"request body not received within {self.body_timeout} s")
        return refused if refused is not None else b"".join(chunks)

    def _parse(self, raw: bytes) -> dict[str, Any] | Any:
        """The validated request, or the 4xx response saying what is wrong with the body."""
        from ..protocol.request import validate_request

        try:
            body = json.loads(raw)  # UTF-8 (16, 32) as json.loads detects it
        except UnicodeDecodeError as exc:
            return error_response(400, f"invalid request: the body is not UTF-8 ({exc.reason})")
        except ValueError as exc:
            return error_response(400, f"invalid json syntax: {exc}")
        except RecursionError:
            return error_response(400, "invalid json syntax: nested too deeply")
        if not isinstance(body, dict):
            return error_response(400, "invalid request: the body must be a JSON object")
        try:
            return validate_request(body)
        except ValidationError as exc:
            status, message, _ = status_for(exc)
            return error_response(status, message)
        except RecursionError:
            return error_response(400, "invalid request: nested too deeply")
        except Exception as exc:  # a validator bug must still be the client's 4xx, not a 500
            log.error("validate_request raised %s: %s", type(exc).__name__, redact(str(exc)))
            return error_response(400, "invalid request: malformed body")

    async def chat(self, request: Any) -> Any:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        raw = await self._read_body(request)
        if not isinstance(raw, bytes):
            return raw
        req = self._parse(raw)
        if not isinstance(req, dict):
            return req
        backend = self.backend()
        # a backend that forwards to another server (it has a base_url: the Cohere/v2 client,
        # the OpenAI backend, a plugin proxy) lets that server decide which models exist
        if not getattr(backend, "base_url", None):
            names = await asyncio.to_thread(self.models)
            if names and req.get("model") not in names:
                return error_response(
                    404,
                    f"model '{req.get('model')}' not found, make sure the correct model ID was "
                    f"used; this server has: {', '.join(names)}",
                )
        if self.active >= self.max_streams:
            return error_response(
                503,
                f"server busy: {self.max_streams} generations already running, retry later",
                {"Retry-After": "1"},
            )
        framing = None
        if req.get("stream"):
            framing = stream_framing(request.headers.get("accept", ""))
        return ChatResponse(self, backend, req, framing)


def create_app(
    backend: Backend | None = None,
    *,
    token: str | None = None,
    max_body: int = 1_000_000,
    max_streams: int = 8,
    model: str | None = None,
    backend_factory: Callable[[], Backend] | None = None,
    channel_size: int = 32,
    write_timeout: float = 60.0,
    body_timeout: float = 30.0,
) -> Any:
    """Build the ASGI app serving POST /v2/chat and GET /v2/models over `backend`.

    backend: any nbchat Backend; None means the embedded engine (created on first request,
    or by `backend_factory`). token: require ``Authorization: Bearer <token>``. max_body: request
    limit in bytes (413). max_streams: concurrent generations before 503. model: the model name
    this server advertises (added to the backend's list). channel_size: events buffered per
    generation between its thread and the socket (backpressure beyond that); write_timeout:
    seconds a single write may block before the generation is cancelled; body_timeout: seconds
    to receive the request body (408).
    """
    return _App(
        backend,
        token=token,
        max_body=max_body,
        max_streams=max_streams,
        model=model,
        backend_factory=backend_factory,
        channel_size=channel_size,
        write_timeout=write_timeout,
        body_timeout=body_timeout,
    )
