"""HTTP client for any Cohere v2 endpoint (Cohere's hosted API, ``nbchat serve``, a proxy).

Mirrors ``cohere.ClientV2``: ``Client(api_key=None, base_url=None, client_name="nbchat",
timeout=..., max_retries=2)`` with ``chat()`` (plain v2 response dict) and ``chat_stream()``
(an iterable of plain wire-shape event dicts with ``.response`` once it is over). It is also a
`Backend` (``name = "cohere"``, ``stream(request, cancel)``, ``models()``).

Why the socket plumbing: a cancel from another thread must end a blocked read *now*, not at
the next byte or the read timeout. Every request gets a `_Guard` that learns its socket as
early as possible (while connecting for a new connection, at the request write for a pooled
one, from ``response.extensions`` afterwards) and ``shutdown(SHUT_RDWR)``s it on cancel, which
wakes the blocked ``recv``/``connect`` at once. The fd itself is never closed from the other
thread (httpcore does that), so there is no fd-reuse race.

Retries (429, 5xx, connect errors) happen only before the first byte of a body: once a
stream has started nothing is resent. httpx is imported lazily (this module is imported lazily).
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import APIError, Cancelled, StreamError, redact, register_secret
from ..errors import ConnectionError as NetError
from ..protocol.accumulator import Accumulator
from ..protocol.sse import SSEDecoder
from .base import Cancel

__all__ = ["Client", "ChatStream", "DEFAULT_BASE_URL", "DEFAULT_TIMEOUT"]

DEFAULT_BASE_URL = "https://api.cohere.com"
DEFAULT_TIMEOUT = (10.0, 300.0)  # (connect, read): the SDK waits up to 300 s for a reply
_ERROR_BODY_LIMIT = 1 << 20  # never buffer more than 1 MB of an error body
_local = threading.local()  # the _Guard of the request being sent on this thread


# -- cancellation plumbing ----------------------------------------------------------------------
def _shutdown(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError, ValueError):
        pass  # already closed / not connected: nothing to wake


class _Guard:
    """Per-request link between a `Cancel` and the socket the request currently uses."""

    __slots__ = ("_lock", "_sock", "cancelled", "finished")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Any = None
        self.cancelled = False
        self.finished = False

    def attach(self, sock: Any) -> None:
        with self._lock:
            if self.finished or sock is self._sock:
                return
            self._sock = sock
            dead = self.cancelled
        if dead:  # cancelled before we knew the socket: kill it right away
            _shutdown(sock)

    def shutdown(self) -> None:
        """Cancel callback (any thread): wake whatever blocks on the socket."""
        with self._lock:
            self.cancelled = True
            sock = None if self.finished else self._sock
        if sock is not None:
            _shutdown(sock)

    def finish(self) -> None:
        # After the request the (pooled) connection may serve someone else: forget it.
        with self._lock:
            self.finished = True
            self._sock = None


def _install_guarded_backend(http_client: Any) -> bool:
    """Make the default transport's connections report their sockets to the current _Guard.

    Uses httpcore internals (``ConnectionPool._network_backend``, ``SyncStream``); if they
    change, cancel still works once response headers arrived (via ``network_stream``).
    """
    try:
        import ssl

        import httpcore
        from httpcore._backends.sync import SyncStream

        pool = http_client._transport._pool
        if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
            return False
    except Exception:
        return False

    class _Stream(SyncStream):
        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            guard = getattr(_local, "guard", None)
            if guard is not None:  # a pooled connection now carries this request
                guard.attach(self._sock)
            super().write(buffer, timeout)

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ) -> Any:
            if isinstance(self._sock, ssl.SSLSocket):
                return super().start_tls(ssl_context, server_hostname, timeout)
            # wrap without handshaking, so the TLS socket is known while the handshake runs
            try:
                self._sock.settimeout(timeout)
                sock = ssl_context.wrap_socket(
                    self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
                )
                guard = getattr(_local, "guard", None)
                if guard is not None:
                    guard.attach(sock)
                sock.do_handshake()
            except TimeoutError as exc:
                self.close()
                raise httpcore.ConnectTimeout(str(exc)) from exc
            except OSError as exc:
                self.close()
                raise httpcore.ConnectError(str(exc)) from exc
            return _Stream(sock)

    class _Backend(httpcore.SyncBackend):
        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Any:
            guard = getattr(_local, "guard", None)
            last: OSError | None = None
            try:
                infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            except OSError as exc:
                raise httpcore.ConnectError(str(exc)) from exc
            for family, kind, proto, _, addr in infos:
                if guard is not None and guard.cancelled:
                    break
                sock = socket.socket(family, kind, proto)
                try:
                    if guard is not None:
                        guard.attach(sock)  # a cancel now aborts connect() at once
                    sock.settimeout(timeout)
                    if local_address:
                        sock.bind((local_address, 0))
                    sock.connect(addr)
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return _Stream(sock)
                except TimeoutError as exc:
                    sock.close()
                    raise httpcore.ConnectTimeout(str(exc)) from exc
                except OSError as exc:
                    sock.close()
                    last = exc
            raise httpcore.ConnectError(str(last or "connection cancelled"))

    pool._network_backend = _Backend()
    return True


# -- helpers ------------------------------------------------------------------------------------
class _Secret:
    """Holds the key; its repr never shows it (vars(client) stays safe to print)."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "<secret>" if self._value else "<none>"

    __str__ = __repr__


def _timeout(value: Any) -> Any:
    import httpx

    if value is None:
        value = DEFAULT_TIMEOUT
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, (tuple, list)):
        connect, read = value
        return httpx.Timeout(read, connect=connect, write=connect, pool=connect)
    return httpx.Timeout(float(value))


def _retry_after(headers: Any, cap: float) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, Retry-After seconds or date)."""
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = None
    ra = headers.get("retry-after")
    if value is None and ra:
        try:
            value = float(ra)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(ra)
                value = when.timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                value = None
    if value is None:
        return None
    return min(max(value, 0.0), cap)


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


def _retryable_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


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
        self._key = _Secret(api_key)
        self.base_url = (base_url or os.environ.get("CO_API_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.client_name = client_name
        self.timeout = _timeout(timeout)
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
                    _install_guarded_backend(http)
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
        guard = _Guard()
        resp = None
        try:
            resp = self._open("/v2/chat", body, False, guard, Cancel())
            raw = self._read_body(resp, guard, limit=None)
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
        self, path: str, body: dict[str, Any], stream: bool, guard: _Guard, cancel: Cancel
    ) -> Any:
        """Send with retries; return a 2xx streaming httpx.Response (headers read, body not)."""
        import httpx

        http = self._client()
        url = self.base_url + path
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = self._headers(stream)
        attempt = 0
        while True:
            if cancel.is_set():
                raise Cancelled(cancel.reason or "cancelled")
            delay: float | None = None
            try:
                request = http.build_request("POST", url, content=payload, headers=headers)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
                raise NetError(f"invalid base URL {self.base_url!r}: {exc}") from None
            _local.guard = guard
            try:
                resp = http.send(request, stream=True)
            except httpx.UnsupportedProtocol as exc:
                raise NetError(f"invalid base URL {self.base_url!r}: {exc}") from None
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                if attempt >= self.max_retries:
                    raise NetError(f"cannot connect to {self.base_url}: {_describe(exc)}") from None
                resp = None
            except httpx.TransportError as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                raise NetError(
                    f"no valid response from {self.base_url}: {_describe(exc)}"
                ) from None
            finally:
                _local.guard = None
            if resp is not None:
                stream_obj = resp.extensions.get("network_stream")
                if stream_obj is not None:
                    guard.attach(stream_obj.get_extra_info("socket"))
                status = resp.status_code
                if status < 400:
                    return resp
                try:
                    raw = self._read_body(resp, guard, limit=_ERROR_BODY_LIMIT)
                except NetError:
                    raw = b""
                finally:
                    resp.close()
                error = _api_error(status, raw, resp.headers)
                if not _retryable_status(status) or attempt >= self.max_retries:
                    raise error
                delay = _retry_after(resp.headers, self.max_retry_wait)
            if delay is None:
                delay = min(self.max_backoff, self.backoff * (2**attempt))
                delay *= random.uniform(0.75, 1.25)
            attempt += 1
            if cancel.wait(delay):
                raise Cancelled(cancel.reason or "cancelled")

    def _read_body(self, resp: Any, guard: _Guard, limit: int | None) -> bytes:
        import httpx

        parts: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_bytes():  # decoded: an error/JSON body may be gzipped
                parts.append(chunk)
                size += len(chunk)
                if limit is not None and size >= limit:
                    break
        except httpx.TransportError as exc:
            if guard.cancelled:
                raise Cancelled("cancelled") from None
            raise NetError(
                f"connection dropped while reading the response: {_describe(exc)}"
            ) from None
        return b"".join(parts)

    def _events(
        self, body: dict[str, Any], cancel: Cancel, acc: Accumulator
    ) -> Iterator[dict[str, Any]]:
        """The streaming loop (hot path): raw bytes -> SSEDecoder -> Accumulator -> caller."""
        _TIMEOUTS, _DROPS = _stream_errors()
        guard = _Guard()
        unregister = cancel.on_cancel(guard.shutdown)
        resp = None
        try:
            resp = self._open("/v2/chat", body, True, guard, cancel)
            ctype = resp.headers.get("content-type", "")
            if "event-stream" not in ctype and "ndjson" not in ctype and "jsonl" not in ctype:
                raw = self._read_body(resp, guard, limit=2000)
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
                    f"stream stalled: no data within the read timeout after {acc.events} events ({_describe(exc)})"
                ) from None
            except _DROPS as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                raise NetError(
                    f"connection dropped mid-stream after {acc.events} events: {_describe(exc)}"
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


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}" if str(exc) else text)


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
