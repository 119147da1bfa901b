"""``GuardedTransport``: an ``httpx.BaseTransport`` over an ``httpcore.ConnectionPool`` whose
network backend is `netio.GuardedBackend` (sockets a cancel can shut down, TCP keep-alive,
preconnect, rechunked bodies). ``httpx.HTTPTransport`` takes no network backend, so this is
its ``handle_request`` rebuilt on public names only: ``httpx.BaseTransport``, ``Response``,
``SyncByteStream``, the exceptions; ``httpcore.ConnectionPool``, ``Request``, ``URL``,
``Proxy``, the exceptions. Imported lazily (it imports httpx and httpcore).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

from .netio import KEEPALIVE_EXPIRY, GuardedBackend

__all__ = ["GuardedTransport"]

# Most specific first: httpcore's classes mirror httpx's one to one.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


def _mapped(exc: Exception) -> Exception:
    for core, mapped in _EXCEPTIONS:
        if isinstance(exc, core):
            return mapped(str(exc))
    return exc


class _Body(httpx.SyncByteStream):
    """The response body, httpcore exceptions turned into httpx ones."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.stream
        except httpcore.ConnectionNotAvailable:
            raise
        except Exception as exc:
            new = _mapped(exc)
            if new is exc:
                raise
            raise new from exc

    def close(self) -> None:
        self.stream.close()


class GuardedTransport(httpx.BaseTransport):
    """``httpx.Client(transport=GuardedTransport(...))``: a pool whose sockets are ours."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        http2: bool = False,
        proxy: str | None = None,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
    ) -> None:
        ssl_context.set_alpn_protocols(["http/1.1", "h2"] if http2 else ["http/1.1"])
        self.ssl_context = ssl_context
        self.backend = GuardedBackend()
        self.pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            proxy=httpcore.Proxy(proxy, ssl_context=ssl_context) if proxy else None,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=self.backend,
        )
        self.proxied = bool(proxy)
        self.http2 = http2

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            resp = self.pool.handle_request(core)
        except Exception as exc:
            new = _mapped(exc)
            if new is exc:
                raise
            raise new from exc
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_Body(resp.stream),
            extensions=resp.extensions,
        )

    def preconnect(self, url: httpx.URL, timeout: float | None) -> None:
        """Blocking TCP(+TLS) to ``url``'s origin, kept for its next request (see the module)."""
        if self.proxied or self.http2 or url.scheme not in ("http", "https"):
            return  # (an h2 server speaks first: a spare's readability check cannot tell)
        if any(conn.is_idle() for conn in self.pool.connections):
            return  # a kept-alive connection is waiting already
        port = url.port or (443 if url.scheme == "https" else 80)
        ctx = self.ssl_context if url.scheme == "https" else None
        self.backend.preconnect(url.host, port, ctx, timeout)

    def close(self) -> None:
        self.pool.close()
        self.backend.close()
