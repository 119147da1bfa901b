"""A scriptable v2 test server on 127.0.0.1 (real sockets, raw bytes, one thread per connection).

Each incoming request takes the next scripted `Reply` (or the default one) and is recorded
(method, path, headers, body, parsed JSON) in ``server.requests``. Replies are written
byte-for-byte, so the client sees exactly what a real (or a broken) server would send:

    with V2Server() as srv:
        srv.push(sse(fixture_body("lc_stream_plain")), chunk_size=7))
        Client(base_url=srv.url, api_key="k").chat_stream(...)

Fault knobs on `Reply`: ``chunk_size`` (HTTP chunks of that many bytes), ``delay`` (between
chunks: a slow trickle), ``headers_delay`` (stall before the status line), ``stall_after``
(send that many body bytes, then hang), ``drop_after`` (send that many body bytes, then close
the socket mid-chunk-stream), ``raw`` (send these bytes instead of an HTTP response: garbage),
``close_before_headers``. ``V2Server.connections`` counts accepted connections;
``V2Server(idle_timeout=s)`` closes a connection idle for ``s`` seconds. Helpers build bodies:
`sse`, `fixture_body`, `events_body`, `cut_events` (first N events, no terminator),
`json_reply`, `error_reply`, `long_reply`.

Run as a script to serve one long reply forever (used by bench/stream_throughput.py in its own
process, so the server does not share the GIL with the consumer being measured):
``python tests/v2server.py --long 20000`` prints ``URL http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURE_DIRS = [HERE / "fixtures" / "cohere-wire", Path("/work/shared/fixtures/cohere-wire")]


# -- bodies -------------------------------------------------------------------------------------
def fixture_dir() -> Path:
    """tests/fixtures/cohere-wire if it holds captures, else the shared reference copy."""
    for d in FIXTURE_DIRS:
        if d.is_dir() and any(d.glob("*.sse")):
            return d
    raise FileNotFoundError("no cohere-wire fixtures found in " + ", ".join(map(str, FIXTURE_DIRS)))


def fixture_names() -> list[str]:
    return sorted(p.name[:-4] for p in fixture_dir().glob("*.sse"))


def fixture_body(name: str) -> bytes:
    return (fixture_dir() / f"{name}.sse").read_bytes()


def fixture_json(name: str, suffix: str) -> Any:
    return json.loads((fixture_dir() / f"{name}.{suffix}.json").read_text("utf-8"))


def encode(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"


def events_body(events: list[dict[str, Any]], done: bool = True) -> bytes:
    return b"".join(encode(e) for e in events) + (DONE if done else b"")


def split_events(body: bytes) -> list[bytes]:
    """The raw frames of an SSE body (each ends with its blank line)."""
    frames = body.replace(b"\r\n", b"\n").split(b"\n\n")
    return [f + b"\n\n" for f in frames if f.strip()]


def cut_events(body: bytes, n: int) -> bytes:
    """The first n events of a body (no message-end, no [DONE] unless among them)."""
    return b"".join(split_events(body)[:n])


def byte_offset_after(body: bytes, n: int) -> int:
    """Byte length of the first n event frames (for drop_after / stall_after)."""
    return len(cut_events(body, n))


def text_events(
    pieces: list[str], id: str = "gen-1", finish_reason: str = "COMPLETE"
) -> list[dict]:
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": [],
        "tool_plan": "",
        "tool_calls": [],
        "citations": [],
    }
    events: list[dict[str, Any]] = [{"id": id, "type": "message-start", "delta": {"message": msg}}]
    events.append(
        {
            "type": "content-start",
            "index": 0,
            "delta": {"message": {"content": {"type": "text", "text": ""}}},
        }
    )
    for p in pieces:
        events.append(
            {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}}
        )
    events.append({"type": "content-end", "index": 0})
    usage = {
        "billed_units": {"input_tokens": 3, "output_tokens": len(pieces)},
        "tokens": {"input_tokens": 10, "output_tokens": len(pieces)},
    }
    events.append(
        {"type": "message-end", "delta": {"finish_reason": finish_reason, "usage": usage}}
    )
    return events


def long_body(n_deltas: int) -> bytes:
    """One long reply: n_deltas content-delta events (word-sized pieces, some non-ASCII)."""
    words = ["Hello", " world", ",", " ça", " va", "?", " 数据", " streaming", " test", "\n"]
    return events_body(text_events([words[i % len(words)] for i in range(n_deltas)]))


# -- replies ------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = True  # Transfer-Encoding: chunked (as Cohere streams); else Content-Length
    chunk_size: int | None = None  # None: one chunk per SSE frame (like the real API)
    delay: float = 0.0  # seconds between chunks
    headers_delay: float = 0.0  # stall before the status line
    stall_after: int | None = None  # body bytes sent before hanging
    stall: float = 30.0  # how long a stall lasts (ends early when the server stops)
    drop_after: int | None = None  # body bytes sent before the socket is closed
    raw: bytes | None = None  # write exactly this instead of an HTTP response
    close_before_headers: bool = False


def sse(body: bytes, **kw: Any) -> Reply:
    return Reply(body=body, **kw)


def json_reply(obj: Any, status: int = 200, **kw: Any) -> Reply:
    return Reply(
        status=status,
        body=json.dumps(obj).encode(),
        content_type="application/json",
        chunked=False,
        **kw,
    )


def error_reply(status: int, message: str = "boom", id: str = "err-1", **kw: Any) -> Reply:
    """Cohere's error body ``{"id", "message"}``."""
    return json_reply({"id": id, "message": message}, status=status, **kw)


def text_reply(status: int, text: str, content_type: str = "text/html", **kw: Any) -> Reply:
    return Reply(status=status, body=text.encode(), content_type=content_type, chunked=False, **kw)


def long_reply(n_deltas: int, **kw: Any) -> Reply:
    return sse(long_body(n_deltas), **kw)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        idle = self.server.owner.idle_timeout
        if idle:  # close a connection idle for that long (as real servers and proxies do)
            self.timeout = idle
        super().setup()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner
        rec = Recorded(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
        )
        reply = owner._next(rec)
        try:
            self._send(reply, owner)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    do_GET = do_POST = _handle

    def _send(self, r: Reply, owner: V2Server) -> None:
        w = self.connection
        if r.headers_delay and owner._stop.wait(r.headers_delay):
            self.close_connection = True
            return
        if r.close_before_headers:
            self.close_connection = True
            return
        if r.raw is not None:
            w.sendall(r.raw)
            self.close_connection = True
            return
        head = [f"HTTP/1.1 {r.status} {_REASONS.get(r.status, 'Status')}"]
        if r.content_type:
            head.append(f"Content-Type: {r.content_type}")
        head.append("Cache-Control: no-cache")
        for k, v in r.headers.items():
            head.append(f"{k}: {v}")
        special = r.stall_after is not None or r.drop_after is not None
        if r.chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {len(r.body)}")
        w.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        cached = getattr(r, "_wire", None)
        if cached is not None and not special and not r.delay:
            w.sendall(cached)
            return
        body = r.body
        cut = r.drop_after if r.drop_after is not None else r.stall_after
        if cut is not None:
            body = body[:cut]
        if r.chunk_size:
            pieces = [body[i : i + r.chunk_size] for i in range(0, len(body), r.chunk_size)]
        elif r.chunked:
            pieces = split_events(body) if body else []
            if b"".join(pieces) != body:  # not clean SSE (or cut mid-event): send as is
                pieces = [body]
        else:
            pieces = [body]
        if r.chunked:
            pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p]
        if r.delay:
            for p in pieces:
                w.sendall(p)
                if owner._stop.wait(r.delay):
                    break
        else:
            # batch the writes (same bytes on the wire, far fewer syscalls)
            if not special and len(pieces) > 64:
                wire = b"".join(pieces) + (b"0\r\n\r\n" if r.chunked else b"")
                r._wire = wire  # type: ignore[attr-defined]  # replayed as is next time
                w.sendall(wire)
                return
            buf: list[bytes] = []
            size = 0
            for p in pieces:
                buf.append(p)
                size += len(p)
                if size >= 65536:
                    w.sendall(b"".join(buf))
                    buf, size = [], 0
            if buf:
                w.sendall(b"".join(buf))
        if special:
            if r.stall_after is not None and r.drop_after is None:
                owner._stop.wait(r.stall)
            self.close_connection = True
            try:
                w.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if r.chunked:
            w.sendall(b"0\r\n\r\n")


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: V2Server

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.owner._lock:
            self.owner.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that hung up (cancel, drop tests) is expected here
        super().handle_error(request, client_address)


class V2Server:
    """Start on 127.0.0.1:0 in a background thread; `url` is the base URL to give a client."""

    def __init__(self, default: Reply | None = None, idle_timeout: float | None = None) -> None:
        self.requests: list[Recorded] = []
        self.connections = 0  # TCP connections accepted
        self.idle_timeout = idle_timeout
        self.default = default or error_reply(404, "no reply scripted", id="none")
        self._queue: deque[Reply] = deque()
        self._keyed: list[tuple[bytes, Reply]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._srv = _Server(("127.0.0.1", 0), _Handler)
        self._srv.owner = self
        self.port = self._srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def push(self, *replies: Reply) -> V2Server:
        with self._lock:
            self._queue.extend(replies)
        return self

    def push_for(self, text: str, reply: Reply) -> V2Server:
        """Script `reply` for the next request whose body contains `text` (other requests never
        take it: a late request of a cancelled turn cannot steal the next turn's reply)."""
        with self._lock:
            self._keyed.append((text.encode(), reply))
        return self

    def _next(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            for i, (text, reply) in enumerate(self._keyed):
                if text in rec.body:
                    del self._keyed[i]
                    return reply
            return self._queue.popleft() if self._queue else self.default

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def close(self) -> None:
        self._stop.set()  # ends stalls and trickles
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(2)

    def __enter__(self) -> V2Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="serve one long v2 reply on 127.0.0.1 forever")
    ap.add_argument("--long", type=int, default=20000, help="content-delta events per reply")
    ap.add_argument("--chunk-size", type=int, default=0, help="HTTP chunk size (0: one per event)")
    args = ap.parse_args(argv)
    srv = V2Server(default=long_reply(args.long, chunk_size=args.chunk_size or None))
    print("URL", srv.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(HERE.parent))
    raise SystemExit(_main(sys.argv[1:]))
