"""Hostile input against `nbchat serve` over real sockets: no raw body ever reaches a 5xx, every
refusal is Cohere's ``{id, message}`` decided before any model work, and slow or abandoned
connections never starve a normal request."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_server import EchoBackend, _open_stream, _read_until, chat_body, run_server  # noqa: E402

from nbchat.server import create_app  # noqa: E402

MAX_BODY = 200_000


class Target:
    def __init__(self, url: str, echo: EchoBackend) -> None:
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.echo = echo
        self.conn: http.client.HTTPConnection | None = None

    def post(self, raw: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):  # one keep-alive connection; reopened when the server closed it
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
            try:
                self.conn.request("POST", "/v2/chat", raw, headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    echo = EchoBackend()
    with run_server(create_app(echo, max_body=MAX_BODY)) as url:
        yield Target(url, echo)


def check(target: Target, raw: bytes, headers: dict[str, str] | None = None) -> int:
    before = len(target.echo.requests)
    status, body = target.post(raw, {"Content-Type": "application/json", **(headers or {})})
    assert status < 500, (status, body[:300], raw[:200])
    if status >= 400:
        obj = json.loads(body)
        assert set(obj) == {"id", "message"} and obj["message"], obj
        assert "Traceback" not in obj["message"]
        assert len(target.echo.requests) == before, "a refused body reached the backend"
    else:
        assert status == 200
    return status


VALID = json.dumps(chat_body("hello there", max_tokens=3)).encode()
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: json.dumps writes NaN / Infinity
    | st.text(st.characters(blacklist_categories=()), max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=20,
)
_KEYS = ["model", "messages", "stream", "temperature", "p", "k", "max_tokens", "seed",
         "stop_sequences", "tools", "tool_choice", "documents", "response_format",
         "citation_options", "safety_mode", "priority", "logprobs", "strict_tools", "thinking",
         "frequency_penalty", "presence_penalty"]  # fmt: skip
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "", "x"]) | _json},
    optional={"content": _json, "tool_calls": _json, "tool_call_id": _json, "tool_plan": _json},
)
_body = st.fixed_dictionaries(
    {"model": st.sampled_from(["echo-1", "", "nope"]) | _json, "messages": st.lists(_message)},
    optional={k: _json for k in _KEYS[2:]},
)


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def _mutated(draw: Any) -> bytes:
    """The valid body with bytes flipped, cut, inserted or duplicated."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 20))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


_nesting = st.builds(
    lambda n, kind: {"[": b"[" * n + b"]" * n, "{": b'{"a":' * n + b"1" + b"}" * n}[kind],
    st.integers(1, 60_000),
    st.sampled_from(["[", "{"]),
)
_wrapped_nesting = st.builds(
    lambda n: (
        b'{"model":"echo-1","messages":[{"role":"user","content":' + b"[" * n + b"]" * n + b"}]}"
    ),
    st.integers(1, 60_000),
)
_raw_bodies = st.one_of(
    st.binary(max_size=300),
    _mutated(),
    _body.map(_encode),
    _json.map(_encode),
    _nesting,
    _wrapped_nesting,
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=_raw_bodies)
def test_fuzz_raw_body_never_5xx(target: Target, raw: bytes) -> None:
    check(target, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\xfd",
        b'{"model": "echo-1", "messages": [{"role": "user", "content": "\xff"}]}',
        b"[" * 200_000,
        b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
        b'{"model": "echo-1", "messages": [], "temperature": 1e999999}',
        b'{"model": "echo-1", "messages": [{"role": "user", "content": "x"}], "seed": '
        + b"9" * 5000
        + b"}",
        b'{"model": "echo-1", "messages": [{"role": "user", "content": "x"}], "max_tokens": NaN}',
        _encode({"model": "echo-1", "messages": [{"role": "user", "content": "x" * 250_000}]}),
        _encode({"model": "echo-1", "messages": [{"role": "user", "content": 1}] * 5000}),
        _encode({f"k{i}": i for i in range(10_000)}),
        _encode({"model": "echo-1", "messages": [{"role": "user", "content": "x"}], "x" * 50: 1}),
        b"x" * (MAX_BODY + 1),
    ],
    ids=lambda raw: f"{len(raw)}B",
)
def test_hostile_bodies_are_4xx(target: Target, raw: bytes) -> None:
    assert 400 <= check(target, raw) < 500


def test_big_but_valid_bodies_are_served(target: Target) -> None:
    many = {"model": "echo-1", "messages": [{"role": "user", "content": "x"}] * 5000}
    assert check(target, _encode(many)) == 200
    big = {
        "model": "echo-1",
        "messages": [{"role": "user", "content": "x " * 90_000}],
        "max_tokens": 5,
    }
    assert check(target, _encode(big)) == 200


def test_wrong_content_type_and_chunked_body(target: Target) -> None:
    assert check(target, VALID, {"Content-Type": "text/plain"}) == 200
    assert check(target, b"not json", {"Content-Type": "application/x-www-form-urlencoded"}) == 400


# -- slow and abandoned connections ---------------------------------------------------------------
def test_slow_and_abandoned_connections_do_not_starve_a_normal_request() -> None:
    echo = EchoBackend(delay=0.01)
    app = create_app(echo, max_streams=4, body_timeout=1.0)
    with run_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        stalled: list[socket.socket] = []
        try:
            for i in range(60):
                s = socket.create_connection((host, int(port)))
                if i % 3 == 1:  # half a request line
                    s.sendall(b"POST /v2/ch")
                elif i % 3 == 2:  # headers, then only part of the body
                    s.sendall(
                        b"POST /v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 1000\r\n\r\n{"model": '
                    )
                stalled.append(s)
            for _ in range(8):  # streams abandoned mid-generation (the client just goes away)
                s = _open_stream(url, chat_body("LONG", stream=True))
                _read_until(s, b"content-delta")
                s.close()
            # a normal request is served while all of that is going on
            for stream in (False, True):
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", "/v2/chat", json.dumps(chat_body("hi there", stream=stream)))
                resp = conn.getresponse()
                assert resp.status == 200, resp.read()
                assert b"there" in resp.read()
                conn.close()
            # a body that never completes is refused after the body deadline (408), slot-free
            late = stalled[2]
            late.settimeout(10)
            answer = late.recv(4096)
            while b"}" not in answer.partition(b"\r\n\r\n")[2]:
                more = late.recv(4096)
                assert more, answer
                answer += more
            assert b" 408 " in answer.split(b"\r\n")[0] and b'"message"' in answer
            deadline = time.monotonic() + 10
            while app.active and time.monotonic() < deadline:
                time.sleep(0.02)
            assert app.active == 0 and app.backlog.value == 0
        finally:
            for s in stalled:
                s.close()
