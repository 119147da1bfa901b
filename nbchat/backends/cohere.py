"""HTTP client for any Cohere v2 endpoint (Cohere's hosted API, ``nbchat serve``, a proxy).

Mirrors ``cohere.ClientV2``: ``Client(api_key=None, base_url=None, client_name="nbchat",
timeout=..., max_retries=2)`` with ``chat()`` (plain v2 response dict) and ``chat_stream()``
(an iterable of plain wire-shape event dicts with ``.response`` once it is over). It is also a
`Backend` (``name = "cohere"``, ``stream(request, cancel)``, ``models()``).

The HTTP layer (pooled keep-alive connection, retries before the first byte, cancel from any
thread, redaction) is shared with the OpenAI backend: `http.HTTPBackend`. A finished stream
leaves its connection in the pool for the next turn; a cancelled one drops it. httpx is
imported lazily (this module is imported lazily).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from ..errors import APIError, Cancelled, StreamError
from ..errors import ConnectionError as NetError
from ..protocol.accumulator import Accumulator
from ..protocol.ndjson import NDJSONDecoder
from ..protocol.sse import SSEDecoder
from .base import Cancel
from .http import (
    DEFAULT_TIMEOUT,
    HTTPBackend,
    body_chunks,
    drain,
    read_body,
    stream_failure,
)

__all__ = ["Client", "ChatStream", "DEFAULT_BASE_URL", "DEFAULT_TIMEOUT"]

DEFAULT_BASE_URL = "https://api.cohere.com"


# -- helpers ------------------------------------------------------------------------------------
def _api_error(status: int, raw: bytes, headers: Any) -> APIError:
    """Cohere's ``{id, message}`` body -> APIError; anything else keeps the raw text."""
    text = raw.decode("utf-8", "replace")
    body: Any = text
    message = text.strip()
    err_id = None
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        body = parsed
        if parsed.get("message") is not None:
            message = str(parsed["message"])
        if parsed.get("id") is not None:
            err_id = str(parsed["id"])
    if len(message) > 2000:
        message = message[:2000] + "..."
    if not message:
        message = "(empty body)"
    return APIError(message, status_code=status, id=err_id, body=body, headers=dict(headers))


# -- the client ---------------------------------------------------------------------------------
class Client(HTTPBackend):
    """A v2 chat client; mirrors ``cohere.ClientV2`` and implements the `Backend` protocol."""

    name = "cohere"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        client_name: str | None = "nbchat",
        timeout: float | tuple[float, float] | Any = None,
        max_retries: int = 2,
        name: str = "cohere",  # "v2": another v2 host (its model list is what it serves)
    ) -> None:
        self.name = name
        if api_key is None:
            api_key = os.environ.get("CO_API_KEY") or os.environ.get("COHERE_API_KEY")
        self.base_url = (base_url or os.environ.get("CO_API_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.client_name = client_name
        self._setup_http(api_key, timeout, max_retries)

    def __repr__(self) -> str:
        key = "set" if self._key.get() else "none"
        return (
            f"Client(base_url={self.base_url!r}, api_key={key}, client_name={self.client_name!r})"
        )

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if self.client_name:
            headers["X-Client-Name"] = self.client_name
        return self._auth(headers)

    # -- public API -----------------------------------------------------------------------------
    def chat(self, *, model: str, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """POST /v2/chat with ``stream: false``; returns the v2 response dict."""
        from ..protocol.request import validate_request

        params.pop("stream", None)
        body = validate_request({"model": model, "messages": messages, **params})
        body["stream"] = False
        from .netio import Guard

        guard = Guard()
        resp = None
        try:
            resp = self._open("/v2/chat", body, False, guard, Cancel())
            raw = read_body(resp, guard, None)
        finally:
            guard.finish()
            if resp is not None:
                resp.close()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            snippet = raw[:500].decode("utf-8", "replace")
            raise APIError(f"invalid JSON response: {snippet!r}", status_code=resp.status_code)
        return data

    def chat_stream(
        self, *, model: str, messages: list[dict[str, Any]], **params: Any
    ) -> ChatStream:
        """POST /v2/chat with ``stream: true``; validated now, connects on first iteration."""
        from ..protocol.request import validate_request

        params.pop("stream", None)
        body = validate_request({"model": model, "messages": messages, **params})
        body["stream"] = True
        return ChatStream(self, body)

    # -- Backend protocol -----------------------------------------------------------------------
    def stream(
        self, request: dict[str, Any], cancel: Cancel | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield the events of a validated v2 request (Backend protocol)."""
        return iter(ChatStream(self, {**request, "stream": True}, cancel))

    def models(self) -> list[str]:
        """Chat model names (Cohere's GET /v1/models?endpoint=chat); [] on any failure."""
        try:
            import httpx

            resp = self._client().get(
                self.base_url + "/v1/models",
                params={"endpoint": "chat", "page_size": 1000},
                headers=self._headers(False),
                timeout=httpx.Timeout(10.0),
            )
            if resp.status_code != 200:
                return []
            data = resp.json()
            items = data.get("models") or data.get("data") or []
            names = [m.get("name") or m.get("id") for m in items if isinstance(m, dict)]
            return [n for n in names if isinstance(n, str)]
        except Exception:
            return []

    # -- transport ------------------------------------------------------------------------------
    def _open(
        self, path: str, body: dict[str, Any], stream: bool, guard: Any, cancel: Cancel
    ) -> Any:
        """Send with retries; return a 2xx streaming httpx.Response (headers read, body not)."""
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return self._send(
            self.base_url + path, self._headers(stream), lambda: payload, guard, cancel, _api_error
        )

    def _events(
        self, body: dict[str, Any], cancel: Cancel, acc: Accumulator
    ) -> Iterator[dict[str, Any]]:
        """The streaming loop (hot path): raw bytes -> SSEDecoder -> Accumulator -> caller."""
        import httpx

        from .netio import Guard

        guard = Guard()
        unregister = cancel.on_cancel(guard.shutdown)
        resp = None
        chunks: Iterator[bytes] = iter(())
        try:
            resp = self._open("/v2/chat", body, True, guard, cancel)
            ctype = resp.headers.get("content-type", "").lower()
            lines = "ndjson" in ctype or "jsonl" in ctype or "application/json" in ctype
            if "event-stream" not in ctype and not lines:
                raw = read_body(resp, guard, 2000)
                raise StreamError(
                    f"expected Content-Type text/event-stream, got {ctype!r}", line=raw[:2000]
                )
            decoder: Any
            if lines:  # one JSON event per line (nbchat serve, for Accept: application/json)
                decoder = _Lines(ctype)
                decode = decoder.feed
            else:
                decoder = SSEDecoder()
                # a generator: large chunks do not build thousands of dicts at once
                decode = decoder.iter_feed
            feed = acc.feed
            chunks = body_chunks(resp)
            try:
                for chunk in chunks:
                    for event in decode(chunk):
                        feed(event)
                        yield event
                        if acc.ended:  # message-end is the last event; ignore any trailer
                            return
                    if decoder.done:
                        break
                if not decoder.done:
                    try:
                        tail = decoder.close()
                    except _NotEvents:
                        raise
                    except StreamError:  # EOF inside an event: a cut stream, not bad SSE
                        raise NetError(
                            f"stream ended before message-end (inside an event, after {acc.events} events)"
                        ) from None
                    for event in tail:
                        feed(event)
                        yield event
                        if acc.ended:
                            return
            except (httpx.TransportError, OSError) as exc:
                raise stream_failure(exc, guard, cancel, acc.events) from None
            if guard.cancelled:
                raise Cancelled(cancel.reason or "cancelled")
            if not acc.ended:
                raise NetError("stream ended before message-end")
        finally:
            # A finished reply: read its tail so the connection is reused by the next turn.
            if resp is not None and acc.ended and not guard.cancelled:
                drain(chunks, resp)
            guard.finish()
            unregister()
            if resp is not None:
                resp.close()


class _NotEvents(StreamError):
    """A JSON body where v2 events were expected."""


class _Lines:
    """`NDJSONDecoder` that refuses a first object that is no v2 event (a plain JSON body)."""

    done = False  # NDJSON has no [DONE]: the stream ends at message-end / EOF

    def __init__(self, ctype: str) -> None:
        self.ctype = ctype
        self.decoder = NDJSONDecoder()
        self.first = True

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return self._check(self.decoder.feed(chunk))

    def close(self) -> list[dict[str, Any]]:
        return self._check(self.decoder.close())

    def _check(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.first and events:
            self.first = False
            if not isinstance(events[0].get("type"), str):
                line = json.dumps(events[0], ensure_ascii=False)[:2000]
                raise _NotEvents(
                    "expected Content-Type text/event-stream or v2 events as JSON lines, got "
                    f"{self.ctype!r} with a body that is no event: {line[:200]}",
                    line=line,
                )
        return events


class ChatStream:
    """Iterable of v2 stream events (plain dicts); ``.response`` holds the accumulated result.

    ``cancel()`` may be called from any thread: the socket is shut down at once and the
    iteration raises `Cancelled` (the partial reply stays in ``.response``). A dropped or
    unfinished stream raises `nbchat.ConnectionError` after yielding what arrived.
    """

    def __init__(self, client: Client, body: dict[str, Any], cancel: Cancel | None = None) -> None:
        self._client = client
        self._body = body
        self._cancel = cancel if cancel is not None else Cancel()
        self.accumulator = Accumulator()
        self._gen: Iterator[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._gen is None:
            self._gen = self._client._events(self._body, self._cancel, self.accumulator)
        return self._gen

    def __next__(self) -> dict[str, Any]:
        return next(iter(self))

    @property
    def response(self) -> dict[str, Any]:
        """The accumulated v2 response (partial until the stream ended)."""
        return self.accumulator.response

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the stream from any thread; closes the connection immediately."""
        self._cancel.cancel(reason)

    def close(self) -> None:
        """Release the connection (stops an unfinished stream)."""
        gen = self._gen
        if gen is not None:
            gen.close()  # type: ignore[attr-defined]
        else:
            self._gen = iter(())

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "ended" if self.accumulator.ended else f"{self.accumulator.events} events"
        return f"<ChatStream {self._body.get('model')!r} {state}>"
