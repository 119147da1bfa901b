"""The HTTP layer shared by the v2 client (`cohere.Client`) and `openai.OpenAIBackend`.

`HTTPBackend` (a base class) owns: the key (`Secret`, never in a repr), the base URL, timeouts,
one pooled ``httpx.Client`` created lazily under a lock (its transport is
`transport.GuardedTransport`: keep-alive across turns, cancel from any thread), the send loop
with retries, and ``preconnect()``.

Retries: 429 and 5xx (honouring Retry-After), connect errors, with exponential backoff and
jitter, only before the first byte of a body; a request that went out on a pooled connection
the server had closed meanwhile (no response byte came back) is resent at once, uncounted.
Errors are typed (``APIError``, ``ConnectionError``, ``Cancelled``) and redacted; httpx and
httpcore debug logs are redacted too. httpx is imported lazily.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import Cancelled, redact, register_secret
from ..errors import ConnectionError as NetError
from .base import Cancel

__all__ = [
    "DEFAULT_TIMEOUT",
    "ERROR_BODY_LIMIT",
    "HTTPBackend",
    "Secret",
    "body_chunks",
    "describe",
    "make_timeout",
    "read_body",
    "retry_after",
    "retryable_status",
]

DEFAULT_TIMEOUT = (10.0, 300.0)  # (connect, read): the SDK waits up to 300 s for a reply
ERROR_BODY_LIMIT = 1 << 20  # never buffer more than 1 MB of an error body
DRAIN_LIMIT = 1 << 20  # bytes read after the last event so the connection can be reused
DRAIN_TIME = 2.0  # seconds a server gets to end the body after the last event


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
_FILTER = _RedactingFilter()
for _name in ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2"):
    logging.getLogger(_name).addFilter(_FILTER)
logging.getLogger("httpcore.proxy").addFilter(_FILTER)


# -- small helpers --------------------------------------------------------------------------------
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


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY...) sets for base_url."""
    scheme, _, rest = base_url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme.lower()) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host.split(":")[0] if "]" not in host else host):
        return None
    return proxy if proxy.startswith(("http://", "https://")) else None


# -- reading bodies -----------------------------------------------------------------------------
def read_body(resp: Any, guard: Any, limit: int | None, *, decoded: bool = True) -> bytes:
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


def body_chunks(resp: Any) -> Iterator[bytes]:
    """The body as it arrives: raw bytes (decompressed only if the server compressed it)."""
    chunks: Iterator[bytes]
    if resp.headers.get("content-encoding") not in (None, "", "identity"):
        chunks = resp.iter_bytes()
    else:
        chunks = resp.iter_raw()
    return chunks


def drain(chunks: Iterator[bytes], resp: Any) -> bool:
    """Read what follows the last event (``[DONE]``, the chunked terminator) so the
    connection goes back to the pool; give up after DRAIN_TIME / DRAIN_LIMIT. True if ended."""
    stream = resp.extensions.get("network_stream")
    capped = hasattr(stream, "read_cap")
    if capped:
        stream.read_cap = DRAIN_TIME
    deadline = time.monotonic() + DRAIN_TIME
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > DRAIN_LIMIT or time.monotonic() > deadline:
                return False
    except Exception:  # the connection is dropped on close: nothing else to do
        return False
    finally:
        if capped:
            stream.read_cap = None
    return True


def stream_failure(exc: BaseException, guard: Any, cancel: Cancel, events: int) -> Exception:
    """The exception for a transport error after the first event."""
    import httpx

    if guard.cancelled:
        return Cancelled(cancel.reason or "cancelled")
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return NetError(
            f"stream stalled: no data within the read timeout after {events} events ({describe(exc)})"
        )
    return NetError(f"connection dropped mid-stream after {events} events: {describe(exc)}")


# -- the shared base ------------------------------------------------------------------------------
class HTTPBackend:
    """Base of the HTTP backends: key, base URL, one pooled client, the send loop."""

    backoff = 0.5  # first retry delay (s); doubles each attempt, +-25 % jitter
    max_backoff = 8.0
    max_retry_wait = 60.0  # cap on a server's Retry-After
    http2 = False  # offer HTTP/2 (needs the h2 package); measured no faster: bench/hosted_turns.py

    base_url: str

    def _setup_http(self, api_key: str | None, timeout: Any, max_retries: int) -> None:
        register_secret(api_key)
        self._key = Secret(api_key)
        self.timeout = make_timeout(timeout)
        self.max_retries = max(0, int(max_retries))
        self._http: Any = None
        self._transport: Any = None
        self._http_lock = threading.Lock()

    @property
    def has_key(self) -> bool:
        return self._key.get() is not None

    def _auth(self, headers: dict[str, str]) -> dict[str, str]:
        key = self._key.get()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # -- lifecycle ------------------------------------------------------------------------------
    def _client(self) -> Any:
        """The pooled ``httpx.Client`` (created once, under a lock)."""
        http = self._http
        if http is None:
            with self._http_lock:
                http = self._http
                if http is None:
                    import httpx

                    from .transport import GuardedTransport

                    transport = GuardedTransport(
                        httpx.create_ssl_context(),
                        proxy=env_proxy(self.base_url),
                        http2=self.http2,
                    )
                    http = httpx.Client(
                        transport=transport,
                        timeout=self.timeout,
                        follow_redirects=False,
                        trust_env=False,
                    )
                    self._transport, self._http = transport, http
        return http

    def preconnect(self) -> None:
        """Open the connection to ``base_url`` in a background thread, so the first turn
        does not wait for TCP and TLS. Sends no request; never blocks; failures are silent."""

        def run() -> None:
            try:
                import httpx

                self._client()
                self._transport.preconnect(httpx.URL(self.base_url), self.timeout.connect)
            except Exception:
                pass

        threading.Thread(target=run, name="nbchat-preconnect", daemon=True).start()

    def close(self) -> None:
        with self._http_lock:
            http, self._http, self._transport = self._http, None, None
        if http is not None:
            http.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sending --------------------------------------------------------------------------------
    def _send(
        self,
        url: str,
        headers: dict[str, str],
        payload: Callable[[], bytes],
        guard: Any,
        cancel: Cancel,
        make_error: Callable[[int, bytes, Any], Exception],
        *,
        decoded: bool = True,
        resend: Callable[[int, bytes], bool] | None = None,
    ) -> Any:
        """POST with retries; return a 2xx streaming httpx.Response (headers read, body not).

        ``payload()`` is called before every attempt; ``make_error(status, body, headers)``
        turns an HTTP error into the exception to raise; ``resend(status, body)`` returning
        True resends at once without counting an attempt (after it changed the payload).
        """
        import httpx

        from . import netio

        http = self._client()
        attempt = 0
        stale = 0  # resends after a pooled connection turned out closed
        while True:
            content = payload()
            if cancel.is_set():
                raise Cancelled(cancel.reason or "cancelled")
            delay: float | None = None
            try:
                request = http.build_request("POST", url, content=content, headers=headers)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
                raise NetError(f"invalid base URL {self.base_url!r}: {exc}") from None
            guard.connected = False
            netio.local.guard = guard  # our sockets report themselves to this guard
            try:
                resp = http.send(request, stream=True)
            except httpx.UnsupportedProtocol as exc:
                raise NetError(f"invalid base URL {self.base_url!r}: {exc}") from None
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                if attempt >= self.max_retries:
                    raise NetError(f"cannot connect to {self.base_url}: {describe(exc)}") from None
                resp = None
            except httpx.TransportError as exc:
                if guard.cancelled:
                    raise Cancelled(cancel.reason or "cancelled") from None
                if not guard.connected and stale < 2 and _stale_error(exc):
                    stale += 1  # the server had closed the idle connection: a new one, now
                    continue
                raise NetError(f"no valid response from {self.base_url}: {describe(exc)}") from None
            finally:
                netio.local.guard = None
            if resp is not None:
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
                if not retryable_status(status) or attempt >= self.max_retries:
                    raise error
                delay = retry_after(resp.headers, self.max_retry_wait)
            if delay is None:
                delay = min(self.max_backoff, self.backoff * (2**attempt))
                delay *= random.uniform(0.75, 1.25)
            attempt += 1
            if cancel.wait(delay):
                raise Cancelled(cancel.reason or "cancelled")


def _stale_error(exc: BaseException) -> bool:
    """Errors a request sent on a connection the server had closed ends with."""
    import httpx

    return isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))
