"""`nbchat serve`: Cohere's Chat API v2 over HTTP, in front of any nbchat backend.

POST /v2/chat speaks the exact v2 wire format (the official ``cohere`` SDK works against it):
``stream: true`` gives ``text/event-stream`` framed as ``event: <type>\\ndata: <json>\\n\\n`` and a
final ``data: [DONE]``; otherwise the JSON response. Errors before the first byte are
``{id, message}`` with Cohere's status codes; an error after it is a ``message-end`` with
``finish_reason: ERROR``. GET /v2/models (and /v1/models) lists the models.

Hardening: loopback by default, optional bearer token (constant-time compare), a request body
limit (413), a cap on concurrent generations (503, never a hang), and a client that disconnects
or stops reading cancels its generation so the engine is freed.

The backend's iterator is synchronous (llama.cpp, httpx): each generation runs in its own
thread and forwards events to the event loop through an asyncio queue, so one slow generation
never blocks the loop. starlette and uvicorn are imported only when a server is built.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import sys
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from .backends.base import Backend, Cancel
from .errors import APIError, Cancelled, EngineError, NbChatError, ValidationError, redact

__all__ = ["create_app", "serve", "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV"]

log = logging.getLogger("nbchat.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "NBCHAT_SERVER_TOKEN"
# Backends that forward to another server: that server decides which models exist.
_REMOTE_BACKENDS = ("cohere", "v2", "openai")
_END = object()  # queue sentinel: the generation thread is finished

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _error_body(message: str) -> bytes:
    return _dumps({"id": str(uuid.uuid4()), "message": redact(message)}).encode("utf-8")


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(
        _error_body(message), status_code=status, media_type="application/json", headers=headers
    )


def _status_for(exc: BaseException) -> tuple[int, str, str]:
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


def _error_end(message: str, error_type: str) -> dict[str, Any]:
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


class _Generation:
    """One backend iterator running in its own thread, feeding an asyncio queue.

    Items are ("event", dict) or ("error", exc), then the `_END` sentinel, always last, so the
    request handler can wait for the thread to let go of the engine before freeing its slot.
    """

    def __init__(
        self,
        backend: Backend,
        request: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        max_backlog: int,
    ) -> None:
        self.backend = backend
        self.request = request
        self.loop = loop
        self.cancel = Cancel()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.backlog = 0  # events queued but not yet taken (thread +1, loop -1; GIL-atomic)
        self.max_backlog = max_backlog
        self.thread = threading.Thread(target=self._run, name="nbchat-serve-gen", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shut down): stop generating
            self.cancel.cancel("server shutting down")

    def _run(self) -> None:
        it = None
        try:
            it = iter(self.backend.stream(self.request, self.cancel))
            for event in it:
                if self.cancel.is_set():
                    break
                self.backlog += 1
                if self.backlog > self.max_backlog:
                    # the client stopped reading: don't buffer a whole generation in memory
                    self.cancel.cancel("client too slow")
                    break
                self._put(("event", event))
        except BaseException as exc:  # noqa: B036 - forwarded to the loop, never swallowed
            if not self.cancel.is_set():
                self._put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:  # run the generator's cleanup in this thread: frees the engine
                    close()
                except Exception:
                    pass
            self._put(_END)

    async def get(self) -> Any:
        item = await self.queue.get()
        if isinstance(item, tuple) and item[0] == "event":
            self.backlog -= 1
        return item

    async def finish(self, timeout: float = 10.0) -> None:
        """Cancel (if still running) and wait until the thread has ended."""
        self.cancel.cancel("client disconnected")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.thread.is_alive() or not self.queue.empty():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("generation thread did not stop within %.0f s", timeout)
                return
            try:
                item = await asyncio.wait_for(self.queue.get(), remaining)
            except asyncio.TimeoutError:
                continue
            if item is _END:
                return


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
        max_backlog: int,
        write_timeout: float,
    ) -> None:
        self._backend = backend
        self._factory = backend_factory
        self._backend_lock = threading.Lock()
        self.token = token or None
        self.max_body = max_body
        self.max_streams = max_streams
        self.model = model
        self.max_backlog = max_backlog
        self.write_timeout = write_timeout
        self.active = 0  # generations in flight (changed on the event loop only)
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
                        from .backends import get_backend

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

        async def http_error(request: Any, exc: HTTPException) -> Any:
            return _error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

        async def server_error(request: Any, exc: Exception) -> Any:
            log.error("unhandled error: %s", redact("".join(traceback.format_exception(exc))))
            return _error_response(500, "internal server error")

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
            return _error_response(401, "no api key supplied", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return _error_response(401, "invalid api token", {"WWW-Authenticate": "Bearer"})
        return None

    async def list_models(self, request: Any) -> Any:
        from starlette.responses import Response

        denied = self._auth_error(request)
        if denied is not None:
            return denied
        names = await asyncio.to_thread(self.models)
        body = {"models": [{"name": n, "endpoints": ["chat"]} for n in names]}
        return Response(_dumps(body), media_type="application/json")

    async def _read_body(self, request: Any) -> bytes | Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body:
            return _error_response(413, f"request body too large (limit {self.max_body} bytes)")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # chunked bodies have no Content-Length
            size += len(chunk)
            if size > self.max_body:
                return _error_response(413, f"request body too large (limit {self.max_body} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def chat(self, request: Any) -> Any:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        raw = await self._read_body(request)
        if not isinstance(raw, bytes):
            return raw
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _error_response(400, f"invalid json syntax: {exc}")
        if not isinstance(body, dict):
            return _error_response(400, "invalid request: the body must be a JSON object")
        from .protocol.request import validate_request

        try:
            req = validate_request(body)
        except ValidationError as exc:
            status, message, _ = _status_for(exc)
            return _error_response(status, message)
        backend = self.backend()
        if getattr(backend, "name", "") not in _REMOTE_BACKENDS:
            names = await asyncio.to_thread(self.models)
            if names and req.get("model") not in names:
                return _error_response(
                    404,
                    f"model '{req.get('model')}' not found, make sure the correct model ID was "
                    f"used; this server has: {', '.join(names)}",
                )
        if self.active >= self.max_streams:
            return _error_response(
                503,
                f"server busy: {self.max_streams} generations already running, retry later",
                {"Retry-After": "1"},
            )
        return _ChatResponse(self, backend, req, stream=bool(req.get("stream")))


class _ChatResponse:
    """Runs one generation and writes it out, watching for the client going away."""

    def __init__(self, app: _App, backend: Backend, request: dict[str, Any], stream: bool) -> None:
        self.app = app
        self.backend = backend
        self.request = request
        self.stream = stream
        app.active += 1  # reserved now (same loop tick as the check): no oversubscription

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        loop = asyncio.get_running_loop()
        gen = _Generation(self.backend, self.request, loop, self.app.max_backlog)
        try:
            gen.start()
            writer = asyncio.ensure_future(
                self._write_stream(gen, send) if self.stream else self._write_json(gen, send)
            )
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
            done, _ = await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if writer not in done:  # the client went away first
                gen.cancel.cancel("client disconnected")
                writer.cancel()
            watcher.cancel()
            for task in (writer, watcher):
                try:
                    await task
                except (asyncio.CancelledError, OSError):
                    pass
        finally:
            try:
                await gen.finish()
            finally:
                self.app.active -= 1

    async def _send(self, send: Any, message: dict[str, Any]) -> None:
        # a client that stops reading blocks send() on flow control: give up after a while
        await asyncio.wait_for(send(message), self.app.write_timeout)

    async def _send_error(self, send: Any, exc: BaseException) -> None:
        status, message, _ = _status_for(exc)
        body = _error_body(message)
        await self._send(
            send,
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            },
        )
        await self._send(send, {"type": "http.response.body", "body": body})

    async def _write_stream(self, gen: _Generation, send: Any) -> None:
        from .protocol.sse import DONE, encode_event

        item = await gen.get()
        if item is _END or item[0] == "error":
            # nothing sent yet: a real HTTP error (or an empty stream, which is a backend bug)
            exc = item[1] if item is not _END else EngineError("the backend produced no events")
            await self._send_error(send, exc)
            return
        await self._send(
            send,
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            },
        )
        ended = False
        pushback: Any = None
        while item is not _END:
            kind, value = item
            if kind == "event":
                if not ended:
                    if value.get("type") == "message-end":
                        ended = True
                    chunk = encode_event(value)
                    # coalesce whatever is already queued into one write (fewer syscalls)
                    while pushback is None and not ended and not gen.queue.empty():
                        nxt = gen.queue.get_nowait()
                        if nxt is _END or nxt[0] != "event":
                            pushback = nxt  # handled by the outer loop, in order
                            break
                        gen.backlog -= 1
                        chunk += encode_event(nxt[1])
                        if nxt[1].get("type") == "message-end":
                            ended = True
                    await self._send(
                        send, {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
            elif not ended:  # an error after the first byte: Cohere's in-stream ERROR end
                _, message, error_type = _status_for(value)
                ended = True
                await self._send(
                    send,
                    {
                        "type": "http.response.body",
                        "body": encode_event(_error_end(message, error_type)),
                        "more_body": True,
                    },
                )
            if pushback is not None:
                item, pushback = pushback, None
            else:
                item = await gen.get()
        if not ended:  # the backend stopped without message-end: say so in-grammar
            reason = gen.cancel.reason if gen.cancel.is_set() else "stream ended early"
            await self._send(
                send,
                {
                    "type": "http.response.body",
                    "body": encode_event(_error_end(reason, "INTERNAL_ERROR")),
                    "more_body": True,
                },
            )
        await self._send(send, {"type": "http.response.body", "body": DONE, "more_body": False})
        gen.queue.put_nowait(_END)  # let finish() see the end without waiting

    async def _write_json(self, gen: _Generation, send: Any) -> None:
        from .protocol.accumulator import Accumulator

        acc = Accumulator()
        item = await gen.get()
        error: BaseException | None = None
        while item is not _END:
            kind, value = item
            if kind == "event":
                acc.feed(value)
            else:
                error = value
            item = await gen.get()
        gen.queue.put_nowait(_END)
        if error is None and not acc.ended:
            error = EngineError("the backend stopped without message-end")
        if error is not None:
            await self._send_error(send, error)
            return
        response = acc.response
        if response.get("finish_reason") == "ERROR":
            # no partial JSON answer in v2: an error is an HTTP error
            await self._send_error(send, EngineError(response.get("error") or "generation failed"))
            return
        body = _dumps(response).encode("utf-8")
        await self._send(
            send,
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            },
        )
        await self._send(send, {"type": "http.response.body", "body": body})


async def _wait_disconnect(receive: Any) -> None:
    """Return when the client disconnects (the request body has already been read)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


def create_app(
    backend: Backend | None = None,
    *,
    token: str | None = None,
    max_body: int = 1_000_000,
    max_streams: int = 8,
    model: str | None = None,
    backend_factory: Callable[[], Backend] | None = None,
    max_backlog: int = 10_000,
    write_timeout: float = 60.0,
) -> Any:
    """Build the ASGI app serving POST /v2/chat and GET /v2/models over `backend`.

    backend: any nbchat Backend; None means the embedded engine (created on first request,
    or by `backend_factory`). token: require ``Authorization: Bearer <token>``. max_body: request
    limit in bytes (413). max_streams: concurrent generations before 503. model: the model name
    this server advertises (added to the backend's list). max_backlog: events buffered for a
    client that stopped reading before its generation is cancelled; write_timeout: seconds a
    single write may block.
    """
    return _App(
        backend,
        token=token,
        max_body=max_body,
        max_streams=max_streams,
        model=model,
        backend_factory=backend_factory,
        max_backlog=max_backlog,
        write_timeout=write_timeout,
    )


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    model: str | None = None,
    backend: Backend | str | None = None,
    allow_remote: bool = False,
    *,
    max_body: int = 1_000_000,
    max_streams: int = 8,
    log_level: str = "warning",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the server until interrupted (blocking).

    backend: a Backend, or a name for `get_backend` ("local" by default). token falls back to
    the NBCHAT_SERVER_TOKEN environment variable. A non-loopback host needs allow_remote=True
    and prints a warning when no token is set. `ready(url)` is called once the socket is bound.
    """
    import socket

    import uvicorn

    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host):
        if not allow_remote:
            raise ValidationError(
                "host",
                host,
                "a loopback address (127.0.0.1, ::1, localhost); pass --allow-remote to bind elsewhere",
            )
        if not token:
            print(
                f"nbchat serve: WARNING: listening on {host} without a token: anyone who can "
                f"reach this port can use the model. Set --token or {TOKEN_ENV}.",
                file=sys.stderr,
                flush=True,
            )
    factory = None
    backend_obj: Backend | None = None
    if backend is None or isinstance(backend, str):
        from .backends import default_model, get_backend

        name = backend or "local"
        model = model or default_model(name) or None

        def factory() -> Backend:
            return get_backend(name, model=model)

        if name != "local":  # remote backends are cheap to build: fail early on bad config
            backend_obj = factory()
    else:
        backend_obj = backend
    app = create_app(
        backend_obj,
        token=token,
        max_body=max_body,
        max_streams=max_streams,
        model=model,
        backend_factory=factory,
    )
    # Bind ourselves so port 0 works and the real address is known before serving.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise NbChatError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)  # connections made right after the banner wait in the backlog
    bound_port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound_port}"
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=3,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    print(
        f"nbchat serve: {url}/v2/chat (model {model or 'default'}"
        f"{', token required' if token else ''}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    if ready is not None:
        ready(url)
    server.run(sockets=[sock])
