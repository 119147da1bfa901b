"""nbchat.backends.cohere.Client against a real HTTP server on 127.0.0.1 (tests/v2server.py).

No mocks: every test sends real requests over loopback sockets and the server writes the
bytes of recorded Cohere streams (or scripted faults) back.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

import httpx  # noqa: F401  (imported up front so cancel timings do not include the import)
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2server import (  # noqa: E402
    DONE,
    Reply,
    V2Server,
    byte_offset_after,
    cut_events,
    error_reply,
    events_body,
    fixture_body,
    fixture_json,
    fixture_names,
    json_reply,
    long_body,
    sse,
    text_events,
    text_reply,
)

from nbchat.backends.base import Backend, Cancel  # noqa: E402
from nbchat.backends.cohere import Client  # noqa: E402
from nbchat.errors import APIError, Cancelled, StreamError, ValidationError  # noqa: E402
from nbchat.errors import ConnectionError as NetError  # noqa: E402

MSGS = [{"role": "user", "content": "hi"}]
KEY = "canary-key-7f3a9c1e55"


@pytest.fixture
def srv():
    with V2Server() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    for name in ("CO_API_KEY", "COHERE_API_KEY", "CO_API_URL"):
        monkeypatch.delenv(name, raising=False)


def make(srv: V2Server, **kw) -> Client:
    kw.setdefault("api_key", KEY)
    client = Client(base_url=srv.url, **kw)
    client.backoff = 0.01  # keep retry tests fast (Retry-After is still honoured)
    client._client()  # create the httpx client now: timings below measure I/O only
    return client


def data_lines(body: bytes) -> list[dict]:
    """The fixture's events parsed independently of nbchat's decoder."""
    out = []
    for line in body.decode("utf-8").split("\n"):
        if line.startswith("data:") and line.strip() != "data: [DONE]":
            out.append(json.loads(line[5:]))
    return out


def num_equal(a, b) -> bool:
    """Deep equality where 8 == 8.0 (the SDK reference turns token counts into floats)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(num_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(num_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- streaming the recorded captures ----------------------------------------------------------
FIXTURES = fixture_names()


def test_fixture_count():
    assert len(FIXTURES) >= 30


@pytest.mark.parametrize("name", FIXTURES)
def test_stream_fixture_matches_sdk(srv, name):
    body = fixture_body(name)
    # alternate framing: one HTTP chunk per event (like the API) or odd 7-byte chunks
    chunk = 7 if FIXTURES.index(name) % 2 else None
    srv.push(sse(body, chunk_size=chunk))
    client = make(srv)
    stream = client.chat_stream(model="command-r", messages=MSGS)
    events = list(stream)
    assert events == data_lines(body)  # every event, in the exact wire shape
    sdk_events = fixture_json(name, "sdk-events")
    assert len(events) == len(sdk_events)
    final = fixture_json(name, "final")
    resp = stream.response
    msg = resp["message"]
    assert resp["id"] == final["id"]
    assert resp["finish_reason"] == final["finish_reason"]
    texts = [b["text"] for b in msg.get("content", []) if b["type"] == "text"]
    thinking = [b["thinking"] for b in msg.get("content", []) if b["type"] == "thinking"]
    assert "".join(texts) == final["text"]
    assert "".join(thinking) == final["thinking"]
    assert msg.get("tool_plan", "") == final["tool_plan"]
    want_calls = json.loads(json.dumps(final["tool_calls"]))
    for call in want_calls:  # nbchat sends "{}" for an argument-less call, the SDK keeps ""
        if call["function"]["arguments"].strip() in ("", "null"):
            call["function"]["arguments"] = "{}"
    assert msg.get("tool_calls", []) == want_calls
    assert msg.get("citations", []) == final["citations"]
    assert num_equal(resp.get("usage"), final["usage"])
    assert resp.get("error") == final["error"]
    client.close()


def test_stream_in_single_bytes_keeps_utf8(srv):
    pieces = ["ça", " 数据", " 🙂", " end"]
    body = events_body(text_events(pieces))
    srv.push(sse(body, chunk_size=1))  # every HTTP chunk is one byte: splits inside characters
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    assert len(list(stream)) == 4 + len(pieces)
    assert stream.response["message"]["content"][0]["text"] == "".join(pieces)
    assert stream.response["finish_reason"] == "COMPLETE"


def test_stream_content_length_and_crlf(srv):
    body = events_body(text_events(["a", "b"])).replace(b"\n", b"\r\n")
    srv.push(sse(body, chunked=False))
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    list(stream)
    assert stream.response["message"]["content"][0]["text"] == "ab"


def test_stream_without_done_terminator_is_fine(srv):
    srv.push(sse(events_body(text_events(["x"]), done=False)))
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    list(stream)
    assert stream.response["finish_reason"] == "COMPLETE"


def test_in_stream_error_is_a_normal_end(srv):
    srv.push(sse(fixture_body("lc_stream_error_invalid_tool_1")))
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    events = list(stream)
    assert events[-1]["type"] == "message-end"
    assert stream.response["finish_reason"] == "ERROR"
    assert stream.response["error"]


def test_context_manager_and_close_release(srv):
    srv.push(sse(long_body(200)))
    client = make(srv)
    with client.chat_stream(model="m", messages=MSGS) as stream:
        for i, _ in enumerate(stream):
            if i == 5:
                break
    assert stream.response["message"]["content"][0]["text"]  # partial kept
    srv.push(sse(events_body(text_events(["again"]))))
    again = client.chat_stream(model="m", messages=MSGS)
    list(again)
    assert again.response["message"]["content"][0]["text"] == "again"


# -- non-streaming -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lc_documents_citations", "lc_agent_call01"])
def test_chat_non_stream(srv, name):
    body = fixture_json(name, "response")
    srv.push(json_reply(body))
    client = make(srv)
    resp = client.chat(model="command-r", messages=MSGS, temperature=0.2)
    assert resp == body
    sent = srv.last
    assert sent.path == "/v2/chat" and sent.method == "POST"
    assert sent.json == {
        "model": "command-r",
        "messages": MSGS,
        "temperature": 0.2,
        "stream": False,
    }
    assert sent.headers["accept"] == "application/json"


def test_chat_invalid_json_body(srv):
    srv.push(text_reply(200, "<html>proxy page</html>"))
    with pytest.raises(APIError, match="invalid JSON response"):
        make(srv).chat(model="m", messages=MSGS)


def test_validation_happens_before_sending(srv):
    client = make(srv)
    with pytest.raises(ValidationError) as info:
        client.chat(model="m", messages=MSGS, temperature=5)
    assert info.value.field == "temperature"
    with pytest.raises(ValidationError):
        client.chat_stream(model="m", messages=MSGS, safety_mode="LOUD")
    assert srv.requests == []


# -- headers, key and base URL ------------------------------------------------------------------
def test_headers_sent(srv):
    srv.push(sse(events_body(text_events(["x"]))))
    list(make(srv, client_name="my-app").chat_stream(model="m", messages=MSGS, seed=3))
    h = srv.last.headers
    assert h["authorization"] == f"Bearer {KEY}"
    assert h["x-client-name"] == "my-app"
    assert h["content-type"] == "application/json"
    assert h["accept"] == "text/event-stream"
    assert srv.last.json == {"model": "m", "messages": MSGS, "seed": 3, "stream": True}


def test_no_key_no_authorization(srv):
    srv.push(sse(events_body(text_events(["x"]))))
    client = Client(base_url=srv.url)
    assert not client.has_key
    list(client.chat_stream(model="m", messages=MSGS))
    assert "authorization" not in srv.last.headers
    assert "api_key=none" in repr(client)


@pytest.mark.parametrize("env", ["CO_API_KEY", "COHERE_API_KEY"])
def test_key_and_url_from_env(srv, monkeypatch, env):
    monkeypatch.setenv(env, KEY + env)
    monkeypatch.setenv("CO_API_URL", srv.url)
    srv.push(json_reply(fixture_json("lc_agent_call01", "response")))
    client = Client()
    assert client.base_url == srv.url
    client.chat(model="m", messages=MSGS)
    assert srv.last.headers["authorization"] == f"Bearer {KEY}{env}"


def test_default_base_url():
    assert Client(api_key="").base_url == "https://api.cohere.com"


def test_is_a_backend():
    client = Client(api_key="")
    assert isinstance(client, Backend) and client.name == "cohere"


# -- retries -------------------------------------------------------------------------------------
def test_429_then_200_honours_retry_after(srv):
    srv.push(error_reply(429, "slow down", headers={"Retry-After": "1"}))
    srv.push(sse(events_body(text_events(["ok"]))))
    client = make(srv)
    t0 = time.perf_counter()
    stream = client.chat_stream(model="m", messages=MSGS)
    list(stream)
    waited = time.perf_counter() - t0
    assert stream.response["message"]["content"][0]["text"] == "ok"
    assert len(srv.requests) == 2
    assert 0.95 <= waited < 3.0, waited


def test_retry_after_ms(srv):
    srv.push(error_reply(503, "busy", headers={"retry-after-ms": "300"}))
    srv.push(json_reply(fixture_json("lc_agent_call01", "response")))
    t0 = time.perf_counter()
    make(srv).chat(model="m", messages=MSGS)
    assert 0.28 <= time.perf_counter() - t0 < 2.0
    assert len(srv.requests) == 2


def test_500_retried_up_to_max_then_apierror(srv):
    srv.push(*[error_reply(500, "internal", id=f"e{i}") for i in range(5)])
    with pytest.raises(APIError) as info:
        list(make(srv, max_retries=2).chat_stream(model="m", messages=MSGS))
    assert info.value.status_code == 500 and info.value.id == "e2"
    assert len(srv.requests) == 3


def test_max_retries_zero_and_4xx_not_retried(srv):
    srv.push(error_reply(500), error_reply(400), error_reply(400))
    with pytest.raises(APIError):
        make(srv, max_retries=0).chat(model="m", messages=MSGS)
    with pytest.raises(APIError) as info:
        make(srv, max_retries=3).chat(model="m", messages=MSGS)
    assert info.value.status_code == 400
    assert len(srv.requests) == 2


def test_no_retry_after_first_byte(srv):
    body = long_body(50)
    srv.push(sse(body, drop_after=byte_offset_after(body, 10)))
    srv.push(sse(events_body(text_events(["should not be fetched"]))))
    stream = make(srv, max_retries=3).chat_stream(model="m", messages=MSGS)
    got = []
    with pytest.raises(NetError):
        for event in stream:
            got.append(event)
    assert len(got) == 10
    assert len(srv.requests) == 1


def test_connect_refused_retried_then_connection_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    client = Client(base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=2)
    client.backoff = 0.05
    t0 = time.perf_counter()
    with pytest.raises(NetError) as info:
        client.chat(model="m", messages=MSGS)
    assert info.value.status_code is None
    assert "connect" in str(info.value)
    assert time.perf_counter() - t0 >= 0.05 + 0.1 - 0.05  # two backoff waits happened


# -- error mapping -------------------------------------------------------------------------------
STATUSES = [400, 401, 404, 429, 499, 500, 503]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("stream", [False, True])
def test_error_mapping_cohere_body(srv, status, stream):
    srv.push(error_reply(status, f"problem {status}", id=f"id-{status}"))
    client = make(srv, max_retries=0)
    with pytest.raises(APIError) as info:
        if stream:
            list(client.chat_stream(model="m", messages=MSGS))
        else:
            client.chat(model="m", messages=MSGS)
    err = info.value
    assert type(err) is APIError
    assert err.status_code == status
    assert err.id == f"id-{status}"
    assert err.message == f"problem {status}"
    assert err.body == {"id": f"id-{status}", "message": f"problem {status}"}
    assert str(status) in str(err)


@pytest.mark.parametrize("status", STATUSES)
def test_error_mapping_non_json_body(srv, status):
    srv.push(text_reply(status, f"<html>gateway says {status}</html>"))
    with pytest.raises(APIError) as info:
        make(srv, max_retries=0).chat(model="m", messages=MSGS)
    assert info.value.status_code == status
    assert info.value.id is None
    assert info.value.message == f"<html>gateway says {status}</html>"


def test_wrong_content_type_on_stream(srv):
    srv.push(json_reply({"message": "not a stream"}))
    with pytest.raises(StreamError, match="text/event-stream"):
        list(make(srv).chat_stream(model="m", messages=MSGS))


def test_malformed_sse_is_stream_error(srv):
    srv.push(sse(b'event: content-delta\ndata: {"type": oops}\n\n'))
    with pytest.raises(StreamError) as info:
        list(make(srv).chat_stream(model="m", messages=MSGS))
    line = info.value.line
    assert "oops" in (line.decode() if isinstance(line, bytes) else line)


def test_non_http_garbage(srv):
    srv.push(Reply(raw=b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01garbage"))
    with pytest.raises(NetError):
        make(srv, max_retries=0).chat(model="m", messages=MSGS)


def test_close_before_headers(srv):
    srv.push(Reply(close_before_headers=True))
    with pytest.raises(NetError):
        list(make(srv, max_retries=0).chat_stream(model="m", messages=MSGS))


def test_invalid_base_url():
    with pytest.raises(NetError, match="base URL"):
        Client(base_url="ftp//nowhere", api_key=KEY).chat(model="m", messages=MSGS)


# -- timeouts, drops, truncation -----------------------------------------------------------------
def test_stall_longer_than_read_timeout(srv):
    body = long_body(20)
    srv.push(sse(body, stall_after=byte_offset_after(body, 5), stall=10))
    stream = make(srv, timeout=(2.0, 0.4)).chat_stream(model="m", messages=MSGS)
    got = []
    t0 = time.perf_counter()
    with pytest.raises(NetError, match="stalled"):
        for event in stream:
            got.append(event)
    assert 0.35 <= time.perf_counter() - t0 < 3.0
    assert len(got) == 5
    assert stream.response["message"]["content"][0]["text"] == "Hello world,"  # partial kept


def test_headers_stall_longer_than_read_timeout(srv):
    srv.push(sse(long_body(3), headers_delay=10))
    with pytest.raises(NetError):
        make(srv, timeout=(2.0, 0.3), max_retries=0).chat(model="m", messages=MSGS)


def test_slow_trickle_within_timeout(srv):
    body = events_body(text_events(["slow", " but", " fine"]))
    srv.push(sse(body[:60], chunk_size=1, delay=0.005))  # check framing at byte pace first
    srv.push(sse(body, chunk_size=40, delay=0.02))
    client = make(srv, timeout=(2.0, 1.0))
    with pytest.raises(NetError, match="before message-end"):
        list(client.chat_stream(model="m", messages=MSGS))
    stream = client.chat_stream(model="m", messages=MSGS)
    list(stream)
    assert stream.response["message"]["content"][0]["text"] == "slow but fine"


def test_drop_mid_stream_keeps_partial(srv):
    body = long_body(30)
    srv.push(sse(body, drop_after=byte_offset_after(body, 8) + 5))  # cut inside event 9
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    got = []
    with pytest.raises(NetError, match="dropped") as info:
        for event in stream:
            got.append(event)
    assert info.value.status_code is None
    assert len(got) == 8
    assert stream.response["finish_reason"] is None
    assert stream.response["message"]["content"][0]["text"] == "Hello world, ça va?"


def test_stream_ends_before_message_end(srv):
    body = fixture_body("lc_stream_plain")
    n = len(data_lines(body)) - 1  # everything but message-end
    srv.push(sse(cut_events(body, n) + DONE))
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    got = []
    with pytest.raises(NetError, match="stream ended before message-end"):
        for event in stream:
            got.append(event)
    assert len(got) == n
    assert (
        stream.response["message"]["content"][0]["text"]
        == fixture_json("lc_stream_plain", "final")["text"]
    )


# -- cancel --------------------------------------------------------------------------------------
def _cancel_when(
    stream_cancel, ready: threading.Event, stamp: list[float], delay: float = 0.05
) -> threading.Thread:
    def run() -> None:
        ready.wait(5)
        time.sleep(delay)  # make sure the consumer is blocked in a read by now
        stamp.append(time.perf_counter())
        stream_cancel()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_cancel_mid_stream_from_other_thread(srv):
    body = long_body(100)
    srv.push(sse(body, stall_after=byte_offset_after(body, 6), stall=20))
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    ready, stamp, got = threading.Event(), [], []
    thread = _cancel_when(stream.cancel, ready, stamp)
    with pytest.raises(Cancelled):
        for event in stream:
            got.append(event)
            if len(got) == 6:
                ready.set()
    latency = time.perf_counter() - stamp[0]
    thread.join()
    assert latency < 0.1, f"cancel took {latency * 1000:.1f} ms"
    assert len(got) == 6 and stream.cancelled
    assert stream.response["message"]["content"][0]["text"] == "Hello world, ça"


def test_cancel_during_first_byte_wait(srv):
    srv.push(sse(long_body(3), headers_delay=20))
    stream = make(srv).chat_stream(model="m", messages=MSGS)
    ready, stamp = threading.Event(), []
    ready.set()
    thread = _cancel_when(stream.cancel, ready, stamp)
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        list(stream)
    latency = time.perf_counter() - stamp[0]
    thread.join()
    assert latency < 0.1, f"cancel took {latency * 1000:.1f} ms"
    assert time.perf_counter() - t0 < 2


def test_cancel_during_first_byte_wait_on_reused_connection(srv):
    client = make(srv)
    srv.push(sse(events_body(text_events(["warm"]))), sse(long_body(3), headers_delay=20))
    list(client.chat_stream(model="m", messages=MSGS))
    stream = client.chat_stream(model="m", messages=MSGS)
    ready, stamp = threading.Event(), []
    ready.set()
    thread = _cancel_when(stream.cancel, ready, stamp)
    with pytest.raises(Cancelled):
        list(stream)
    latency = time.perf_counter() - stamp[0]
    thread.join()
    assert latency < 0.1, f"cancel took {latency * 1000:.1f} ms"


def test_cancel_during_connect():
    # A listener whose accept queue is full drops SYNs, so connect() hangs (no server thread).
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
    try:
        client = Client(base_url=f"http://127.0.0.1:{port}", api_key=KEY, timeout=(10.0, 10.0))
        client._client()
        cancel = Cancel()
        ready, stamp = threading.Event(), []
        ready.set()
        t0 = time.perf_counter()
        thread = _cancel_when(cancel.cancel, ready, stamp, delay=0.3)
        with pytest.raises(Cancelled):
            list(client.stream({"model": "m", "messages": MSGS}, cancel))
        latency = time.perf_counter() - stamp[0]
        thread.join()
        assert time.perf_counter() - t0 >= 0.25  # it really was stuck connecting
        assert latency < 0.1, f"cancel took {latency * 1000:.1f} ms"
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def test_cancel_during_retry_wait(srv):
    srv.push(error_reply(429, "later", headers={"Retry-After": "20"}))
    client = make(srv)
    cancel = Cancel()
    ready, stamp = threading.Event(), []
    ready.set()
    thread = _cancel_when(cancel.cancel, ready, stamp, delay=0.2)
    with pytest.raises(Cancelled):
        list(client.stream({"model": "m", "messages": MSGS}, cancel))
    latency = time.perf_counter() - stamp[0]
    thread.join()
    assert len(srv.requests) == 1  # the 429 came, the wait for the retry was cut short
    assert latency < 0.1, f"cancel took {latency * 1000:.1f} ms"


def test_backend_stream_precancelled_sends_nothing(srv):
    cancel = Cancel()
    cancel.cancel("stop")
    with pytest.raises(Cancelled):
        list(make(srv).stream({"model": "m", "messages": MSGS}, cancel))
    assert srv.requests == []


def test_backend_stream_events_and_cancel_then_next_turn(srv):
    body = long_body(50)
    srv.push(sse(body, stall_after=byte_offset_after(body, 4), stall=20))
    srv.push(sse(events_body(text_events(["next"]))))
    client = make(srv)
    cancel = Cancel()
    got = []
    with pytest.raises(Cancelled):
        for event in client.stream({"model": "m", "messages": MSGS, "stream": False}, cancel):
            got.append(event)
            if len(got) == 4:
                threading.Timer(0.05, cancel.cancel).start()
    assert srv.requests[0].json["stream"] is True
    events = list(client.stream({"model": "m", "messages": MSGS}, Cancel()))
    assert events[0]["type"] == "message-start" and events[-1]["type"] == "message-end"


# -- models ----------------------------------------------------------------------------------------
def test_models(srv):
    srv.push(json_reply({"models": [{"name": "command-a-03-2025"}, {"name": "command-r"}]}))
    assert make(srv).models() == ["command-a-03-2025", "command-r"]
    assert srv.last.method == "GET"
    assert srv.last.path.startswith("/v1/models?") and "endpoint=chat" in srv.last.path
    assert srv.last.headers["authorization"] == f"Bearer {KEY}"


def test_models_tolerates_failure(srv):
    srv.push(error_reply(500), text_reply(200, "not json"))
    client = make(srv)
    assert client.models() == []
    assert client.models() == []
    assert Client(base_url="http://127.0.0.1:1", api_key=KEY).models() == []


# -- secrets -------------------------------------------------------------------------------------
def test_key_never_in_repr_or_errors(srv):
    client = make(srv, max_retries=0)
    assert KEY not in repr(client) and KEY not in str(vars(client))
    assert "api_key=set" in repr(client)
    # a server that echoes the key back in its error message
    srv.push(error_reply(401, f"invalid api token {KEY}"))
    srv.push(text_reply(500, f"Authorization: Bearer {KEY}"))
    texts = []
    for _ in range(2):
        try:
            client.chat(model="m", messages=MSGS)
        except APIError as exc:
            texts += [str(exc), repr(exc), exc.message, "".join(traceback.format_exception(exc))]
    refused = Client(base_url="http://127.0.0.1:1", api_key=KEY, max_retries=0)
    try:
        refused.chat(model="m", messages=MSGS)
    except NetError as exc:
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    stream = client.chat_stream(model="m", messages=MSGS)
    texts += [repr(stream), repr(refused)]
    assert len(texts) == 13
    for text in texts:
        assert KEY not in text
