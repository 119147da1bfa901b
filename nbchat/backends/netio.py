"""Sockets for the HTTP backends, plugged into httpx/httpcore through their public seams.

`transport.GuardedTransport` (an ``httpx.BaseTransport`` over an ``httpcore.ConnectionPool``)
gives the pool our `GuardedBackend` as its ``network_backend``: every socket it opens is a
`SocketStream` we made, so

* a `Guard` (one per request) learns the request's socket as early as possible -- before
  ``connect()`` for a new connection, before the TLS handshake, at the first write on a pooled
  one -- and a cancel from another thread ``shutdown(SHUT_RDWR)``s it, which wakes a blocked
  ``connect``/``recv`` at once. The fd is never closed from the other thread (httpcore does
  that), so there is no fd-reuse race;
* idle pooled connections are kept for minutes (a notebook's turns are that far apart), with
  TCP keep-alive probes so a NAT does not silently forget them;
* each socket read of a chunked body reaches h11 as one chunk (`rechunk.Rechunker`), so a
  stream of small events costs one pass through httpcore and httpx per read, not per event;
* `GuardedBackend.preconnect` opens TCP+TLS in the background without sending a request; the
  next ``connect_tcp`` to that host takes it.

Only public names of httpcore (``NetworkBackend``, ``NetworkStream``, its exceptions) are
used. Imported lazily (it imports httpcore).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpcore

from .rechunk import Rechunker

__all__ = [
    "Guard",
    "GuardedBackend",
    "SocketStream",
    "local",
    "shutdown_socket",
]

KEEPALIVE_EXPIRY = 300.0  # seconds an idle connection stays pooled (turns are minutes apart)
local = threading.local()  # the Guard of the request being sent on this thread


def shutdown_socket(sock: Any) -> None:
    """``shutdown(SHUT_RDWR)``: wakes a blocked recv/connect/handshake; never closes the fd.

    Called as ``socket.socket.shutdown`` so that an ``SSLSocket`` (whose own ``shutdown``
    also drops its SSL object, racing the reader thread) only gets the plain TCP shutdown.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, AttributeError, TypeError, ValueError):
        pass  # already closed / not connected: nothing to wake


class Guard:
    """Per-request link between a cancel and the socket the request currently uses.

    ``connected`` tells whether the current attempt opened a new connection (False: it went
    out on a pooled one, so a failure before any response byte is a stale connection).
    """

    __slots__ = ("_lock", "_sock", "cancelled", "finished", "connected")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Any = None
        self.cancelled = False
        self.finished = False
        self.connected = False

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


def _keepalive(sock: socket.socket) -> None:
    """TCP keep-alive probes after 60 s idle: NATs keep the pooled connection, dead peers show."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


class SocketStream(httpcore.NetworkStream):
    """A blocking socket as an httpcore network stream; reports itself to the sending Guard.

    ``read_cap`` (seconds) shortens read timeouts while set (used to drain a finished body
    without waiting a whole read timeout for a server that never ends it).
    """

    def __init__(self, sock: socket.socket, tls_host: str | None = None) -> None:
        self.sock = sock
        # HTTP/1.1: coalesce each read's body chunks into one (see rechunk); not for h2
        alpn = sock.selected_alpn_protocol() if isinstance(sock, ssl.SSLSocket) else None
        self.rechunker = Rechunker() if alpn in (None, "http/1.1") else None
        self.tls_host = tls_host  # set when the TLS handshake was done ahead (preconnect)
        self.read_cap: float | None = None
        self._timeout: Any = object()  # the socket timeout last set (skip redundant syscalls)

    def _settimeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        cap = self.read_cap
        if cap is not None and (timeout is None or timeout > cap):
            timeout = cap
        try:
            self._settimeout(timeout)
            while True:
                data = self.sock.recv(max_bytes)
                if not data or self.rechunker is None:
                    return data
                data = self.rechunker.feed(data)
                if data:  # else the read held only chunk framing: read on
                    return data
        except TimeoutError as exc:  # socket.timeout
            raise httpcore.ReadTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        guard = getattr(local, "guard", None)
        if guard is not None:  # a pooled connection now carries this request
            guard.attach(self.sock)
        if not buffer:
            return
        if self.rechunker is not None:
            self.rechunker.request(buffer)
        try:
            self._settimeout(timeout)
            self.sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self.sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> SocketStream:
        if isinstance(self.sock, ssl.SSLSocket):
            if self.tls_host is not None and self.tls_host == server_hostname:
                return self  # handshake already done by preconnect
            raise httpcore.ConnectError("TLS inside TLS (an https:// proxy) is not supported")
        try:
            # wrap without handshaking, so the TLS socket is known while the handshake runs
            self.sock.settimeout(timeout)
            sock = ssl_context.wrap_socket(
                self.sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
            guard = getattr(local, "guard", None)
            if guard is not None:
                guard.attach(sock)
            sock.do_handshake()
        except TimeoutError as exc:
            self.close()
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            self.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return SocketStream(sock)

    def get_extra_info(self, info: str) -> Any:
        sock = self.sock
        if info == "socket":
            return sock
        if info == "ssl_object":
            return sock if isinstance(sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "is_readable":
            return is_readable(sock)
        return None


def is_readable(sock: socket.socket) -> bool:
    """An idle connection that is readable was closed by the server (or sent junk): drop it.

    TLS 1.3 servers send session tickets after the handshake: on a TLS socket, readable
    bytes that carry no application data (the read would block) leave it usable.
    """
    try:
        if sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False
        if not isinstance(sock, ssl.SSLSocket):
            return True
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            sock.recv(1)  # b"": closed; data: junk -- either way not reusable
            return True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False  # only TLS records (tickets): still good
        finally:
            sock.settimeout(timeout)
    except (OSError, ValueError):
        return True


class GuardedBackend(httpcore.NetworkBackend):
    """Opens sockets the current Guard can shut down; hands out preconnected ones first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: dict[tuple[str, int], tuple[float, SocketStream]] = {}

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> SocketStream:
        guard = getattr(local, "guard", None)
        spare = self._take_spare(host, port)
        if spare is not None:  # like a pooled one: a failure before the reply is retried
            if guard is not None:
                guard.attach(spare.sock)
            return spare
        if guard is not None:
            guard.connected = True
        return SocketStream(_connect(host, port, timeout, local_address, socket_options, guard))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> SocketStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return SocketStream(sock)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- preconnect ---------------------------------------------------------------------------
    def preconnect(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float | None
    ) -> None:
        """Open TCP (+TLS when ``ssl_context``) to host:port now and keep it for the next
        ``connect_tcp``. Blocking: run it in a background thread. Failures are ignored."""
        key = (host, port)
        with self._lock:
            if key in self._spare:
                return
        try:
            sock: socket.socket = _connect(host, port, timeout, None, None, None)
            if ssl_context is not None:
                sock.settimeout(timeout)
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except (OSError, httpcore.ConnectError, httpcore.ConnectTimeout):
            return
        stream = SocketStream(sock, tls_host=host if ssl_context is not None else None)
        with self._lock:
            if key not in self._spare:
                self._spare[key] = (time.monotonic(), stream)
                return
        stream.close()

    def _take_spare(self, host: str, port: int) -> SocketStream | None:
        with self._lock:
            item = self._spare.pop((host, port), None)
        if item is None:
            return None
        born, stream = item
        if time.monotonic() - born > KEEPALIVE_EXPIRY or is_readable(stream.sock):
            stream.close()  # too old, or the server closed it meanwhile
            return None
        return stream

    def close(self) -> None:
        with self._lock:
            spares, self._spare = list(self._spare.values()), {}
        for _, stream in spares:
            stream.close()


def _connect(
    host: str,
    port: int,
    timeout: float | None,
    local_address: str | None,
    socket_options: Iterable[Any] | None,
    guard: Guard | None,
) -> socket.socket:
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
            _keepalive(sock)
            return sock
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            sock.close()
            last = exc
    raise httpcore.ConnectError(str(last or "connection cancelled"))
