"""Transport pieces shared by the HTTP backends (`cohere.Client`, `openai.OpenAIBackend`).

Why the socket plumbing: a cancel from another thread must end a blocked read *now*, not at
the next byte or the read timeout. Every request gets a `Guard` that learns its socket as
early as possible (while connecting for a new connection, at the request write for a pooled
one, from ``response.extensions`` afterwards) and ``shutdown(SHUT_RDWR)``s it on cancel, which
wakes the blocked ``recv``/``connect`` at once. The fd itself is never closed from the other
thread (httpcore does that), so there is no fd-reuse race.

Also here: the send loop with retries (429, 5xx, connect errors; only before the first byte
of a body), Retry-After parsing, timeout normalisation, the key wrapper and error text.
httpx is imported lazily (this module is imported by lazily imported modules only).
"""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import Cancelled, redact
from ..errors import ConnectionError as NetError
from .base import Cancel


class _RedactingFilter(logging.Filter):
    """httpx/httpcore DEBUG logs print request and response headers: a key sent, or echoed
    back by a server, would land in the logs. Redact every record's formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's problem, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# Logger filters do not apply to child loggers' records, so name each logger that logs.
_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)
_FILTER = _RedactingFilter()
for _name in _LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)

__all__ = [
    "DEFAULT_TIMEOUT",
    "ERROR_BODY_LIMIT",
    "Guard",
    "Secret",
    "describe",
    "install_guarded_backend",
    "local",
    "make_timeout",
    "open_with_retries",
    "read_body",
    "retry_after",
    "retryable_status",
    "shutdown_socket",
]

DEFAULT_TIMEOUT = (10.0, 300.0)  # (connect, read): the SDK waits up to 300 s for a reply
ERROR_BODY_LIMIT = 1 << 20  # never buffer more than 1 MB of an error body
local = threading.local()  # the Guard of the request being sent on this thread


# -- cancellation plumbing ----------------------------------------------------------------------
def shutdown_socket(sock: Any) -> None:
    """``shutdown(SHUT_RDWR)``: wakes a blocked recv/connect; never closes the fd."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError, ValueError):
        pass  # already closed / not connected: nothing to wake


class Guard:
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
            shutdown_socket(sock)

    def shutdown(self) -> None:
        """Cancel callback (any thread): wake whatever blocks on the socket."""
        with self._lock:
            self.cancelled = True
            sock = None if self.finished else self._sock
        if sock is not None:
            shutdown_socket(sock)

    def finish(self) -> None:
        # After the request the (pooled) connection may serve someone else: forget it.
        with self._lock:
            self.finished = True
            self._sock = None


def install_guarded_backend(http_client: Any) -> bool:
    """Make the default transport's connections report their sockets to the current Guard.

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
            guard = getattr(local, "guard", None)
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
                guard = getattr(local, "guard", None)
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
            guard = getattr(local, "guard", None)
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
class Secret:
    """Holds the key; its repr never shows it (vars(client) stays safe to print)."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or None

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "<secret>" if self._value else "<none>"

    __str__ = __repr__


def make_timeout(value: Any) -> Any:
    """None, seconds, ``(connect, read)`` or an ``httpx.Timeout`` -> ``httpx.Timeout``."""
    import httpx

    if value is None:
        value = DEFAULT_TIMEOUT
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, (tuple, list)):
        connect, read = value
        return httpx.Timeout(read, connect=connect, write=connect, pool=connect)
    return httpx.Timeout(float(value))


def retry_after(headers: Any, cap: float) -> float | None:
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


def retryable_status(status: int) -> bool:
    """429 and 5xx are worth another attempt (before any body byte was used)."""
    return status == 429 or 500 <= status <= 599


def describe(exc: BaseException) -> str:
    """``Type: message`` of a transport error, with registered secrets redacted."""
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}" if str(exc) else text)


# -- sending ------------------------------------------------------------------------------------
def read_body(resp: Any, guard: Guard, limit: int | None, *, decoded: bool = True) -> bytes:
    """Up to ``limit`` bytes of a streaming response's body (``decoded``: undo gzip etc.)."""
    import httpx

    parts: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_bytes() if decoded else resp.iter_raw():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
    except httpx.TransportError as exc:
        if guard.cancelled:
            raise Cancelled("cancelled") from None
        raise NetError(f"connection dropped while reading the response: {describe(exc)}") from None
    return b"".join(parts)


def open_with_retries(
    owner: Any,
    url: str,
    headers: dict[str, str],
    payload: Callable[[], bytes],
    guard: Guard,
    cancel: Cancel,
    make_error: Callable[[int, bytes, Any], Exception],
    *,
    decoded: bool = True,
    resend: Callable[[int, bytes], bool] | None = None,
) -> Any:
    """POST with retries; return a 2xx streaming httpx.Response (headers read, body not).

    ``owner`` is the client: its ``_client()`` (the guarded httpx.Client), ``base_url``,
    ``max_retries``, ``backoff``, ``max_backoff`` and ``max_retry_wait`` are used.
    ``payload()`` is called before every attempt; ``make_error(status, body, headers)`` turns
    an HTTP error into the exception to raise; ``resend(status, body)`` returning True resends
    at once without counting an attempt (after it changed what ``payload()`` builds).
    """
    import httpx

    http = owner._client()
    base_url = owner.base_url
    attempt = 0
    while True:
        content = payload()
        if cancel.is_set():
            raise Cancelled(cancel.reason or "cancelled")
        delay: float | None = None
        try:
            request = http.build_request("POST", url, content=content, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise NetError(f"invalid base URL {base_url!r}: {exc}") from None
        local.guard = guard  # the guarded transport reports the socket to this guard
        try:
            resp = http.send(request, stream=True)
        except httpx.UnsupportedProtocol as exc:
            raise NetError(f"invalid base URL {base_url!r}: {exc}") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if guard.cancelled:
                raise Cancelled(cancel.reason or "cancelled") from None
            if attempt >= owner.max_retries:
                raise NetError(f"cannot connect to {base_url}: {describe(exc)}") from None
            resp = None
        except httpx.TransportError as exc:
            if guard.cancelled:
                raise Cancelled(cancel.reason or "cancelled") from None
            raise NetError(f"no valid response from {base_url}: {describe(exc)}") from None
        finally:
            local.guard = None
        if resp is not None:
            stream_obj = resp.extensions.get("network_stream")
            if stream_obj is not None:
                guard.attach(stream_obj.get_extra_info("socket"))
            status = resp.status_code
            if status < 400:
                return resp
            try:
                raw = read_body(resp, guard, ERROR_BODY_LIMIT, decoded=decoded)
            except NetError:
                raw = b""
            finally:
                resp.close()
            error = make_error(status, raw, resp.headers)
            if resend is not None and resend(status, raw):
                continue
            if not retryable_status(status) or attempt >= owner.max_retries:
                raise error
            delay = retry_after(resp.headers, owner.max_retry_wait)
        if delay is None:
            delay = min(owner.max_backoff, owner.backoff * (2**attempt))
            delay *= random.uniform(0.75, 1.25)
        attempt += 1
        if cancel.wait(delay):
            raise Cancelled(cancel.reason or "cancelled")
