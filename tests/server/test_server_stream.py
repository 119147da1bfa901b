"""`nbchat serve` streaming internals over real sockets: the bounded bridge (backpressure from a
slow client down to the backend), the backlog counter, HTTP errors before the first event, and
Accept negotiation (SSE or newline-delimited JSON)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_server import (  # noqa: E402
    EchoBackend,
    _open_stream,
    _read_until,
    assert_error_body,
    chat_body,
    post,
    run_server,
)

from nbchat.protocol.events import check_order  # noqa: E402
from nbchat.protocol.ndjson import NDJSONDecoder, encode_line  # noqa: E402
from nbchat.protocol.sse import SSEDecoder, decode_all  # noqa: E402
from nbchat.server import create_app, stream_framing  # noqa: E402


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- bounded bridge: a slow reader keeps memory flat --------------------------------------------
def test_slow_reader_keeps_memory_flat_and_gets_everything() -> None:
    # 2,000 events of 40 kB each: 80 MB if the server buffered the generation for a slow client
    echo = EchoBackend(word_size=40_000)
    app = create_app(echo, channel_size=8)
    with run_server(app) as url:
        body = chat_body("LONG", stream=True, max_tokens=2000)
        sock = _open_stream(url, body, rcvbuf=65536)
        try:
            buf = _read_until(sock, b"event: content-delta")
            rss0 = rss_bytes()
            produced, peaks = [], []
            for _ in range(20):  # read ~4 kB every 50 ms: far slower than the backend
                time.sleep(0.05)
                buf += sock.recv(4096)
                produced.append(echo.produced)
                peaks.append(app.backlog.value)
            grown = rss_bytes() - rss0
            # the backend is held back: it produced what fits in the channel and the socket
            # buffers, not the 2,000 words it would have produced unchecked
            assert produced[-1] < 400, produced
            assert produced[-1] - produced[5] < 100, produced  # flat, not climbing
            assert max(peaks) <= 8 + 1  # channel size + the one event waiting to get in
            assert app.backlog.peak <= 8 + 1
            assert grown < 40_000_000, f"RSS grew {grown / 1e6:.1f} MB"
            # then read at full speed: every event arrives, in order, once
            sock.settimeout(30)
            data = bytearray(buf)
            while not data.endswith(b"data: [DONE]\n\n") and not data.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(1 << 20)
                assert chunk
                data += chunk
        finally:
            sock.close()
        head, _, raw = bytes(data).partition(b"\r\n\r\n")
        if b"chunked" in head.lower():
            raw = _dechunk(raw)
        events = decode_all(raw)
        check_order(events)
        deltas = [e for e in events if e["type"] == "content-delta"]
        assert len(deltas) == 2000
        assert events[-1]["delta"]["finish_reason"] == "MAX_TOKENS"
        assert echo.finished.wait(5)
        _wait_idle(app)


def _dechunk(raw: bytes) -> bytes:
    out, i = [], 0
    while True:
        j = raw.index(b"\r\n", i)
        n = int(raw[i:j].split(b";")[0], 16)
        if n == 0:
            return b"".join(out)
        out.append(raw[j + 2 : j + 2 + n])
        i = j + 2 + n + 2


def _wait_idle(app: Any) -> None:
    deadline = time.monotonic() + 10
    while (app.active or app.backlog.value) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.active == 0 and app.backlog.value == 0


def test_client_that_stops_reading_is_cut_off_and_frees_the_backend() -> None:
    echo = EchoBackend(word_size=40_000)
    app = create_app(echo, channel_size=4, write_timeout=0.5)
    with run_server(app) as url:
        sock = _open_stream(url, chat_body("LONG", stream=True), rcvbuf=4096)
        try:
            _read_until(sock, b"content-delta")
            assert echo.finished.wait(15), "the blocked generation was never cancelled"
            assert echo.produced < 10_000
            _wait_idle(app)
        finally:
            sock.close()
        assert post(url, chat_body("still works"))[0] == 200


def test_fifty_concurrent_requests_leave_the_backlog_at_zero() -> None:
    echo = EchoBackend()
    app = create_app(echo, max_streams=64, channel_size=4)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    with run_server(app) as url:

        def one(i: int) -> None:
            words = " ".join(f"w{i}x{k}" for k in range(200))
            status, _, raw = post(url, chat_body(words, stream=True), timeout=60)
            n = sum(1 for e in decode_all(raw) if e["type"] == "content-delta")
            with lock:
                results.append((status, n))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == [(200, 200)] * 50
        _wait_idle(app)
        assert app.backlog.peak > 0  # it did count (and every count was given back)


# -- errors before the first event are HTTP errors ----------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("accept", ["*/*", "application/json"])
def test_error_end_before_content_is_an_http_error(stream: bool, accept: str) -> None:
    with run_server(create_app(EchoBackend())) as url:
        status, headers, raw = post(
            url, chat_body("END_ERROR", stream=stream), headers={"Accept": accept}
        )
    assert status == 500
    assert headers["content-type"] == "application/json"
    assert_error_body(raw, "no memory left")


# -- Accept negotiation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "framing"),
    [
        ("", "sse"),
        ("*/*", "sse"),
        ("text/event-stream", "sse"),
        ("application/json", "ndjson"),
        ("application/json; charset=utf-8", "ndjson"),
        ("Application/JSON", "ndjson"),
        ("application/x-ndjson", "ndjson"),
        ("application/json, text/event-stream", "sse"),
        ("application/json, */*;q=0.1", "sse"),
        ("text/html", "sse"),
    ],
)
def test_stream_framing_rule(accept: str, framing: str) -> None:
    assert stream_framing(accept) == framing


def test_ndjson_stream_has_the_same_events_in_the_same_order() -> None:
    echo = EchoBackend()
    docs = [{"id": "d1", "data": {"text": "brave hearts"}}]
    with run_server(create_app(echo)) as url:
        body = chat_body(stream=True, documents=docs, logprobs=True)
        s1, h1, sse_raw = post(url, body, headers={"Accept": "text/event-stream"})
        s2, h2, nd_raw = post(url, body, headers={"Accept": "application/json"})
    assert (s1, s2) == (200, 200)
    assert h1["content-type"].startswith("text/event-stream")
    assert h2["content-type"] == "application/x-ndjson"
    lines = nd_raw.split(b"\n")
    assert lines[-1] == b"" and all(line.startswith(b"{") for line in lines[:-1])
    assert b"[DONE]" not in nd_raw and b"event:" not in nd_raw
    events = [json.loads(line) for line in lines[:-1]]
    assert events == decode_all(sse_raw)
    check_order(events)
    # nbchat's own decoders read this framing
    assert decode_all(nd_raw) == events
    for size in (1, 7, 100):
        dec = NDJSONDecoder()
        got = [e for i in range(0, len(nd_raw), size) for e in dec.feed(nd_raw[i : i + size])]
        assert got + dec.close() == events


def test_ndjson_error_after_first_byte_is_a_final_message_end() -> None:
    with run_server(create_app(EchoBackend())) as url:
        status, _, raw = post(
            url, chat_body("FAIL_AFTER here", stream=True), headers={"Accept": "application/json"}
        )
    assert status == 200
    events = [json.loads(line) for line in raw.splitlines()]
    assert [e["type"] for e in events[:3]] == ["message-start", "content-start", "content-delta"]
    assert events[-1]["type"] == "message-end"
    assert events[-1]["delta"]["finish_reason"] == "ERROR"
    assert "decode failed" in events[-1]["delta"]["error"]


def test_ndjson_disconnect_cancels_the_generation() -> None:
    echo = EchoBackend(delay=0.02)
    app = create_app(echo)
    with run_server(app) as url:
        sock = _open_stream(url, chat_body("LONG", stream=True), accept="application/json")
        head = _read_until(sock, b'"type":"content-delta"')
        assert b"200 OK" in head and b"application/x-ndjson" in head
        sock.close()
        assert echo.cancelled.wait(5), "the backend never saw the Cancel"
        _wait_idle(app)


def test_ndjson_decoder_rejects_garbage_with_stream_error() -> None:
    from nbchat.errors import StreamError

    for bad in (b"{not json}\n", b"[1, 2]\n", b"\xff\xfe{}\n"):
        with pytest.raises(StreamError):
            NDJSONDecoder().feed(bad)
    dec = NDJSONDecoder()
    assert dec.feed(encode_line({"type": "message-start"})[:-1]) == []
    assert dec.close() == [{"type": "message-start"}]
    assert SSEDecoder().feed(b'{"type":"x"}\n') == [{"type": "x"}]
