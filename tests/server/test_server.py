"""`nbchat serve` over real sockets: uvicorn on 127.0.0.1 port 0 in a thread.

Most tests use `EchoBackend`, a small but real Backend (it emits StreamBuilder events: the
prompt echoed word by word, citations, tool calls, JSON, logprobs, errors on request), so the
wire behaviour is tested without the model. The @engine tests drive the real embedded engine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nbchat.backends.base import Cancel
from nbchat.errors import EngineError
from nbchat.protocol.events import StreamBuilder, usage_dict
from nbchat.protocol.request import message_text, normalize_documents, validate_request
from nbchat.protocol.sse import DONE, decode_all, encode_event
from nbchat.server import create_app

FIXED_ID = "00000000-0000-4000-8000-000000000000"


class EchoBackend:
    """Echoes the last user message word by word, deterministically.

    Prompt keywords: FAIL_BEFORE (raise before any event), FAIL_AFTER (raise after the first
    word), END_ERROR (message-start, then an ERROR message-end), CRASH (a plain RuntimeError),
    LONG (10,000 words). `produced` counts the words yielded so far. `delay` sleeps per word, checking
    the Cancel like a real engine would; `cancelled` is set when a cancel was observed.
    """

    name = "echo"

    def __init__(self, delay: float = 0.0, first_delay: float = 0.0, word_size: int = 0) -> None:
        self.delay = delay
        self.first_delay = first_delay
        self.word_size = word_size
        self.requests: list[dict[str, Any]] = []
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.running = 0
        self.produced = 0

    def models(self) -> list[str]:
        return ["echo-1", "echo-2"]

    def stream(self, request: dict[str, Any], cancel: Cancel | None = None) -> Iterator[dict]:
        self.requests.append(request)
        self.running += 1
        try:
            # Cancel is falsy until set (`__bool__`): test for None, not truthiness
            yield from self._stream(request, cancel if cancel is not None else Cancel())
        finally:
            self.running -= 1
            self.finished.set()

    def _stream(self, request: dict[str, Any], cancel: Cancel) -> Iterator[dict]:
        prompt = message_text(request["messages"][-1])
        if "FAIL_BEFORE" in prompt:
            raise EngineError("the engine could not start")
        if "CRASH" in prompt:
            raise RuntimeError("secret internal detail")
        if self.first_delay:
            cancel.wait(self.first_delay)
        sb = StreamBuilder(id=FIXED_ID)
        yield sb.start()
        if "END_ERROR" in prompt:
            yield from sb.end("ERROR", None, error="no memory left", error_type="ENGINE_ERROR")
            return
        words = prompt.split()
        if prompt.startswith("LONG"):
            words = [f"w{i}" for i in range(10_000)]
        n_in = sum(len(message_text(m).split()) for m in request["messages"])
        tools = request.get("tools")
        if tools and request.get("tool_choice") != "NONE":
            fn = tools[0]["function"]
            yield sb.tool_plan(f"I will call {fn['name']}.")
            yield sb.tool_call_start(f"{fn['name']}_0", fn["name"])
            yield sb.tool_call_delta(json.dumps({"query": prompt}))
            yield sb.tool_call_end()
            yield from sb.end("TOOL_CALL", usage_dict(n_in, 5))
            return
        if (request.get("response_format") or {}).get("type") == "json_object":
            yield from sb.text(json.dumps({"echo": prompt}))
            yield from sb.end("COMPLETE", usage_dict(n_in, 3))
            return
        finish = "COMPLETE"
        stops = request.get("stop_sequences") or []
        max_tokens = request.get("max_tokens")
        out: list[str] = []
        for i, word in enumerate(words):
            if cancel.is_set():
                self.cancelled.set()
                return
            if self.delay:
                if cancel.wait(self.delay):
                    self.cancelled.set()
                    return
            if word in stops:
                finish = "STOP_SEQUENCE"
                break
            if max_tokens is not None and i >= max_tokens:
                finish = "MAX_TOKENS"
                break
            if self.word_size:
                word = word * (self.word_size // max(1, len(word)))
            piece = word if i == 0 else " " + word
            lp = None
            if request.get("logprobs"):
                lp = {"token_ids": [i], "text": piece, "logprobs": [-0.5]}
            self.produced += 1
            yield from sb.text(piece, lp)
            out.append(piece)
            if i == 0 and "FAIL_AFTER" in prompt:
                raise EngineError("decode failed")
        text = "".join(out)
        docs = normalize_documents(request.get("documents"))
        mode = (request.get("citation_options") or {}).get("mode", "ACCURATE")
        if docs and mode != "OFF":
            for doc in docs:
                first = next((w for w in text.split() if w in json.dumps(doc["data"])), None)
                if first:
                    start = text.index(first)
                    yield from sb.citation(
                        {
                            "start": start,
                            "end": start + len(first),
                            "text": first,
                            "sources": [
                                {
                                    "type": "document",
                                    "id": doc["id"],
                                    "document": {"id": doc["id"], **doc["data"]},
                                }
                            ],
                            "type": "TEXT_CONTENT",
                        }
                    )
        yield from sb.end(finish, usage_dict(n_in, len(out)))


@contextlib.contextmanager
def run_server(app: Any) -> Iterator[str]:
    """uvicorn on 127.0.0.1, port 0, in a thread (real sockets)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def post(
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 15,
):
    """POST with http.client; returns (status, headers dict, body bytes)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    data = raw if raw is not None else json.dumps(body).encode()
    conn.request("POST", "/v2/chat", data, {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def get(url: str, path: str, headers: dict[str, str] | None = None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def chat_body(prompt: str = "hello brave new world", **params: Any) -> dict[str, Any]:
    return {"model": "echo-1", "messages": [{"role": "user", "content": prompt}], **params}


def assert_error_body(body: bytes, *needles: str) -> dict[str, Any]:
    obj = json.loads(body)
    assert set(obj) == {"id", "message"}
    assert re.fullmatch(r"[0-9a-f-]{36}", obj["id"])
    assert "Traceback" not in obj["message"] and 'File "' not in obj["message"]
    for needle in needles:
        assert needle in obj["message"]
    return obj


@pytest.fixture
def echo() -> EchoBackend:
    return EchoBackend()


@pytest.fixture
def url(echo: EchoBackend) -> Iterator[str]:
    with run_server(create_app(echo)) as u:
        yield u


# -- framing and responses ---------------------------------------------------------------------


def test_stream_is_byte_exact(url: str, echo: EchoBackend) -> None:
    body = chat_body(stream=True, documents=[{"id": "d1", "data": {"text": "brave hearts"}}])
    status, headers, raw = post(url, body)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    # the same backend in-process gives the events; the wire must be exactly their framing
    events = list(EchoBackend().stream(validate_request(body)))
    assert raw == b"".join(encode_event(e) for e in events) + DONE
    assert raw.startswith(
        b'event: message-start\ndata: {"id":"' + FIXED_ID.encode() + b'","type":"message-start"'
    )
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    frames = raw[: -len(DONE)].split(b"\n\n")[:-1]
    assert len(frames) == len(events) >= 8
    for frame, event in zip(frames, events, strict=True):
        name, data = frame.split(b"\n")
        assert name == b"event: " + event["type"].encode()
        assert data.startswith(b"data: {") and b'": ' not in data and b', "' not in data
    types = [e["type"] for e in decode_all(raw)]
    assert types[0] == "message-start" and types[-1] == "message-end"
    assert "citation-start" in types


def test_non_stream_json(url: str) -> None:
    status, headers, raw = post(url, chat_body(stream=False))
    assert status == 200 and headers["content-type"] == "application/json"
    resp = json.loads(raw)
    assert resp["id"] == FIXED_ID
    assert resp["finish_reason"] == "COMPLETE"
    assert resp["message"]["role"] == "assistant"
    assert resp["message"]["content"] == [{"type": "text", "text": "hello brave new world"}]
    assert resp["usage"]["tokens"] == {"input_tokens": 4, "output_tokens": 4}


def test_parameters_reach_the_backend(url: str, echo: EchoBackend) -> None:
    status, _, raw = post(url, chat_body("a b STOP c", stop_sequences=["STOP"], max_tokens=9))
    assert status == 200
    resp = json.loads(raw)
    assert resp["finish_reason"] == "STOP_SEQUENCE"
    assert resp["message"]["content"][0]["text"] == "a b"
    assert echo.requests[-1]["max_tokens"] == 9
    status, _, raw = post(url, chat_body("a b c d", max_tokens=2))
    assert json.loads(raw)["finish_reason"] == "MAX_TOKENS"


def test_models_listing(url: str) -> None:
    for path in ("/v2/models", "/v1/models"):
        status, raw = get(url, path)
        assert status == 200
        assert json.loads(raw) == {
            "models": [
                {"name": "echo-1", "endpoints": ["chat"]},
                {"name": "echo-2", "endpoints": ["chat"]},
            ]
        }


# -- errors before the first byte -----------------------------------------------------------


@pytest.mark.parametrize(
    "params, field",
    [
        ({"temperature": 2}, "temperature"),
        ({"p": 1.5}, "p"),
        ({"k": 501}, "k"),
        ({"safety_mode": "LOUD"}, "safety_mode"),
        ({"stop_sequences": ["a", "b", "c", "d", "e", "f"]}, "stop_sequences"),
        ({"tool_choice": "REQUIRED"}, "tool_choice"),
        ({"max_tokens": "many"}, "max_tokens"),
    ],
)
def test_validation_error_is_400_naming_the_field(
    url: str, echo: EchoBackend, params: dict, field: str
) -> None:
    for stream in (False, True):
        status, headers, raw = post(url, chat_body(stream=stream, **params))
        assert status == 400, raw
        assert headers["content-type"] == "application/json"
        assert_error_body(raw, field)
    assert echo.requests == []  # nothing reached the backend


def test_missing_messages_and_bad_json(url: str) -> None:
    status, _, raw = post(url, {"model": "echo-1"})
    assert status == 400 and "messages" in json.loads(raw)["message"]
    status, _, raw = post(url, None, raw=b'{"model": "echo-1", ')
    assert status == 400
    assert_error_body(raw, "invalid json")
    status, _, raw = post(url, None, raw=b"[1, 2]")
    assert status == 400
    assert_error_body(raw, "JSON object")


def test_unknown_field_is_422_like_cohere(url: str) -> None:
    status, _, raw = post(url, chat_body(temprature=0.5))
    assert status == 422
    assert_error_body(raw, "temprature")


def test_unknown_model_is_404(url: str, echo: EchoBackend) -> None:
    body = chat_body()
    body["model"] = "command-z"
    status, _, raw = post(url, body)
    assert status == 404
    assert_error_body(raw, "command-z", "echo-1")
    assert echo.requests == []


def test_engine_error_before_first_byte(url: str) -> None:
    for stream in (False, True):
        status, headers, raw = post(url, chat_body("FAIL_BEFORE please", stream=stream))
        assert status == 500 and headers["content-type"] == "application/json"
        assert_error_body(raw, "could not start")


def test_unexpected_exception_has_no_stack_trace(url: str) -> None:
    for stream in (False, True):
        status, _, raw = post(url, chat_body("CRASH now", stream=stream))
        assert status == 500
        obj = assert_error_body(raw)
        assert obj["message"] == "internal server error"
        assert b"secret internal detail" not in raw and b"RuntimeError" not in raw


def test_error_after_first_byte_is_message_end_error(url: str) -> None:
    status, headers, raw = post(url, chat_body("one FAIL_AFTER three", stream=True))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert raw.endswith(DONE)
    events = decode_all(raw)
    assert [e["type"] for e in events] == [
        "message-start",
        "content-start",
        "content-delta",
        "message-end",
    ]
    assert events[-1]["delta"]["finish_reason"] == "ERROR"
    assert events[-1]["delta"]["usage"] == {}
    assert "decode failed" in events[-1]["delta"]["error"]
    assert events[-1]["delta"]["error_type"] == "ENGINE_ERROR"
    # non-stream: a failure is an HTTP error, never a half answer
    status, _, raw = post(url, chat_body("one FAIL_AFTER three"))
    assert status == 500
    assert_error_body(raw, "decode failed")


def test_wrong_method_and_path_are_json_errors(url: str) -> None:
    status, raw = get(url, "/v2/chat")
    assert status == 405
    assert_error_body(raw)
    status, raw = get(url, "/v2/nothing")
    assert status == 404
    assert_error_body(raw)


# -- hardening ---------------------------------------------------------------------------------


def test_bearer_token() -> None:
    echo = EchoBackend()
    with run_server(create_app(echo, token="s3cret-token")) as url:
        status, headers, raw = post(url, chat_body())
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert_error_body(raw, "no api key")
        status, _, raw = post(url, chat_body(), {"Authorization": "Bearer wrong-token"})
        assert status == 401
        assert_error_body(raw, "invalid api token")
        assert b"s3cret" not in raw
        status, _, raw = post(url, chat_body(), {"Authorization": "Basic s3cret-token"})
        assert status == 401
        assert get(url, "/v2/models")[0] == 401
        assert echo.requests == []
        status, _, raw = post(url, chat_body(), {"Authorization": "bearer s3cret-token"})
        assert status == 200, raw
        status, _, _ = post(url, chat_body(stream=True), {"Authorization": "Bearer s3cret-token"})
        assert status == 200
        assert get(url, "/v2/models", {"Authorization": "Bearer s3cret-token"})[0] == 200


def test_body_limit_413() -> None:
    echo = EchoBackend()
    with run_server(create_app(echo, max_body=2000)) as url:
        status, _, raw = post(url, chat_body("x " * 2000))
        assert status == 413
        assert_error_body(raw, "too large")
        # chunked upload (no Content-Length) is counted as it arrives
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        payload = json.dumps(chat_body("y " * 3000)).encode()
        chunks = (payload[i : i + 500] for i in range(0, len(payload), 500))
        conn.request(
            "POST", "/v2/chat", chunks, {"Content-Type": "application/json"}, encode_chunked=True
        )
        resp = conn.getresponse()
        assert resp.status == 413
        assert_error_body(resp.read(), "too large")
        conn.close()
        assert echo.requests == []
        assert post(url, chat_body("small"))[0] == 200


def _open_stream(
    url: str, body: dict[str, Any], rcvbuf: int | None = None, accept: str = "*/*"
) -> socket.socket:
    """Send a streaming request on a raw socket and return it unread."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST /v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Accept: %s\r\nContent-Length: %d\r\n\r\n%s" % (accept.encode(), len(data), data)
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while marker not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {buf[-300:]!r}"
        buf += chunk
    return buf


def test_disconnect_cancels_the_generation() -> None:
    echo = EchoBackend(delay=0.02)
    app = create_app(echo)
    with run_server(app) as url:
        sock = _open_stream(url, chat_body("LONG", stream=True))
        head = _read_until(sock, b"event: content-delta")
        assert b"200 OK" in head and b"text/event-stream" in head
        started = time.monotonic()
        sock.close()
        assert echo.cancelled.wait(3), "the backend never saw the Cancel"
        assert echo.finished.wait(3)
        assert time.monotonic() - started < 2
        deadline = time.monotonic() + 3
        while app.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.active == 0 and echo.running == 0  # slot and engine freed
        assert post(url, chat_body("still works"))[0] == 200


def test_non_stream_disconnect_cancels_too() -> None:
    echo = EchoBackend(delay=0.02)
    with run_server(create_app(echo)) as url:
        sock = _open_stream(url, chat_body("LONG"))
        time.sleep(0.3)
        sock.close()
        assert echo.cancelled.wait(3)


def test_slow_client_is_cut_off() -> None:
    # a client that never reads: its generation is cancelled instead of buffering forever
    echo = EchoBackend(word_size=4000)
    app = create_app(echo, channel_size=8, write_timeout=1.0)
    with run_server(app) as url:
        sock = _open_stream(url, chat_body("LONG", stream=True), rcvbuf=4096)
        try:
            assert echo.finished.wait(15)
            assert len(echo.requests) == 1
            deadline = time.monotonic() + 5
            while app.active and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            sock.close()
        assert app.active == 0


def test_max_streams_503_not_a_hang() -> None:
    echo = EchoBackend(delay=0.05)
    app = create_app(echo, max_streams=2)
    with run_server(app) as url:
        socks = [_open_stream(url, chat_body("LONG", stream=True)) for _ in range(2)]
        try:
            for s in socks:
                _read_until(s, b"content-delta")
            t0 = time.monotonic()
            status, headers, raw = post(url, chat_body(stream=True))
            assert status == 503
            assert time.monotonic() - t0 < 1.0
            assert headers["retry-after"] == "1"
            assert_error_body(raw, "busy")
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 5
        while app.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.active == 0
        assert post(url, chat_body(stream=True))[0] == 200


def test_event_loop_stays_responsive() -> None:
    # the backend blocks its thread for a while before the first event; other requests
    # (another chat, the model list) must be answered meanwhile
    echo = EchoBackend(first_delay=1.5)
    with run_server(create_app(echo)) as url:
        sock = _open_stream(url, chat_body("slow start", stream=True))
        try:
            time.sleep(0.1)
            t0 = time.monotonic()
            assert get(url, "/v2/models")[0] == 200
            assert time.monotonic() - t0 < 0.5
            _read_until(sock, b"data: [DONE]")
        finally:
            sock.close()


def test_concurrent_streams_are_independent(url: str) -> None:
    results: list[tuple[int, bytes]] = [None] * 4  # type: ignore[list-item]

    def run(i: int) -> None:
        status, _, raw = post(url, chat_body(f"stream number {i}", stream=True))
        results[i] = (status, raw)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for i, (status, raw) in enumerate(results):
        assert status == 200
        text = "".join(
            e["delta"]["message"]["content"]["text"]
            for e in decode_all(raw)
            if e["type"] == "content-delta"
        )
        assert text == f"stream number {i}"


# -- the official cohere SDK ---------------------------------------------------------------------

cohere = pytest.importorskip("cohere")

DOCS = [
    {"id": "hearts", "data": {"title": "On courage", "text": "brave hearts never quit"}},
    {"data": {"text": "a new world every morning"}},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]
ALL_PARAMS: dict[str, Any] = dict(
    temperature=0.2,
    p=0.5,
    k=40,
    max_tokens=50,
    seed=7,
    stop_sequences=["QUIT"],
    frequency_penalty=0.1,
    presence_penalty=0.2,
    safety_mode="STRICT",
    logprobs=True,
)


def sdk(url: str, token: str = "x") -> Any:
    return cohere.ClientV2(api_key=token, base_url=url, max_retries=0)


def test_sdk_chat_every_parameter(url: str, echo: EchoBackend) -> None:
    res = sdk(url).chat(
        model="echo-1",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello brave new world QUIT now"},
        ],
        **ALL_PARAMS,
    )
    assert res.id == FIXED_ID
    assert res.finish_reason == "STOP_SEQUENCE"
    assert res.message.content[0].text == "hello brave new world"
    assert res.usage.tokens.output_tokens == 4
    assert [lp.token_ids for lp in res.logprobs] == [[0], [1], [2], [3]]
    sent = echo.requests[-1]
    for key, value in ALL_PARAMS.items():
        assert sent[key] == value, key


def test_sdk_chat_stream_every_parameter(url: str, echo: EchoBackend) -> None:
    events = list(
        sdk(url).chat_stream(
            model="echo-1",
            messages=[{"role": "user", "content": "hello brave new world"}],
            **ALL_PARAMS,
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message-start" and types[-1] == "message-end"
    assert events[0].id == FIXED_ID
    deltas = [e for e in events if e.type == "content-delta"]
    assert "".join(e.delta.message.content.text for e in deltas) == "hello brave new world"
    assert deltas[0].logprobs.token_ids == [0]
    assert events[-1].delta.finish_reason == "COMPLETE"
    assert events[-1].delta.usage.tokens.input_tokens == 4
    assert echo.requests[-1]["stream"] is True
    for key, value in ALL_PARAMS.items():
        assert echo.requests[-1][key] == value, key


@pytest.mark.parametrize("mode", ["fast", "ACCURATE"])
def test_sdk_documents_and_citations(url: str, echo: EchoBackend, mode: str) -> None:
    messages = [{"role": "user", "content": "hello brave new world"}]
    co = sdk(url)
    res = co.chat(
        model="echo-1", messages=messages, documents=DOCS, citation_options={"mode": mode}
    )
    assert echo.requests[-1]["citation_options"]["mode"] == mode.upper()
    cits = res.message.citations
    assert [c.text for c in cits] == ["brave", "new"]
    assert (cits[0].start, cits[0].end) == (6, 11)
    assert cits[0].sources[0].type == "document"
    assert cits[0].sources[0].id == "hearts"
    assert cits[0].sources[0].document["title"] == "On courage"
    assert cits[1].sources[0].id == "doc:1"
    streamed = [
        e.delta.message.citations
        for e in co.chat_stream(
            model="echo-1", messages=messages, documents=DOCS, citation_options={"mode": mode}
        )
        if e.type == "citation-start"
    ]
    assert [c.text for c in streamed] == ["brave", "new"]
    # plain-string documents are accepted too
    res = co.chat(model="echo-1", messages=messages, documents=["the brave one"])
    assert res.message.citations[0].sources[0].id == "doc:0"


def test_sdk_tools(url: str, echo: EchoBackend) -> None:
    co = sdk(url)
    messages: list[Any] = [{"role": "user", "content": "weather in Paris"}]
    res = co.chat(model="echo-1", messages=messages, tools=TOOLS, strict_tools=True)
    assert res.finish_reason == "TOOL_CALL"
    assert res.message.tool_plan == "I will call search."
    call = res.message.tool_calls[0]
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "weather in Paris"}
    assert echo.requests[-1]["strict_tools"] is True
    stream = list(co.chat_stream(model="echo-1", messages=messages, tools=TOOLS))
    types = [e.type for e in stream]
    assert "tool-plan-delta" in types and "tool-call-start" in types and "tool-call-end" in types
    assert stream[types.index("tool-call-start")].delta.message.tool_calls.function.name == "search"
    # the tool result goes back; NONE forbids another call
    messages += [
        res.message,
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": [{"type": "document", "document": {"data": json.dumps({"temp": 21})}}],
        },
    ]
    res2 = co.chat(model="echo-1", messages=messages, tools=TOOLS, tool_choice="NONE")
    assert res2.finish_reason == "COMPLETE"
    assert echo.requests[-1]["messages"][-1]["role"] == "tool"


def test_sdk_response_format(url: str, echo: EchoBackend) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    res = sdk(url).chat(
        model="echo-1",
        messages=[{"role": "user", "content": "make json"}],
        response_format={"type": "json_object", "json_schema": schema},
    )
    assert json.loads(res.message.content[0].text) == {"echo": "make json"}
    assert echo.requests[-1]["response_format"]["json_schema"] == schema


def test_sdk_typed_errors() -> None:
    with run_server(create_app(EchoBackend(), token="tok-123", max_streams=0)) as url:
        with pytest.raises(cohere.errors.UnauthorizedError) as info:
            sdk(url, token="nope").chat(model="echo-1", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 401 and info.value.body["message"] == "invalid api token"
        with pytest.raises(cohere.errors.BadRequestError) as info:
            sdk(url, "tok-123").chat(
                model="echo-1", messages=[{"role": "user", "content": "x"}], temperature=3
            )
        assert "temperature" in info.value.body["message"]
        with pytest.raises(cohere.errors.NotFoundError):
            sdk(url, "tok-123").chat(model="nope", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(cohere.errors.ServiceUnavailableError):
            sdk(url, "tok-123").chat(model="echo-1", messages=[{"role": "user", "content": "x"}])


# -- nbchat's own client -----------------------------------------------------------------------


def test_nbchat_client_against_the_server() -> None:
    from nbchat.backends.cohere import Client
    from nbchat.errors import APIError

    echo = EchoBackend()
    with run_server(create_app(echo, token="tok-456")) as url:
        client = Client(api_key="tok-456", base_url=url, max_retries=0)
        res = client.chat(
            model="echo-1", messages=[{"role": "user", "content": "hi there"}], documents=DOCS
        )
        assert res["message"]["content"][0]["text"] == "hi there"
        stream = client.chat_stream(model="echo-1", messages=[{"role": "user", "content": "a b c"}])
        events = list(stream)
        assert events[0]["type"] == "message-start" and events[-1]["type"] == "message-end"
        assert stream.response["message"]["content"][0]["text"] == "a b c"
        # the backend protocol, as a runner would use it
        events = list(client.stream(validate_request(chat_body("x y"))))
        assert events[-1]["delta"]["finish_reason"] == "COMPLETE"
        with pytest.raises(APIError) as info:
            Client(api_key="bad-key", base_url=url, max_retries=0).chat(
                model="echo-1", messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.status_code == 401


def test_nbchat_client_cancel_reaches_the_server_backend() -> None:
    from nbchat.backends.cohere import Client

    echo = EchoBackend(delay=0.02)
    with run_server(create_app(echo)) as url:
        client = Client(api_key="x", base_url=url, max_retries=0)
        stream = client.chat_stream(model="echo-1", messages=[{"role": "user", "content": "LONG"}])
        for n, _event in enumerate(stream, 1):
            if n == 5:
                stream.cancel()
                break
        assert echo.cancelled.wait(3)


# -- the real embedded engine behind the server ------------------------------------------------

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    from nbchat.backends.local import LocalBackend

    with run_server(create_app(LocalBackend())) as u:
        yield u


def _text(res: Any) -> str:
    return "".join(c.text for c in (res.message.content or []) if c.type == "text")


@pytest.mark.engine
def test_engine_sdk_chat_and_stream_every_parameter(engine_url: str) -> None:
    from nbchat.protocol.events import check_order

    co = sdk(engine_url)
    params = dict(ALL_PARAMS, max_tokens=8, stop_sequences=["\n\n"])
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    res = co.chat(model=MODEL, messages=messages, **params)
    assert res.finish_reason in ("COMPLETE", "MAX_TOKENS", "STOP_SEQUENCE")
    assert 0 < res.usage.tokens.output_tokens <= 8 and res.usage.tokens.input_tokens > 0
    assert res.logprobs and all(lp.token_ids for lp in res.logprobs)
    events = list(co.chat_stream(model=MODEL, messages=messages, **params))
    check_order([e.dict(exclude_none=True) for e in events])
    deltas = [e for e in events if e.type == "content-delta"]
    assert deltas and all(e.logprobs is not None for e in deltas)
    # same seed and parameters through HTTP: the same reply
    again = co.chat(model=MODEL, messages=messages, **params)
    assert _text(again) == _text(res)


@pytest.mark.engine
def test_engine_sdk_max_tokens_and_stop(engine_url: str) -> None:
    co = sdk(engine_url)
    msgs = [{"role": "user", "content": "Count from 1 to 50, separated by commas."}]
    res = co.chat(model=MODEL, messages=msgs, max_tokens=5, temperature=0)
    assert res.finish_reason == "MAX_TOKENS" and res.usage.tokens.output_tokens == 5
    # a stop sequence taken from the model's own free output (which differs across CPUs)
    free = _text(co.chat(model=MODEL, messages=msgs, max_tokens=30, temperature=0))
    words = free.split()
    assert len(words) >= 4, free
    stop = words[3]
    res = co.chat(model=MODEL, messages=msgs, max_tokens=30, temperature=0, stop_sequences=[stop])
    assert res.finish_reason == "STOP_SEQUENCE" and stop not in _text(res)
    assert free.startswith(_text(res))


@pytest.mark.engine
@pytest.mark.parametrize("mode", ["FAST", "ACCURATE", "OFF"])
def test_engine_sdk_documents(engine_url: str, mode: str) -> None:
    co = sdk(engine_url)
    docs = [{"id": "paris", "data": {"text": "Paris is the capital of France."}}]
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    res = co.chat(
        model=MODEL,
        messages=msgs,
        documents=docs,
        citation_options={"mode": mode},
        max_tokens=24,
        temperature=0,
    )
    text = _text(res)
    for c in res.message.citations or []:
        assert text[c.start : c.end] == c.text
        assert c.sources[0].type == "document" and c.sources[0].id == "paris"
    if mode == "OFF":
        assert not res.message.citations
    events = list(
        co.chat_stream(
            model=MODEL,
            messages=msgs,
            documents=docs,
            citation_options={"mode": mode},
            max_tokens=24,
            temperature=0,
        )
    )
    streamed = [e.delta.message.citations for e in events if e.type == "citation-start"]
    assert [(c.start, c.end) for c in streamed] == [
        (c.start, c.end) for c in res.message.citations or []
    ]


@pytest.mark.engine
def test_engine_sdk_tools_required(engine_url: str) -> None:
    co = sdk(engine_url)
    msgs = [{"role": "user", "content": "Search the web for cheap flights to Rome."}]
    # a bounded query: unbounded, the tiny model can ramble inside the string past max_tokens
    tools = json.loads(json.dumps(TOOLS))
    tools[0]["function"]["parameters"]["properties"]["query"]["maxLength"] = 20
    res = co.chat(
        model=MODEL,
        messages=msgs,
        tools=tools,
        tool_choice="REQUIRED",
        strict_tools=True,
        max_tokens=200,  # the plan comes first and counts too
        temperature=0,
    )
    assert res.finish_reason == "TOOL_CALL"
    call = res.message.tool_calls[0]
    assert call.function.name == "search"
    assert isinstance(json.loads(call.function.arguments)["query"], str)
    events = list(
        co.chat_stream(
            model=MODEL,
            messages=msgs,
            tools=tools,
            tool_choice="REQUIRED",
            strict_tools=True,
            max_tokens=200,
        )
    )
    types = [e.type for e in events]
    assert "tool-call-start" in types and "tool-call-end" in types
    assert events[-1].delta.finish_reason == "TOOL_CALL"


@pytest.mark.engine
def test_engine_sdk_response_format(engine_url: str) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    res = sdk(engine_url).chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Give a city and its country as JSON."}],
        response_format={"type": "json_object", "json_schema": schema},
        max_tokens=60,
        temperature=0,
    )
    obj = json.loads(_text(res))
    assert isinstance(obj["city"], str) and isinstance(obj["country"], str)


@pytest.mark.engine
def test_engine_disconnect_frees_the_engine(engine_url: str) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "max_tokens": 3000,
        "stream": True,
    }
    sock = _open_stream(engine_url, body)
    _read_until(sock, b"event: content-delta", timeout=60)
    sock.close()
    # one scheduler thread: if the abandoned generation kept running, this would wait for it
    t0 = time.monotonic()
    status, _, raw = post(engine_url, {**body, "max_tokens": 3, "stream": False}, timeout=90)
    assert status == 200, raw
    # generous bound for a loaded shared machine: the abandoned 3000 tokens would take minutes
    # there (about 0.4 s for this request when idle)
    assert time.monotonic() - t0 < 60


@pytest.mark.engine
def test_engine_nbchat_client_matches_in_process(engine_url: str) -> None:
    from nbchat.backends.base import collect
    from nbchat.backends.cohere import Client
    from nbchat.backends.local import LocalBackend

    request = validate_request(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Name three fruits."}],
            "max_tokens": 12,
            "seed": 11,
            "temperature": 0.7,
        }
    )
    over_http = collect(Client(api_key="x", base_url=engine_url, max_retries=0).stream(request))
    in_process = collect(LocalBackend().stream(request))
    assert over_http["message"] == in_process["message"]
    assert over_http["usage"] == in_process["usage"]


def test_v2_backend_without_a_model_uses_what_the_server_serves(
    url: str, echo: EchoBackend
) -> None:
    """`--backend v2` pointed at nbchat serve with no model: ask GET /v1/models, not Cohere's name."""
    from nbchat.backends import get_backend, resolve_model
    from nbchat.conversation import Conversation

    client = get_backend("v2", base_url=url, api_key="k")
    assert client.name == "v2"
    assert resolve_model(client) == "echo-1"
    conv = Conversation()
    turn = conv.send("hello world", backend=client, max_tokens=5)
    assert turn.status == "complete", turn.error
    assert turn.params["model"] == "echo-1"
