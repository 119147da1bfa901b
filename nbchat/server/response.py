"""One chat response: runs a `Generation` and writes it as SSE, NDJSON or one JSON body.

Before the first byte, a failure is an HTTP error in Cohere's ``{id, message}`` shape: an
exception before any event, and also a stream that is only ``message-start`` then an ERROR
``message-end`` (the server holds ``message-start`` back until the next event decides). After
the first byte an error is a final ``message-end`` with ``finish_reason: ERROR``. A client that
goes away (or blocks a write longer than ``write_timeout``) cancels the generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import EngineError
from ..protocol.ndjson import MEDIA_TYPE as NDJSON_TYPE
from ..protocol.ndjson import encode_line
from ..protocol.sse import DONE, encode_event
from .bridge import END, Generation
from .errors import dumps, error_body, error_end, status_for, status_for_end

SSE, NDJSON = "sse", "ndjson"


class ChatResponse:
    """An ASGI app for one request; `framing` is SSE, NDJSON, or None for a JSON body."""

    def __init__(self, app: Any, backend: Any, request: dict[str, Any], framing: str | None):
        self.app = app
        self.backend = backend
        self.request = request
        self.framing = framing
        app.active += 1  # reserved now (same loop tick as the check): no oversubscription

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        gen = Generation(self.backend, self.request, self.app.channel_size, self.app.backlog)
        try:
            gen.start()
            writer = asyncio.ensure_future(
                self._write_stream(gen, send) if self.framing else self._write_json(gen, send)
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
                except (asyncio.CancelledError, OSError):  # TimeoutError is an OSError
                    gen.cancel.cancel("client too slow")
        finally:
            try:
                await gen.finish()
            finally:
                self.app.active -= 1

    async def _send(self, send: Any, message: dict[str, Any]) -> None:
        # a client that stops reading blocks send() on flow control: give up after a while
        await asyncio.wait_for(send(message), self.app.write_timeout)

    async def _send_error(self, send: Any, status: int, message: str) -> None:
        body = error_body(message)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await self._send(
            send, {"type": "http.response.start", "status": status, "headers": headers}
        )
        await self._send(send, {"type": "http.response.body", "body": body})

    async def _body(self, send: Any, chunk: bytes, more: bool = True) -> None:
        await self._send(send, {"type": "http.response.body", "body": chunk, "more_body": more})

    async def _write_stream(self, gen: Generation, send: Any) -> None:
        encode: Callable[[dict[str, Any]], bytes]
        if self.framing == NDJSON:
            encode, media, tail = encode_line, NDJSON_TYPE.encode(), b""
        else:
            encode, media, tail = encode_event, b"text/event-stream", DONE
        held: list[dict[str, Any]] = []
        item = await gen.get()
        if item is not END and item[0] == "event" and item[1].get("type") == "message-start":
            held.append(item[1])  # wait for the next event: it decides between 200 and an error
            item = await gen.get()
        if item is END:
            if not gen.cancel.is_set():  # (when cancelled, the client is gone)
                await self._send_error(send, 500, "the backend stopped without message-end")
            return
        kind, value = item
        if kind == "error":
            status, message, _ = status_for(value)
            await self._send_error(send, status, message)
            return
        delta = value.get("delta") or {}
        if value.get("type") == "message-end" and delta.get("finish_reason") == "ERROR":
            await self._send_error(send, status_for_end(delta), delta.get("error") or "failed")
            return
        headers = [
            (b"content-type", media),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        await self._send(send, {"type": "http.response.start", "status": 200, "headers": headers})
        chunk = b"".join(encode(e) for e in held)
        ended = False
        while item is not END:
            kind, value = item
            if ended:
                pass  # nothing may follow message-end: drain
            elif kind == "event":
                chunk += encode(value)
                ended = value.get("type") == "message-end"
            else:  # an error after the first byte: Cohere's in-stream ERROR end
                _, message, error_type = status_for(value)
                chunk += encode(error_end(message, error_type))
                ended = True
            # coalesce whatever is already queued into one write (fewer syscalls)
            item = gen.get_nowait()
            if item is None:
                if chunk:
                    await self._body(send, chunk)
                    chunk = b""
                item = await gen.get()
        if not ended:  # the backend stopped without message-end: say so in-grammar
            reason = gen.cancel.reason if gen.cancel.is_set() else "stream ended early"
            chunk += encode(error_end(reason or "stream ended early", "INTERNAL_ERROR"))
        await self._body(send, chunk + tail, more=False)

    async def _write_json(self, gen: Generation, send: Any) -> None:
        from ..protocol.accumulator import Accumulator

        acc = Accumulator()
        error: BaseException | None = None
        item = await gen.get()
        while item is not END:
            kind, value = item
            if kind == "event":
                acc.feed(value)
            else:
                error = value
            item = await gen.get()
        if error is None and not acc.ended:
            error = EngineError("the backend stopped without message-end")
        if error is not None:
            status, message, _ = status_for(error)
            await self._send_error(send, status, message)
            return
        response = acc.response
        if response.get("finish_reason") == "ERROR":
            # no partial JSON answer in v2: an error is an HTTP error
            err = {"error": response.get("error"), "error_type": response.get("error_type")}
            await self._send_error(send, status_for_end(err), err["error"] or "generation failed")
            return
        body = dumps(response).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await self._send(send, {"type": "http.response.start", "status": 200, "headers": headers})
        await self._send(send, {"type": "http.response.body", "body": body})


async def _wait_disconnect(receive: Any) -> None:
    """Return when the client disconnects (the request body has already been read)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
