"""Faults through the full stack: Conversation + runner + the HTTP Client against the
fault-injecting v2 server (tests/v2server.py) on 127.0.0.1, and the embedded engine.

Every case checks the same four things (`check_after_fault`): the caller got a clear error or a
clean finish; the conversation is consistent (a cut reply is kept on its turn and flagged, never
half-appended, never in `.messages`); the worker thread has ended; and the next turn works and
does not resend the cut reply. test_client.py covers the client on its own; here the faults must
travel through the runner into the conversation.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx  # noqa: F401  (imported up front: cancel timings measure I/O, not imports)
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2server import (  # noqa: E402
    Reply,
    V2Server,
    byte_offset_after,
    cut_events,
    error_reply,
    events_body,
    long_body,
    sse,
    text_events,
    text_reply,
)

from nbchat import runner  # noqa: E402
from nbchat.backends.cohere import Client  # noqa: E402
from nbchat.conversation import Conversation, Turn  # noqa: E402
from nbchat.errors import (  # noqa: E402
    APIError,
    Cancelled,
    NbChatError,
    StreamError,
    ValidationError,
)
from nbchat.errors import ConnectionError as NetError  # noqa: E402

KEY = "canary-faults-9d41e0c2b7"
MODEL = {"model": "command-a-03-2025"}


# -- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def srv() -> Iterator[V2Server]:
    with V2Server() as server:
        yield server


def make_client(url: str, **kw: Any) -> Client:
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    client = Client(base_url=url, **kw)
    client.backoff = 0.01
    client._client()  # build the httpx client now (timings below are I/O only)
    return client


def ok_reply(*pieces: str) -> Reply:
    return sse(events_body(text_events(list(pieces) or ["fine"])))


def turn_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nbchat-turn-")]


def open_fds() -> int:
    """Open file descriptors, less the history store's files (it opens its database, WAL and
    shared-memory files once, when a turn is first recorded, and keeps them open by design)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        n += "history.sqlite3" not in target
    return n


def client_sockets(port: int) -> int:
    """Open sockets of this process connected *to* `port` (the client side only: the test
    server lives in this process too, and its stalled handlers hold their own ends)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port == port and cols[9] in inodes:
                count += 1
    return count


def complete_messages(conv: Conversation) -> list[dict[str, Any]]:
    """What `.messages` must be: the system prompt plus complete turns only."""
    out: list[dict[str, Any]] = []
    if conv.system:
        out.append({"role": "system", "content": conv.system})
    for t in conv.turns:
        if t.status == "complete":
            out += t.input + t.output
    return out


def run_turn(
    conv: Conversation, client: Client, prompt: str = "hi", **params: Any
) -> runner.TurnHandle:
    """A background turn through the runner, waited for (bounded)."""
    handle = runner.start_turn(conv, client, prompt, {**MODEL, **params})
    handle.wait(20)
    assert handle.done, "turn did not finish within 20 s"
    return handle


def check_after_fault(
    conv: Conversation,
    handle: runner.TurnHandle,
    srv: V2Server | None,
    client: Client,
    *,
    status: str,
    partial: str | None = None,
    error_has: tuple[str, ...] = (),
) -> Turn:
    """The four invariants every fault must leave behind (see the module docstring)."""
    turn = handle.turn
    assert turn.status == status, (turn.status, turn.error)
    assert turn in conv.turns
    if status == "complete":
        assert turn.error is None and turn.finish_reason
    else:
        # a clear error: non-empty, redacted, the failing turn excluded from .messages
        assert turn.error, "a failed/cancelled turn must say why"
        assert KEY not in turn.error
        for needle in error_has:
            assert needle.lower() in turn.error.lower(), (needle, turn.error)
        user_contents = [m.get("content") for m in conv.messages if m["role"] == "user"]
        assert turn.input[0]["content"] not in user_contents
    if partial is not None:
        assert turn.text == partial  # the cut reply is kept on the turn, exactly
        assert [m["role"] for m in turn.output] == ["assistant"]  # appended once, whole
    assert conv.messages == complete_messages(conv)
    # the worker thread has ended
    thread = handle._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive(), "the worker thread is still running"
    assert not conv.running
    # the next turn works, and does not carry the cut one
    if srv is not None:
        srv.push(ok_reply("next", " works"))
        n = len(srv.requests)
        nxt = run_turn(conv, client, "next question")
        assert nxt.turn.status == "complete" and nxt.turn.text == "next works"
        sent = srv.requests[n].json["messages"]
        assert sent[-1] == {"role": "user", "content": "next question"}
        if status != "complete":
            assert {"role": "user", "content": turn.input[0]["content"]} not in sent
        assert conv.messages == complete_messages(conv)
    return turn


def drain(srv: V2Server) -> None:
    with srv._lock:
        srv._queue.clear()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- connection-level faults -------------------------------------------------------------------
def test_connection_refused(srv: V2Server) -> None:
    bad = make_client(f"http://127.0.0.1:{free_port()}")
    conv = Conversation()
    handle = run_turn(conv, bad)
    assert isinstance(handle.turn.exception, NetError)
    assert handle.turn.exception.status_code is None
    check_after_fault(conv, handle, None, bad, status="error", error_has=("connect",))
    # the same conversation continues on a working endpoint
    good = make_client(srv.url)
    srv.push(ok_reply("back"))
    assert run_turn(conv, good).turn.text == "back"
    assert conv.messages == complete_messages(conv) and len(conv.messages) == 2


@pytest.mark.parametrize(
    "url", ["htp://127.0.0.1:1", "http://", "127.0.0.1:8080", "http://[::1", "http://a b.c/"]
)
def test_malformed_base_url(url: str) -> None:
    client = make_client(url)
    conv = Conversation()
    handle = run_turn(conv, client)
    assert isinstance(handle.turn.exception, NetError), handle.turn.exception
    check_after_fault(conv, handle, None, client, status="error")
    # inline (wait=True) raises the same typed error after recording the turn
    with pytest.raises(NetError):
        conv.send("again", backend=client, **MODEL)
    assert len(conv.turns) == 2 and conv.messages == []


# faults where nothing usable arrives: (reply, expected exception type, words in the error)
NO_ANSWER = {
    "non_http_service": (
        Reply(raw=b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n"),
        NetError,
        ("no valid response",),
    ),
    "close_before_headers": (Reply(close_before_headers=True), NetError, ()),
    "wrong_content_type": (
        text_reply(200, "<html><body>captive portal</body></html>"),
        StreamError,
        ("content-type", "text/html"),
    ),
    "json_instead_of_sse": (
        Reply(body=b'{"id": "x"}', content_type="application/json", chunked=False),
        StreamError,
        ("content-type",),
    ),
    "malformed_sse_line": (
        sse(
            b'event: message-start\ndata: {"type":"message-start","id":"a"}\n\nthis is not sse\n\n'
        ),
        StreamError,
        (),
    ),
    "invalid_json_in_data": (
        sse(b"event: message-start\ndata: {not json}\n\n"),
        StreamError,
        (),
    ),
    "empty_200": (sse(b""), NetError, ("message-end",)),
}


@pytest.mark.parametrize("case", sorted(NO_ANSWER))
def test_no_usable_answer(srv: V2Server, case: str) -> None:
    reply, exc_type, words = NO_ANSWER[case]
    srv.push(reply)
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    assert isinstance(handle.turn.exception, exc_type), repr(handle.turn.exception)
    assert len(srv.requests) == 1  # nothing resent on its own
    check_after_fault(conv, handle, srv, client, status="error", error_has=words)


# -- mid-stream faults: the partial reply is kept and flagged -------------------------------------
BODY = long_body(40)  # "Hello", " world", ",", " ça", " va", "?", " 数据", ...
PARTIAL_8 = "Hello world, ça va?"  # the first 8 events: start, content-start, 6 deltas


def test_drop_mid_stream_keeps_partial(srv: V2Server) -> None:
    srv.push(sse(BODY, drop_after=byte_offset_after(BODY, 8)))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    assert isinstance(handle.turn.exception, NetError)
    check_after_fault(
        conv, handle, srv, client, status="error", partial=PARTIAL_8, error_has=("dropped",)
    )


def test_drop_inside_an_event(srv: V2Server) -> None:
    srv.push(sse(BODY, drop_after=byte_offset_after(BODY, 8) + 17))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    assert isinstance(handle.turn.exception, NetError)
    check_after_fault(conv, handle, srv, client, status="error", partial=PARTIAL_8)


def test_stream_ends_without_message_end(srv: V2Server) -> None:
    srv.push(sse(cut_events(BODY, 8)))  # a clean HTTP end, but the v2 grammar is cut
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    check_after_fault(
        conv, handle, srv, client, status="error", partial=PARTIAL_8, error_has=("message-end",)
    )


def test_in_stream_error_message_end(srv: V2Server) -> None:
    events = text_events(["half", " a"], finish_reason="ERROR")
    events[-1]["delta"]["error"] = "internal model failure"
    srv.push(sse(events_body(events)))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    turn = check_after_fault(
        conv, handle, srv, client, status="error", partial="half a", error_has=("model failure",)
    )
    assert turn.finish_reason == "ERROR"


def test_invalid_json_mid_stream_keeps_partial(srv: V2Server) -> None:
    srv.push(sse(cut_events(BODY, 8) + b"event: content-delta\ndata: {broken\n\n"))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    assert isinstance(handle.turn.exception, StreamError)
    check_after_fault(conv, handle, srv, client, status="error", partial=PARTIAL_8)


def test_unknown_event_type_is_ignored(srv: V2Server) -> None:
    events = text_events(["a", "b"])
    events.insert(3, {"type": "debug-heartbeat", "delta": {"whatever": [1, 2]}})
    events.insert(1, {"type": "x-future-event"})
    srv.push(sse(events_body(events) + b": a comment line\n\n"))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    check_after_fault(conv, handle, srv, client, status="complete", partial="ab")


# -- HTTP error statuses -----------------------------------------------------------------------
STATUSES = [400, 401, 404, 429, 499, 500, 503]


@pytest.mark.parametrize("json_body", [True, False], ids=["cohere_body", "non_json_body"])
@pytest.mark.parametrize("status", STATUSES)
def test_http_error_status(srv: V2Server, status: int, json_body: bool) -> None:
    if json_body:
        srv.push(error_reply(status, f"problem number {status}", id=f"id-{status}"))
    else:
        srv.push(text_reply(status, f"<html>gateway says {status}</html>"))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    exc = handle.turn.exception
    assert isinstance(exc, APIError) and not isinstance(exc, NetError), repr(exc)
    assert exc.status_code == status
    if json_body:
        assert exc.id == f"id-{status}" and exc.message == f"problem number {status}"
    words = (str(status), f"problem number {status}" if json_body else "gateway says")
    check_after_fault(conv, handle, srv, client, status="error", error_has=words)
    # inline send raises the same typed error
    srv.push(error_reply(status, "again"))
    with pytest.raises(APIError) as info:
        conv.send("inline", backend=client, **MODEL)
    assert info.value.status_code == status


def test_429_then_success_is_retried_honouring_retry_after(srv: V2Server) -> None:
    srv.push(error_reply(429, "slow down", headers={"Retry-After": "0.4"}), ok_reply("ok"))
    client = make_client(srv.url, max_retries=2)
    conv = Conversation()
    t0 = time.perf_counter()
    handle = run_turn(conv, client)
    assert time.perf_counter() - t0 >= 0.4  # the server's wait, not our 10 ms backoff
    assert len(srv.requests) == 2 and srv.requests[0].body == srv.requests[1].body
    check_after_fault(conv, handle, srv, client, status="complete", partial="ok")
    assert len(conv.turns) == 2  # the retry did not create a turn


# -- time: stalls and trickles -----------------------------------------------------------------
def test_stall_longer_than_read_timeout(srv: V2Server) -> None:
    srv.push(sse(BODY, stall_after=byte_offset_after(BODY, 8), stall=10))
    client = make_client(srv.url, timeout=(2.0, 0.5))
    conv = Conversation()
    t0 = time.perf_counter()
    handle = run_turn(conv, client)
    took = time.perf_counter() - t0
    assert 0.45 < took < 5, took
    check_after_fault(
        conv, handle, srv, client, status="error", partial=PARTIAL_8, error_has=("stalled",)
    )


def test_stall_before_headers_longer_than_read_timeout(srv: V2Server) -> None:
    srv.push(sse(BODY, headers_delay=10))
    client = make_client(srv.url, timeout=(2.0, 0.5))
    conv = Conversation()
    handle = run_turn(conv, client)
    assert isinstance(handle.turn.exception, NetError)
    check_after_fault(conv, handle, srv, client, status="error")


class TrickleServer:
    """Answers one request with an SSE body written one byte every `gap` s (for the first
    `slow` bytes), then the rest at once: a slow but live stream. Raw sockets, own thread."""

    def __init__(self, body: bytes, gap: float = 0.1, slow: int = 25) -> None:
        self.body, self.gap, self.slow = body, gap, slow
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body)
            )
            for i in range(self.slow):
                conn.sendall(self.body[i : i + 1])
                time.sleep(self.gap)
            conn.sendall(self.body[self.slow :])

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_slow_trickle_one_byte_per_100ms_finishes() -> None:
    body = events_body(text_events(["slow", " but", " alive"]))
    trickle = TrickleServer(body, gap=0.1, slow=25)
    try:
        # the read timeout is per read: 0.35 s > each 0.1 s gap, < the 2.5 s trickle
        client = make_client(trickle.url, timeout=(2.0, 0.35))
        conv = Conversation()
        t0 = time.perf_counter()
        handle = run_turn(conv, client)
        assert time.perf_counter() - t0 >= 2.4
        check_after_fault(conv, handle, None, client, status="complete", partial="slow but alive")
    finally:
        trickle.close()


# -- size --------------------------------------------------------------------------------------
def big_body(n_events: int, piece_len: int) -> tuple[bytes, str]:
    """A long reply built by string templating (json.dumps per event is too slow here)."""
    words = ["Hello", " world", " ça", " va", " 数据", "\\n"]
    head = events_body(text_events([]), done=False)
    frames = head[: head.index(b"event: content-end")]
    parts, text = [frames], []
    for i in range(n_events):
        w = words[i % len(words)]
        piece = (w * (piece_len // len(w) + 1))[:piece_len]
        text.append(piece.replace("\\n", "\n"))
        parts.append(
            b'event: content-delta\ndata: {"type":"content-delta","index":0,'
            b'"delta":{"message":{"content":{"text":"%s"}}}}\n\n' % piece.encode()
        )
    parts.append(head[head.index(b"event: content-end") :] + b"data: [DONE]\n\n")
    return b"".join(parts), "".join(text)


def test_ten_megabyte_reply(srv: V2Server) -> None:
    body, expected = big_body(10_000, 1000)
    assert len(body) > 10_000_000
    srv.push(sse(body))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    turn = check_after_fault(conv, handle, srv, client, status="complete")
    assert len(turn.text) == len(expected) and turn.text == expected
    assert conv.messages[1]["content"][0]["text"] == expected  # recorded once, whole


def test_huge_single_event(srv: V2Server) -> None:
    piece = "x" * 4_000_000 + "é" * 500_000  # one 5 MB content-delta
    srv.push(sse(events_body(text_events([piece]))))
    client = make_client(srv.url)
    conv = Conversation()
    handle = run_turn(conv, client)
    turn = check_after_fault(conv, handle, srv, client, status="complete")
    assert turn.text == piece


# -- cancel --------------------------------------------------------------------------------------
def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _stop_and_measure(handle: runner.TurnHandle) -> float:
    t0 = time.perf_counter()
    handle.cancel()
    return time.perf_counter() - t0


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port where connect() hangs: a listener whose accept queue is full drops SYNs."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    for s in fillers:
        s.close()
    lsock.close()


def test_stop_during_connect(blackhole: str, srv: V2Server) -> None:
    client = make_client(blackhole, timeout=(10.0, 10.0))
    conv = Conversation()
    handle = runner.start_turn(conv, client, "hi", MODEL)
    time.sleep(0.3)  # stuck in connect() by now
    assert not handle.done
    latency = _stop_and_measure(handle)
    assert latency < 0.2, latency
    handle._thread.join(2)
    assert not handle._thread.is_alive()  # the socket shutdown woke connect() itself
    check_after_fault(conv, handle, None, client, status="cancelled")
    good = make_client(srv.url)
    srv.push(ok_reply("ok"))
    assert run_turn(conv, good).turn.complete


def test_stop_during_first_byte_wait(srv: V2Server) -> None:
    srv.push(sse(BODY, headers_delay=10))
    client = make_client(srv.url)
    conv = Conversation()
    handle = runner.start_turn(conv, client, "hi", MODEL)
    wait_for(lambda: len(srv.requests) == 1)
    time.sleep(0.1)
    assert _stop_and_measure(handle) < 0.2
    turn = check_after_fault(conv, handle, srv, client, status="cancelled")
    assert turn.output == [] and turn.text == ""


def test_stop_mid_stream_keeps_partial(srv: V2Server) -> None:
    srv.push(sse(BODY, stall_after=byte_offset_after(BODY, 8), stall=10))
    client = make_client(srv.url)
    conv = Conversation()
    seen: list[dict[str, Any]] = []

    class Listener:
        def on_event(self, event: dict[str, Any]) -> None:
            seen.append(event)

    handle = runner.start_turn(conv, client, "hi", MODEL, listener=Listener())
    wait_for(lambda: len(seen) == 8)
    time.sleep(0.05)
    assert _stop_and_measure(handle) < 0.2
    turn = check_after_fault(conv, handle, srv, client, status="cancelled", partial=PARTIAL_8)
    assert turn.cancelled and turn.finish_reason is None


def test_kernel_interrupt_during_blocking_send(srv: V2Server) -> None:
    """Ctrl-C (SIGINT to the main thread) while `send(wait=True)` blocks on the socket."""
    srv.push(sse(BODY, stall_after=byte_offset_after(BODY, 8), stall=10))
    client = make_client(srv.url)
    conv = Conversation()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        conv.send("hi", backend=client, **MODEL)
    assert time.perf_counter() - t0 < 3
    timer.join()
    turn = conv.turns[-1]
    assert turn.status == "cancelled" and turn.text == PARTIAL_8
    assert conv.messages == []
    srv.push(ok_reply("after"))
    assert conv.send("again", backend=client, **MODEL).text == "after"
    assert conv.messages == complete_messages(conv)


def test_kernel_interrupt_during_wait_on_background_turn(srv: V2Server) -> None:
    srv.push(sse(BODY, stall_after=byte_offset_after(BODY, 8), stall=10))
    client = make_client(srv.url)
    conv = Conversation()
    handle = runner.start_turn(conv, client, "hi", MODEL)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        conv.wait()
    timer.join()
    check_after_fault(conv, handle, srv, client, status="cancelled", partial=PARTIAL_8)


def test_twenty_cancel_restart_cycles_leave_no_threads_or_sockets(srv: V2Server) -> None:
    client = make_client(srv.url)
    conv = Conversation()
    srv.push(ok_reply("warm"))  # one full turn first: pools, imports, lazy state exist
    run_turn(conv, client)
    base_threads = {t.ident for t in threading.enumerate()}
    base_fds = open_fds()
    base_socks = client_sockets(srv.port)
    stages = ["first_byte", "mid_stream", "precancel", "mid_stream_fast"]
    for i in range(20):
        stage = stages[i % len(stages)]
        if stage == "first_byte":
            srv.push(sse(BODY, headers_delay=10))
        elif stage == "mid_stream":
            srv.push(sse(BODY, stall_after=byte_offset_after(BODY, 8), stall=10))
        else:
            srv.push(sse(long_body(3000)))
        handle = runner.start_turn(conv, client, f"cycle {i}", MODEL)
        if stage == "first_byte":
            wait_for(lambda n=len(srv.requests): n >= 1 and len(srv.requests) >= n)
            time.sleep(0.05)
        elif stage == "mid_stream":
            wait_for(lambda h=handle: len(h.turn.text) > 0 or h.done)
        elif stage == "mid_stream_fast":
            time.sleep(0.01)
        handle.cancel()
        handle._thread.join(5)
        assert not handle._thread.is_alive()
        assert handle.turn.status in ("cancelled", "complete")
        drain(srv)  # a reply a pre-cancelled turn never asked for must not answer the next one
        # and a normal turn right after
        # keyed to its own prompt: a cancelled turn's request arriving late cannot take it
        srv.push_for(f'"after {i}"', ok_reply(f"answer {i}"))
        assert run_turn(conv, client, f"after {i}").turn.text == f"answer {i}"
    assert conv.messages == complete_messages(conv)
    done = [t for t in conv.turns if t.status == "complete"]
    assert len(done) >= 21  # every restart turn completed (and precancels may have too)
    time.sleep(0.2)  # server handler threads of dropped connections finish
    stray = [
        t
        for t in threading.enumerate()
        if t.ident not in base_threads and not t.name.startswith("Thread-")  # server handlers
    ]
    assert stray == [] and turn_threads() == []
    socks = client_sockets(srv.port)
    print(
        f"20 cancel/restart cycles: client sockets {base_socks} -> {socks}, "
        f"process fds {base_fds} -> {open_fds()} (incl. stalled server ends)"
    )
    assert socks <= max(base_socks, 1), (base_socks, socks)  # at most one pooled connection
    srv.close()  # the server's stalled handlers let go of their ends too
    time.sleep(0.1)
    assert open_fds() <= base_fds, (base_fds, open_fds())


# -- embedded engine ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_backend() -> Any:
    from nbchat.backends.local import LocalBackend

    backend = LocalBackend()
    list(
        backend.stream(
            {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 1,
            }
        )
    )
    return backend


@pytest.mark.engine
def test_engine_cancel_during_prompt_processing(local_backend: Any) -> None:
    facts = " ".join(f"Fact {i}: penguins number {i} like fish." for i in range(220))
    conv = Conversation()
    started = threading.Event()

    class Listener:
        def on_event(self, event: dict[str, Any]) -> None:
            if event["type"] == "message-start":
                started.set()  # sent before the prompt is evaluated

    handle = runner.start_turn(
        conv,
        local_backend,
        "Summarize the facts.",
        {"model": "smollm2-135m", "documents": [facts], "max_tokens": 4},
        listener=Listener(),
    )
    assert started.wait(30)
    time.sleep(0.2)  # in the middle of a multi-second prefill
    t0 = time.perf_counter()
    handle.cancel()
    assert time.perf_counter() - t0 < 0.2
    handle._thread.join(5)
    assert not handle._thread.is_alive()
    assert handle.turn.status == "cancelled" and conv.messages == []
    # the engine is free at once: the next turn starts (its message-start is sent when the
    # engine picks the job up) long before the cancelled prefill could have finished
    first: list[float] = []

    class Timer:
        def on_event(self, event: dict[str, Any]) -> None:
            if not first:
                first.append(time.perf_counter())

    nxt = runner.start_turn(
        conv, local_backend, "Say hi.", {"model": "smollm2-135m", "max_tokens": 2}, listener=Timer()
    )
    nxt.wait(60)
    freed = first[0] - t0
    print(f"engine: next turn started {freed * 1000:.0f} ms after a prefill cancel")
    assert nxt.turn.complete and freed < 2.0
    assert conv.messages == complete_messages(conv) and len(conv.messages) == 2


@pytest.mark.engine
def test_engine_request_larger_than_context_window(local_backend: Any) -> None:
    conv = Conversation()
    huge = "word " * 6000
    with pytest.raises(ValidationError) as info:
        conv.send(huge, backend=local_backend, model="smollm2-135m", max_tokens=1)
    assert info.value.field == "messages" and "context" in str(info.value)
    turn = conv.turns[-1]
    assert turn.status == "error" and "context" in turn.error and turn.output == []
    handle = runner.start_turn(
        conv, local_backend, "x", {"model": "smollm2-135m", "max_tokens": 10**6}
    )
    handle.wait(30)
    assert handle.turn.status == "error" and "max_tokens" in handle.turn.error
    handle._thread.join(5)
    assert not handle._thread.is_alive() and conv.messages == []
    nxt = conv.send("Say hi.", backend=local_backend, model="smollm2-135m", max_tokens=2)
    assert nxt.complete and len(conv.messages) == 2


_TWO_ENGINES = textwrap.dedent(
    """
    import json, os, sys, time
    from nbchat.backends.local import LocalBackend
    from nbchat.conversation import Conversation
    backend = LocalBackend(n_threads=1)
    conv = Conversation()
    for i in range(2):
        t = conv.send(f"Count to {i + 3}.", backend=backend, model="smollm2-135m", max_tokens=6, seed=i)
        assert t.complete, t.error
    print(json.dumps({"pid": os.getpid(), "turns": len(conv.turns),
                      "messages": len(conv.messages), "text": conv.text}))
    """
)


@pytest.mark.engine
def test_two_processes_each_with_their_own_engine() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_ENGINES],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len({r["pid"] for r in results}) == 2
    for r in results:
        assert r["turns"] == 2 and r["messages"] == 4 and r["text"].strip()


# -- the error types are the documented ones -----------------------------------------------------
def test_every_fault_exception_is_an_nbchat_error(srv: V2Server) -> None:
    """Whatever broke, the recorded exception is one of the documented types."""
    client = make_client(srv.url)
    conv = Conversation()
    replies = [r for r, _, _ in NO_ANSWER.values()] + [
        sse(BODY, drop_after=byte_offset_after(BODY, 5)),
        error_reply(500, "x"),
        text_reply(502, "bad gateway"),
    ]
    for reply in replies:
        srv.push(reply)
        handle = run_turn(conv, client)
        exc = handle.turn.exception
        assert isinstance(exc, NbChatError) and not isinstance(exc, Cancelled), repr(exc)
    assert conv.messages == []


# -- nbchat serve in front of a faulty upstream: clean errors, no stack traces, stays up ----------
def test_serve_proxying_a_faulty_upstream(srv: V2Server) -> None:
    import http.client

    from test_bad_input import run_server

    from nbchat.server import create_app

    upstream = make_client(srv.url)
    faults = [
        Reply(raw=b"garbage\r\n\r\n"),
        Reply(close_before_headers=True),
        sse(BODY, drop_after=byte_offset_after(BODY, 8)),
        sse(b"event: message-start\ndata: {not json}\n\n"),
        text_reply(502, "<html>bad gateway</html>"),
        error_reply(429, "slow down"),
    ]
    with run_server(create_app(upstream)) as url:
        host, port = url.removeprefix("http://").split(":")
        for stream in (True, False):
            srv.push(*faults)
            for _ in faults:
                conn = http.client.HTTPConnection(host, int(port), timeout=15)
                body = {
                    "model": "m",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": stream,
                }
                conn.request("POST", "/v2/chat", json.dumps(body))
                resp = conn.getresponse()
                raw = resp.read().decode("utf-8", "replace")
                conn.close()
                assert "Traceback" not in raw and 'File "' not in raw, raw[:300]
                if resp.status == 200:  # the error came after the first byte: in-stream
                    assert '"finish_reason":"ERROR"' in raw.replace(" ", ""), raw[-300:]
                else:
                    err = json.loads(raw)
                    assert set(err) == {"id", "message"} and err["message"], raw
        # and it still serves a good request
        srv.push(ok_reply("still", " up"))
        conn = http.client.HTTPConnection(host, int(port), timeout=15)
        conn.request(
            "POST",
            "/v2/chat",
            json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
        resp = conn.getresponse()
        assert (
            resp.status == 200
            and json.loads(resp.read())["message"]["content"][0]["text"] == "still up"
        )
        conn.close()
