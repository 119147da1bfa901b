"""HTTP client for any Cohere v2 endpoint (Cohere's hosted API, ``nbchat serve``, a proxy).

Mirrors ``cohere.ClientV2``: ``Client(api_key=None, base_url=None, client_name="nbchat",
timeout=..., max_retries=2)`` with ``chat()`` (plain v2 response dict) and ``chat_stream()``
(an iterable of plain wire-shape event dicts with ``.response`` once it is over). It is also a
`Backend` (``name = "cohere"``, ``stream(request, cancel)``, ``models()``).

A cancel from another thread shuts the request's socket down at once (`transport.Guard`;
the socket plumbing shared with the OpenAI backend lives in ``transport``).

Retries (429, 5xx, connect errors) happen only before the first byte of a body: once a
stream has started nothing is resent. httpx is imported lazily (this module is imported lazily).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import APIError, Cancelled, StreamError, register_secret
from ..errors import ConnectionError as NetError
from ..protocol.accumulator import Accumulator
from ..protocol.sse import SSEDecoder
from .base import Cancel
from .transport import (
    DEFAULT_TIMEOUT,
    Guard,
    Secret,
    describe,
    install_guarded_backend,
    make_timeout,
    open_with_retries,
    read_body,
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
class Client:
    """A v2 chat client; mirrors ``cohere.ClientV2`` and implements the `Backend` protocol."""

    name = "cohere"
    backoff = 0.5  # first retry delay (s); doubles each attempt, +-25 % jitter
    max_backoff = 8.0
    max_retry_wait = 60.0  # cap on a server's Retry-After

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        client_name: str | None = "nbchat",
        timeout: float | tuple[float, float] | Any = None,
        max_retries: int = 2,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("CO_API_KEY") or os.environ.get("COHERE_API_KEY")
        register_secret(api_key)
        self._key = Secret(api_key)
        self.base_url = (base_url or os.environ.get("CO_API_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.client_name = client_name
        self.timeout = make_timeout(timeout)
        self.max_retries = max(0, int(max_retries))
        self._http: Any = None
        self._http_lock = threading.Lock()

    def __repr__(self) -> str:
        key = "set" if self._key.get() else "none"
        return (
            f"Client(base_url={self.base_url!r}, api_key={key}, client_name={self.client_name!r})"
        )

    @property
    def has_key(self) -> bool:
        return self._key.get() is not None

    # -- lifecycle ------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._http is None:
            with self._http_lock:
                if self._http is None:
                    import httpx

                    http = httpx.Client(timeout=self.timeout, follow_redirects=False)
                    install_guarded_backend(http)
                    self._http = http
        return self._http

    def close(self) -> None:
        with self._http_lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        key = self._key.get()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if self.client_name:
            headers["X-Client-Name"] = self.client_name
        return headers

    # -- public API -----------------------------------------------------------------------------
    def chat(self, *, model: str, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """POST /v2/chat with ``stream: false``; returns the v2 response dict."""
        from ..protocol.request import validate_request

        params.pop("stream", None)
        body = validate_request({"model": model, "messages": messages, **params})
        body["stream"] = False
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
        self, path: str, body: dict[str, Any], stream: bool, guard: Guard, cancel: Cancel
    ) -> Any:
        """Send with retries; return a 2xx streaming httpx.Response (headers read, body not)."""
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return open_with_retries(
            self,
            self.base_url + path,
            self._headers(stream),
            lambda: payload,
            guard,
            cancel,
            _api_error,
        )

    def _events(
        self, body: dict[str, Any], cancel: Cancel, acc: Accumulator
    ) -> Iterator[dict[str, Any]]:
        """The streaming loop (hot path): raw bytes -> SSEDecoder -> Accumulator -> caller."""
        _TIMEOUTS, _DROPS = _stream_errors()
        guard = Guard()
        unregister = cancel.on_cancel(guard.shutdown)
        resp = None
        try:
            resp = self._open("/v2/chat", body, True, guard, cancel)
            ctype = resp.headers.get("content-type", "")
            if "event-stream" not in ctype and "ndjson" not in ctype and "jsonl" not in ctype:
                raw = read_body(resp, guard, 2000)
                raise StreamError(
                    f"expected Content-Type text/event-stream, got {ctype!r}", line=raw[:2000]
                )
            decoder = SSEDecoder()
            # a generator: large chunks do not build thousands of dicts at once
            decode = decoder.iter_feed
            feed = acc.feed
            chunks = _body_chunks(resp, self.timeout.read)
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
                    except StreamError:  # EOF inside an event: a cut stream, not bad SSE
                        raise NetError(
                            f"stream ended before message-end (inside an event, after {acc.events} events)"
                        ) from None
                    for event in tail:
                        feed(event)
                        yield event
                        if acc.ended:
                            return
            except _TIMEOUTS as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                raise NetError(
                    f"stream stalled: no data within the read timeout after {acc.events} events ({describe(exc)})"
                ) from None
            except _DROPS as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                raise NetError(
                    f"connection dropped mid-stream after {acc.events} events: {describe(exc)}"
                ) from None
            if guard.cancelled:
                raise Cancelled(cancel.reason or "cancelled")
            if not acc.ended:
                raise NetError("stream ended before message-end")
        finally:
            guard.finish()
            unregister()
            if resp is not None:
                resp.close()


def _stream_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    import httpcore
    import httpx

    timeouts = (httpx.TimeoutException, httpcore.TimeoutException, socket.timeout)
    drops = (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError, OSError, _Dropped)
    return timeouts, drops


class _Dropped(Exception):
    """The body ended (EOF) before its framing said it would."""


def _h11_connection(resp: Any) -> Any:
    """The h11 state behind an httpx response (httpx/httpcore internals; None if not found)."""
    obj = resp.stream
    for _ in range(8):
        h11 = getattr(obj, "_h11_state", None)
        if h11 is not None:
            return h11
        nxt = None
        for attr in ("_stream", "_httpcore_stream", "_connection"):
            nxt = getattr(obj, attr, None)
            if nxt is not None:
                break
        if nxt is None:
            return None
        obj = nxt
    return None


def _body_chunks(resp: Any, read_timeout: float | None) -> Iterator[bytes]:
    """Body bytes of a streaming response, de-chunked in bulk straight from the socket.

    Why: h11 parses an SSE stream one HTTP chunk (= one event) at a time through several
    generator layers, which costs more than decoding the events. Here each socket read (up
    to 64 KB, many events) becomes one bytes object. Falls back to ``iter_raw`` (or
    ``iter_bytes`` for a compressed body) whenever the internals are not as expected.
    Closing the response afterwards drops the connection (h11 never saw the body end).
    """
    headers = resp.headers
    if headers.get("content-encoding") not in (None, "", "identity"):
        return resp.iter_bytes()
    network = resp.extensions.get("network_stream")
    h11 = _h11_connection(resp) if network is not None else None
    try:
        leftover = h11.trailing_data[0] if h11 is not None else None
    except Exception:
        leftover = None
    if leftover is None or getattr(resp.stream, "_stream", None) is None:
        return resp.iter_raw()
    te = headers.get("transfer-encoding", "").lower()
    length = headers.get("content-length")
    if "chunked" in te:
        return _dechunk(network, leftover, read_timeout)
    if te:
        return resp.iter_raw()
    return _plain(network, leftover, read_timeout, int(length) if length else None)


def _plain(network: Any, buf: bytes, timeout: float | None, length: int | None) -> Iterator[bytes]:
    read = network.read
    left = length
    while True:
        if buf:
            if left is not None:
                buf = buf[:left]
                left -= len(buf)
            yield buf
        if left == 0:
            return
        buf = read(65536, timeout)
        if not buf:
            if left is not None:
                raise _Dropped(f"connection closed with {left} body bytes missing")
            return


def _dechunk(network: Any, buf: bytes, timeout: float | None) -> Iterator[bytes]:
    """Transfer-Encoding: chunked -> payload, one bytes object per socket read."""
    read = network.read
    left = 0  # payload bytes still due in the current chunk
    skip = 0  # CRLF bytes still due after a chunk's payload
    while True:
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            if left:
                take = left if left <= end - pos else end - pos
                out.append(buf[pos : pos + take])
                pos += take
                left -= take
                if left:
                    break
                skip = 2
            if skip:
                take = skip if skip <= end - pos else end - pos
                pos += take
                skip -= take
                if skip:
                    break
            eol = buf.find(b"\n", pos)
            if eol < 0:
                if end - pos > 1024:
                    raise StreamError(
                        "invalid chunked encoding (size line too long)", line=buf[pos : pos + 80]
                    )
                break
            line = buf[pos:eol]
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise StreamError("invalid chunked encoding", line=line) from None
            pos = eol + 1
            if size == 0:  # last chunk (trailers ignored)
                if out:
                    yield b"".join(out)
                return
            left = size
        if out:
            yield out[0] if len(out) == 1 else b"".join(out)
        buf = buf[pos:] if pos < end else b""
        data = read(65536, timeout)
        if not data:
            raise _Dropped("connection closed mid-chunk")
        buf = buf + data if buf else data


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
