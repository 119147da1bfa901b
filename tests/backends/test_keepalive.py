"""The hosted path's connection handling, counted on a real server (tests/v2server.py).

Turns on one client share one kept-alive connection; a Stop may drop it and the next turn
reconnects; a server that closed the idle connection between turns (or closes it just as the
next request arrives) causes no error; non-stream calls and model listing reuse it too. The
same holds for `OpenAIBackend`. And nbchat touches no private attribute of httpx/httpcore/h11.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

import httpx  # noqa: F401  (imported up front, like the other transport tests)
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2server import (  # noqa: E402
    Reply,
    V2Server,
    byte_offset_after,
    events_body,
    json_reply,
    long_body,
    sse,
    text_events,
)

from nbchat.backends.base import Cancel  # noqa: E402
from nbchat.backends.cohere import Client  # noqa: E402
from nbchat.backends.openai import OpenAIBackend  # noqa: E402
from nbchat.errors import Cancelled  # noqa: E402
from nbchat.errors import ConnectionError as NetError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MSGS = [{"role": "user", "content": "hi"}]
KEY = "canary-keepalive-51c0de"


def ok(*pieces: str) -> Reply:
    return sse(events_body(text_events(list(pieces) or ["fine"])))


def turn(client: Client, cancel: Cancel | None = None) -> str:
    events = list(client.stream({"model": "m", "messages": MSGS}, cancel or Cancel()))
    assert events[0]["type"] == "message-start" and events[-1]["type"] == "message-end"
    return "".join(
        e["delta"]["message"]["content"]["text"] for e in events if e["type"] == "content-delta"
    )


def test_three_turns_one_connection():
    with V2Server() as srv:
        client = Client(base_url=srv.url, api_key=KEY)
        srv.push(ok("one"), ok("two"), ok("three"))
        assert [turn(client) for _ in range(3)] == ["one", "two", "three"]
        assert len(srv.requests) == 3
        assert srv.connections == 1


def test_chat_stream_chat_and_models_share_the_connection():
    with V2Server() as srv:
        client = Client(base_url=srv.url, api_key=KEY)
        response = {
            "id": "r1",
            "finish_reason": "COMPLETE",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        }
        srv.push(ok("a"), json_reply(response), json_reply({"models": [{"name": "m1"}]}))
        assert [e["type"] for e in client.chat_stream(model="m", messages=MSGS)][-1] == (
            "message-end"
        )
        assert client.chat(model="m", messages=MSGS)["id"] == "r1"
        assert client.models() == ["m1"]
        srv.push(ok("b"))
        # a consumer that stops reading at message-end still leaves the connection reusable
        for event in client.chat_stream(model="m", messages=MSGS):
            if event["type"] == "message-end":
                break
        srv.push(ok("c"))
        assert turn(client) == "c"
        assert srv.connections == 1


def test_stop_drops_the_connection_and_the_next_turn_reconnects():
    with V2Server() as srv:
        client = Client(base_url=srv.url, api_key=KEY)
        body = long_body(50)
        srv.push(ok("warm"), sse(body, stall_after=byte_offset_after(body, 4), stall=20))
        srv.push(ok("after"), ok("again"))
        assert turn(client) == "warm"
        cancel = Cancel()
        got = []
        with pytest.raises(Cancelled):
            for event in client.stream({"model": "m", "messages": MSGS}, cancel):
                got.append(event)
                if len(got) == 4:
                    threading.Timer(0.05, cancel.cancel).start()
        assert turn(client) == "after"
        assert turn(client) == "again"
        assert srv.connections == 2  # the stopped turn's connection was dropped, once


def test_server_closing_idle_connections_between_turns_is_no_error():
    with V2Server(idle_timeout=0.2) as srv:
        client = Client(base_url=srv.url, api_key=KEY, max_retries=0)
        srv.push(ok("one"), ok("two"), ok("three"))
        assert turn(client) == "one"
        time.sleep(0.5)  # the server closes the idle connection
        assert turn(client) == "two"
        time.sleep(0.5)
        assert turn(client) == "three"
        assert srv.connections == 3 and len(srv.requests) == 3


def test_connection_closed_as_the_request_arrives_is_resent_once():
    # The race the idle check cannot see: the server takes the request on the pooled
    # connection and closes it without an answer. Nothing came back, so it is resent at once
    # on a new connection, without counting as a retry (max_retries=0).
    with V2Server() as srv:
        client = Client(base_url=srv.url, api_key=KEY, max_retries=0)
        srv.push(ok("one"), Reply(close_before_headers=True), ok("two"))
        assert turn(client) == "one"
        assert turn(client) == "two"
        assert len(srv.requests) == 3 and srv.connections == 2
        # on a fresh connection the same failure is an error, as before
        srv.push(Reply(close_before_headers=True))
        with pytest.raises(NetError, match="no valid response"):
            Client(base_url=srv.url, api_key=KEY, max_retries=0).chat(model="m", messages=MSGS)


def test_preconnect_opens_the_connection_the_first_turn_uses():
    with V2Server() as srv:
        client = Client(base_url=srv.url, api_key=KEY)
        client.preconnect()
        deadline = time.monotonic() + 5
        while srv.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert srv.connections == 1 and srv.requests == []  # connected, nothing sent
        srv.push(ok("one"), ok("two"))
        assert turn(client) == "one" and turn(client) == "two"
        assert srv.connections == 1
        # an unreachable host: no error anywhere, the turn reports the failure as usual
        dead = Client(base_url="http://127.0.0.1:1", api_key=KEY, max_retries=0)
        dead.preconnect()
        with pytest.raises(NetError):
            turn(dead)


def openai_ok(text: str) -> Reply:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        # usage, as servers send it for stream_options.include_usage (else the backend would
        # ask the server's tokenize endpoint, a request of its own)
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return sse(body + b"data: [DONE]\n\n")


def test_openai_backend_keeps_the_connection_and_survives_idle_close():
    with V2Server(idle_timeout=0.3) as srv:
        backend = OpenAIBackend(base_url=srv.url, model="m", max_retries=0)
        srv.push(openai_ok("a"), openai_ok("b"), openai_ok("c"))
        request = {"model": "m", "messages": MSGS}
        texts = []
        for i in range(3):
            if i == 2:
                time.sleep(0.6)  # the server closes the idle connection
            events = list(backend.stream(request, Cancel()))
            assert events[-1]["type"] == "message-end"
            texts.append(events[2]["delta"]["message"]["content"]["text"])
        assert texts == ["a", "b", "c"]
        assert srv.connections == 2  # turns 1-2 on one connection, turn 3 on a new one


def test_openai_backend_client_is_created_once_under_concurrency():
    backend = OpenAIBackend(base_url="http://127.0.0.1:9", model="m")
    seen: list[object] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        seen.append(backend._client())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and len({id(c) for c in seen}) == 1
    backend.close()


PRIVATE = re.compile(
    r"\._pool\b|_h11|_network_backend|httpcore\._|httpx\._|h11\._|_httpcore_stream"
)


def test_no_private_attribute_of_httpx_httpcore_or_h11():
    hits = []
    for path in sorted((ROOT / "nbchat").rglob("*.py")):
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if PRIVATE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []
    # the pattern does catch what it must
    for bad in ("pool = http._transport._pool", "from httpcore._backends.sync import SyncStream"):
        assert PRIVATE.search(bad)


# -- the rechunker (pure): what h11 sees is the same response, in fewer chunks ----------------
def _h11_body(wire: bytes, pieces: list[int]) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """Feed `wire` split at `pieces` through a Rechunker into h11; (body, data events, trailers)."""
    import h11

    from nbchat.backends.rechunk import Rechunker

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    rc = Rechunker()
    rc.request(b"POST / HTTP/1.1\r\n")
    body, n_data, trailers = b"", 0, []
    cuts = [0, *sorted(set(pieces)), len(wire)]
    for a, b in zip(cuts, cuts[1:], strict=False):
        out = rc.feed(wire[a:b])
        if out:
            conn.receive_data(out)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Data):
                body += bytes(event.data)
                n_data += 1
            elif isinstance(event, h11.EndOfMessage):
                trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
                assert conn.their_state is h11.DONE
                return body, n_data, trailers
    raise AssertionError("h11 never saw the end of the body")


def _chunked(payloads: list[bytes], trailer: bytes = b"") -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    body = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(p), p) for p in payloads)
    return head + body + b"0\r\n" + trailer + b"\r\n"


def test_rechunker_keeps_the_response_h11_sees():
    import random

    rnd = random.Random(7)
    payloads = [f"évent {i} ".encode() * rnd.randint(1, 5) for i in range(60)]
    expected = b"".join(payloads)
    for trailer in (b"", b"X-Done: yes\r\n"):
        wire = _chunked(payloads, trailer)
        whole, n, got_trailers = _h11_body(wire, [])
        assert whole == expected and n == 1  # one read: one chunk instead of 60
        assert got_trailers == ([(b"x-done", b"yes")] if trailer else [])
        for _ in range(200):  # reads cut anywhere (inside size lines, CRLFs, payloads)
            cuts = [rnd.randrange(1, len(wire)) for _ in range(rnd.randint(1, 30))]
            body, n, _ = _h11_body(wire, cuts)
            assert body == expected and n <= len(cuts) + 1
        # byte by byte
        assert _h11_body(wire, list(range(1, len(wire))))[0] == expected


def test_rechunker_passes_other_bodies_untouched():
    from nbchat.backends.rechunk import Rechunker

    for wire in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot chunked",
    ):
        rc = Rechunker()
        rc.request(b"GET / HTTP/1.1\r\n")
        assert rc.feed(wire) == wire  # h11 judges these bytes itself
    rc = Rechunker()
    rc.request(b"HEAD / HTTP/1.1\r\n")
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert rc.feed(wire) == wire


# -- JSON-lines framing (what nbchat serve sends for Accept: application/json) ------------------
@pytest.mark.parametrize("ctype", ["application/x-ndjson", "application/json"])
def test_json_lines_stream_is_read_like_sse(ctype):
    events = text_events(["Hello", " wörld"])
    lines = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events)
    with V2Server() as srv:
        client = Client(base_url=srv.url, api_key=KEY)
        srv.push(Reply(body=lines, content_type=ctype, chunk_size=7), ok("sse"))
        stream = client.chat_stream(model="m", messages=MSGS)
        assert list(stream) == events
        assert stream.response["message"]["content"][0]["text"] == "Hello wörld"
        assert srv.last.headers["accept"] == "text/event-stream"
        assert turn(client) == "sse" and srv.connections == 1


def test_load_ext_preconnects_the_connection_the_first_chat_uses(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    with V2Server() as srv:
        monkeypatch.setenv("NBCHAT_PRECONNECT", "1")
        monkeypatch.setenv("CO_API_KEY", KEY)
        monkeypatch.setenv("CO_API_URL", srv.url)
        shell = InteractiveShell.instance()
        try:
            shell.run_line_magic("load_ext", "nbchat")
            deadline = time.monotonic() + 10
            while srv.connections == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            assert srv.connections == 1 and srv.requests == []  # connected, nothing sent
            srv.push(ok("pre", "connected"))
            with capture_output():
                result = shell.run_cell("%%chat\nhello")  # NbChat.model: Cohere's default
            assert result.success
            assert len(srv.requests) == 1 and srv.connections == 1  # the turn used it
            assert shell.user_ns["chat"].turns[-1].text == "preconnected"
        finally:
            shell.run_line_magic("unload_ext", "nbchat")
            InteractiveShell.clear_instance()


# -- TLS: keep-alive and cancel over a real TLS socket --------------------------------------------
@pytest.fixture
def tls_files(tmp_path, monkeypatch):
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=x"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts it (httpx honours this)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return str(cert), str(key)


class TLSServer:
    """HTTP/1.1 over TLS, one thread per connection: answers `ok` replies, or stalls after a
    first chunk when a request body contains "stall"."""

    def __init__(self, cert: str, key: str) -> None:
        import socket
        import ssl

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.url = f"https://127.0.0.1:{self.lsock.getsockname()[1]}"
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, raw) -> None:
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += sock.recv(65536)
                body, buf = buf[:length], buf[length:]
                frames = events_body(text_events(["tls", " ok"]))
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                if b"stall" in body:
                    first = frames.split(b"\n\n")[0] + b"\n\n"
                    sock.sendall(b"%x\r\n%b\r\n" % (len(first), first))
                    self.stop.wait(20)
                    return
                sock.sendall(b"%x\r\n%b\r\n0\r\n\r\n" % (len(frames), frames))
        except OSError:
            pass
        finally:
            raw.close()

    def close(self) -> None:
        self.stop.set()
        self.lsock.close()


def test_tls_turns_share_a_connection_and_cancel_is_instant(tls_files):
    srv = TLSServer(*tls_files)
    try:
        client = Client(base_url=srv.url, api_key=KEY)
        assert [turn(client) for _ in range(3)] == ["tls ok"] * 3
        assert srv.connections == 1
        stream = client.chat_stream(model="m", messages=[{"role": "user", "content": "stall"}])
        stamp: list[float] = []
        got = []

        def stop() -> None:
            time.sleep(0.3)  # the consumer is blocked in a TLS read by now
            stamp.append(time.perf_counter())
            stream.cancel()

        thread = threading.Thread(target=stop)
        thread.start()
        with pytest.raises(Cancelled):
            for event in stream:
                got.append(event)
        latency = time.perf_counter() - stamp[0]
        thread.join()
        assert [e["type"] for e in got] == ["message-start"]
        assert latency < 0.1, f"cancel took {latency * 1000:.1f} ms"
        assert turn(client) == "tls ok" and srv.connections == 2  # stopped: a new connection
        client.preconnect()  # a kept-alive connection waits already: nothing to do
        time.sleep(0.3)
        assert srv.connections == 2
        client.close()
        client = Client(base_url=srv.url, api_key=KEY)
        client.preconnect()  # TCP and TLS done ahead; the first turn's connection is that one
        deadline = time.monotonic() + 5
        while srv.connections < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the server's TLS 1.3 session tickets arrive: still reusable
        assert turn(client) == "tls ok" and srv.connections == 3
    finally:
        srv.close()


def test_http_proxy_from_the_environment(monkeypatch):
    # The test server plays the forward proxy: it answers whatever absolute URL it is asked for.
    with V2Server() as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        client = Client(base_url="http://127.0.0.2:1", api_key=KEY)
        proxy.push(ok("via"), ok("proxy"))
        assert turn(client) == "via" and turn(client) == "proxy"
        assert proxy.last.path == "http://127.0.0.2:1/v2/chat"
        assert proxy.connections == 1
        monkeypatch.setenv("NO_PROXY", "127.0.0.2")
        with pytest.raises(NetError, match="cannot connect"):  # bypassed: straight to the host
            turn(Client(base_url="http://127.0.0.2:1", api_key=KEY, max_retries=0))
