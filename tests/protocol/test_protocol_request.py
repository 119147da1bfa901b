"""The v2 request rules: a table of valid edges and invalid values, real requests, fuzzing."""

from __future__ import annotations

import copy

import pytest
from fixtures_util import load, request_names, response_names, status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbchat.errors import ValidationError
from nbchat.protocol import (
    CITATION_MODES,
    DEFAULTS,
    FINISH_REASONS,
    PARAM_FIELDS,
    SAFETY_MODES,
    TOOL_CHOICES,
    message_text,
    normalize_documents,
    validate_request,
)

USER = {"role": "user", "content": "hi"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def req(**kw):
    body = {"model": "command-a-03-2025", "messages": [USER]}
    body.update(kw)
    return body


def convo(*msgs):
    return req(messages=[USER, *msgs])


# -- valid edges ----------------------------------------------------------------------------
VALID = {
    "temperature 0": req(temperature=0),
    "temperature 1": req(temperature=1.0),
    "temperature int 1": req(temperature=1),
    "p 0.01": req(p=0.01),
    "p 0.99": req(p=0.99),
    "k 0": req(k=0),
    "k 500": req(k=500),
    "frequency_penalty 0/1": req(frequency_penalty=0, presence_penalty=1.0),
    "seed 0": req(seed=0),
    "seed 2**64-1": req(seed=2**64 - 1),
    "5 stop sequences": req(stop_sequences=["a", "b", "c", "d", "e"]),
    "0 stop sequences": req(stop_sequences=[]),
    "max_tokens 1": req(max_tokens=1),
    "priority 0": req(priority=0),
    "priority 999": req(priority=999),
    "safety modes": req(safety_mode="OFF"),
    "strict": req(safety_mode="STRICT"),
    "citation mode lowercase": req(citation_options={"mode": "fast"}),
    "citation mode mixed": req(citation_options={"mode": "Accurate"}),
    "citation options empty": req(citation_options={}),
    "tool_choice lowercase": req(tools=[TOOL], tool_choice="required"),
    "tool_choice none without tools": req(tool_choice="none"),
    "response_format text": req(response_format={"type": "text"}),
    "response_format json": req(response_format={"type": "json_object"}),
    "response_format schema": req(
        response_format={
            "type": "json_object",
            "json_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        }
    ),
    "thinking": req(thinking={"type": "enabled", "token_budget": 1}),
    "thinking off": req(thinking={"type": "disabled"}),
    "string documents": req(documents=["Emperor penguins are the tallest."]),
    "documents id/data": req(documents=[{"id": "d1", "data": {"title": "t", "text": "x"}}]),
    "documents string data": req(documents=[{"data": "plain"}]),
    "tools no description": req(
        tools=[{"type": "function", "function": {"name": "_f1", "parameters": {}}}]
    ),
    "flags": req(strict_tools=True, logprobs=False, stream=True),
    "nulls mean unset": req(temperature=None, seed=None),
    "system blocks": req(
        messages=[{"role": "system", "content": [{"type": "text", "text": "be brief"}]}, USER]
    ),
    "user image": req(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                    },
                ],
            }
        ]
    ),
    "assistant thinking + text": convo(
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "ok"}],
        },
        USER,
    ),
    "assistant tool call, no content": convo(
        {"role": "assistant", "tool_plan": "call it", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 20}'},
    ),
    "tool call without type": convo(
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": ""}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "20"}]},
    ),
    "tool document block, type omitted, string data": convo(
        {"role": "assistant", "tool_calls": [CALL]},
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": [{"document": {"data": "{}", "id": "1"}}],
        },
    ),
    "assistant with citations": convo(
        {"role": "assistant", "content": "x", "citations": [{"start": 0, "end": 1, "text": "x"}]}
    ),
}


@pytest.mark.parametrize("body", VALID.values(), ids=list(VALID))
def test_valid_edges_accepted(body):
    original = copy.deepcopy(body)
    out = validate_request(body)
    assert body == original  # the input is never mutated
    assert out["model"] == body["model"]


def test_normalization():
    out = validate_request(
        req(
            tools=[TOOL],
            tool_choice="required",
            citation_options={"mode": "accurate"},
            temperature=None,
            messages=[
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                },
                {
                    "role": "tool",
                    "tool_call_id": "c1",
                    "content": [{"document": {"data": {"a": 1}}}],
                },
            ],
        )
    )
    assert out["tool_choice"] == "REQUIRED"
    assert out["citation_options"]["mode"] == "ACCURATE"
    assert "temperature" not in out
    assert out["messages"][1]["tool_calls"][0]["type"] == "function"
    assert out["messages"][2]["content"][0]["type"] == "document"
    out = validate_request(
        req(response_format={"type": "json_object", "schema": {"type": "object"}})
    )
    assert out["response_format"] == {"type": "json_object", "json_schema": {"type": "object"}}
    assert validate_request(req(stream=True))["stream"] is True


# -- invalid: (body, expected field, words the message must contain) -------------------------
BAD_CALL_MSGS = [USER, {"role": "assistant", "tool_calls": [CALL]}]
INVALID = [
    ("model missing", {"messages": [USER]}, "model", "required"),
    ("model empty", req(model=""), "model", "non-empty string"),
    ("model not str", req(model=3), "model", "string"),
    ("messages missing", {"model": "m"}, "messages", "required"),
    ("messages empty", req(messages=[]), "messages", "non-empty list"),
    ("messages not list", req(messages="hi"), "messages", "list"),
    ("message not dict", req(messages=["hi"]), "messages[0]", "object"),
    (
        "bad role",
        req(messages=[{"role": "bot", "content": "x"}]),
        "messages[0].role",
        "system, user, assistant, tool",
    ),
    ("user no content", req(messages=[{"role": "user"}]), "messages[0].content", "required"),
    (
        "user content int",
        req(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
        "text, image_url",
    ),
    (
        "user thinking block",
        req(messages=[{"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]),
        "messages[0].content[0].type",
        "text, image_url",
    ),
    (
        "user document block",
        req(
            messages=[
                {"role": "user", "content": [{"type": "document", "document": {"data": {"a": 1}}}]}
            ]
        ),
        "messages[0].content[0].type",
        "text, image_url",
    ),
    (
        "system image",
        req(
            messages=[
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
                USER,
            ]
        ),
        "messages[0].content[0].type",
        "text",
    ),
    (
        "text block no text",
        req(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
        "string",
    ),
    (
        "image no url",
        req(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content[0].image_url.url",
        "non-empty",
    ),
    (
        "image bad detail",
        req(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}],
                }
            ]
        ),
        "messages[0].content[0].image_url.detail",
        "auto, low, high",
    ),
    (
        "unknown message field",
        req(messages=[{"role": "user", "content": "x", "name": "bob"}]),
        "messages[0].name",
        "role, content",
    ),
    (
        "assistant image",
        convo({"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
        "messages[1].content[0].type",
        "text, thinking",
    ),
    (
        "tool_plan not str",
        convo({"role": "assistant", "tool_plan": 1}),
        "messages[1].tool_plan",
        "string",
    ),
    (
        "tool_calls not list",
        convo({"role": "assistant", "tool_calls": CALL}),
        "messages[1].tool_calls",
        "list",
    ),
    (
        "tool call no id",
        convo(
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            }
        ),
        "messages[1].tool_calls[0].id",
        "non-empty string",
    ),
    (
        "tool call bad type",
        convo({"role": "assistant", "tool_calls": [{**CALL, "type": "tool_call"}]}),
        "messages[1].tool_calls[0].type",
        "function",
    ),
    (
        "tool call args dict",
        convo(
            {
                "role": "assistant",
                "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}],
            }
        ),
        "messages[1].tool_calls[0].function.arguments",
        "JSON-encoded string",
    ),
    (
        "tool call v1 shape",
        convo({"role": "assistant", "tool_calls": [{"id": "x", "name": "f", "args": {}}]}),
        "messages[1].tool_calls[0].name",
        "id, type, function",
    ),
    (
        "duplicate tool call id",
        convo({"role": "assistant", "tool_calls": [CALL, CALL]}),
        "messages[1].tool_calls[1].id",
        "not used before",
    ),
    (
        "citations not list",
        convo({"role": "assistant", "content": "x", "citations": {}}),
        "messages[1].citations",
        "list",
    ),
    (
        "tool unknown id",
        req(messages=[*BAD_CALL_MSGS, {"role": "tool", "tool_call_id": "nope", "content": "1"}]),
        "messages[2].tool_call_id",
        "earlier assistant",
    ),
    (
        "tool before call",
        req(
            messages=[
                USER,
                {"role": "tool", "tool_call_id": "c1", "content": "1"},
                {"role": "assistant", "tool_calls": [CALL]},
            ]
        ),
        "messages[1].tool_call_id",
        "earlier assistant",
    ),
    (
        "tool no id",
        req(messages=[*BAD_CALL_MSGS, {"role": "tool", "content": "1"}]),
        "messages[2].tool_call_id",
        "non-empty string",
    ),
    (
        "tool no content",
        req(messages=[*BAD_CALL_MSGS, {"role": "tool", "tool_call_id": "c1"}]),
        "messages[2].content",
        "required",
    ),
    (
        "tool content v1 shape",
        req(
            messages=[
                *BAD_CALL_MSGS,
                {"role": "tool", "tool_call_id": "c1", "content": [{"output": "5"}]},
            ]
        ),
        "messages[2].content[0].type",
        "text, document",
    ),
    (
        "tool document no data",
        req(
            messages=[
                *BAD_CALL_MSGS,
                {
                    "role": "tool",
                    "tool_call_id": "c1",
                    "content": [{"type": "document", "document": {"id": "1"}}],
                },
            ]
        ),
        "messages[2].content[0].document.data",
        "required",
    ),
    ("temperature > 1", req(temperature=1.01), "temperature", "0 to 1"),
    ("temperature < 0", req(temperature=-0.1), "temperature", "0 to 1"),
    ("temperature bool", req(temperature=True), "temperature", "number"),
    ("temperature str", req(temperature="0.5"), "temperature", "number"),
    ("temperature nan", req(temperature=float("nan")), "temperature", "number"),
    ("p 0", req(p=0), "p", "0.01 to 0.99"),
    ("p 1", req(p=1.0), "p", "0.01 to 0.99"),
    ("p 0.995", req(p=0.995), "p", "0.01 to 0.99"),
    ("k 501", req(k=501), "k", "0 to 500"),
    ("k -1", req(k=-1), "k", "0 to 500"),
    ("k float", req(k=5.0), "k", "integer"),
    ("k bool", req(k=False), "k", "integer"),
    ("frequency_penalty 2", req(frequency_penalty=2), "frequency_penalty", "0 to 1"),
    ("presence_penalty -1", req(presence_penalty=-1), "presence_penalty", "0 to 1"),
    ("seed 2**64", req(seed=2**64), "seed", "18446744073709551615"),
    ("seed -1", req(seed=-1), "seed", "integer"),
    ("seed float", req(seed=1.5), "seed", "integer"),
    ("6 stop sequences", req(stop_sequences=list("abcdef")), "stop_sequences", "at most 5"),
    ("stop sequences str", req(stop_sequences="stop"), "stop_sequences", "list"),
    ("stop sequence int", req(stop_sequences=["a", 1]), "stop_sequences[1]", "string"),
    ("max_tokens 0", req(max_tokens=0), "max_tokens", ">= 1"),
    ("max_tokens float", req(max_tokens=10.0), "max_tokens", "integer"),
    ("priority 1000", req(priority=1000), "priority", "0 to 999"),
    ("priority -1", req(priority=-1), "priority", "0 to 999"),
    ("safety mode bad", req(safety_mode="NONE"), "safety_mode", "CONTEXTUAL, STRICT, OFF"),
    ("safety mode lower", req(safety_mode="strict"), "safety_mode", "CONTEXTUAL, STRICT, OFF"),
    ("tool_choice bad", req(tools=[TOOL], tool_choice="AUTO"), "tool_choice", "REQUIRED, NONE"),
    ("tool_choice required no tools", req(tool_choice="REQUIRED"), "tool_choice", "tools"),
    (
        "citation mode bad",
        req(citation_options={"mode": "sometimes"}),
        "citation_options.mode",
        "ENABLED, DISABLED, FAST, ACCURATE, OFF",
    ),
    (
        "citation options type",
        req(citation_options={"type": "disabled"}),
        "citation_options.type",
        "mode",
    ),
    ("citation options str", req(citation_options="fast"), "citation_options", "object"),
    (
        "response_format bad type",
        req(response_format={"type": "xml"}),
        "response_format.type",
        "text, json_object",
    ),
    (
        "response_format no type",
        req(response_format={}),
        "response_format.type",
        "text, json_object",
    ),
    (
        "response_format text with schema",
        req(response_format={"type": "text", "json_schema": {}}),
        "response_format.json_schema",
        "json_object",
    ),
    (
        "response_format schema not dict",
        req(response_format={"type": "json_object", "json_schema": "x"}),
        "response_format.json_schema",
        "JSON Schema",
    ),
    (
        "response_format invalid schema",
        req(response_format={"type": "json_object", "json_schema": {"type": "strang"}}),
        "response_format.json_schema",
        "valid JSON Schema",
    ),
    (
        "json with documents",
        req(response_format={"type": "json_object"}, documents=["x"]),
        "response_format",
        "documents",
    ),
    (
        "json with tools",
        req(response_format={"type": "json_object"}, tools=[TOOL]),
        "response_format",
        "tools",
    ),
    ("thinking bad type", req(thinking={"type": "on"}), "thinking.type", "enabled, disabled"),
    ("thinking no type", req(thinking={"token_budget": 5}), "thinking.type", "enabled, disabled"),
    (
        "thinking budget 0",
        req(thinking={"type": "enabled", "token_budget": 0}),
        "thinking.token_budget",
        ">= 1",
    ),
    ("thinking bool", req(thinking=True), "thinking", "object"),
    ("documents not list", req(documents="x"), "documents", "list"),
    ("document v1 shape", req(documents=[{"text": "x"}]), "documents[0].text", "id, data"),
    ("document empty string", req(documents=[""]), "documents[0]", "non-empty"),
    ("document empty data", req(documents=[{"data": {}}]), "documents[0].data", "non-empty"),
    ("document id int", req(documents=[{"id": 3, "data": "x"}]), "documents[0].id", "string"),
    ("document int", req(documents=[3]), "documents[0]", "string or an object"),
    ("tools not list", req(tools=TOOL), "tools", "list"),
    (
        "tool v1 shape",
        req(tools=[{"name": "f", "parameter_definitions": {}}]),
        "tools[0].name",
        "type, function",
    ),
    ("tool type", req(tools=[{**TOOL, "type": "retrieval"}]), "tools[0].type", "function"),
    (
        "tool name digit",
        req(tools=[{"type": "function", "function": {"name": "1f", "parameters": {}}}]),
        "tools[0].function.name",
        "A-Za-z_",
    ),
    (
        "tool name dash",
        req(tools=[{"type": "function", "function": {"name": "get-x", "parameters": {}}}]),
        "tools[0].function.name",
        "A-Za-z_",
    ),
    (
        "tool name missing",
        req(tools=[{"type": "function", "function": {"parameters": {}}}]),
        "tools[0].function.name",
        "A-Za-z_",
    ),
    (
        "tool no parameters",
        req(tools=[{"type": "function", "function": {"name": "f"}}]),
        "tools[0].function.parameters",
        "required",
    ),
    (
        "tool parameters list",
        req(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools[0].function.parameters",
        "JSON Schema",
    ),
    (
        "tool description int",
        req(
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": {}, "description": 1}}
            ]
        ),
        "tools[0].function.description",
        "string",
    ),
    (
        "duplicate tool names",
        req(tools=[TOOL, TOOL]),
        "tools[1].function.name",
        "not used by another",
    ),
    ("strict_tools int", req(strict_tools=1), "strict_tools", "true or false"),
    ("logprobs str", req(logprobs="yes"), "logprobs", "true or false"),
    ("stream None-like str", req(stream="false"), "stream", "true or false"),
    ("unknown field", req(temprature=0.5), "temprature", "temperature"),
    ("v1 field", req(preamble="x"), "preamble", "allowed fields"),
    ("body not dict", ["model"], "body", "object"),
]


@pytest.mark.parametrize(
    ("body", "field", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_rejected(body, field, words):
    with pytest.raises(ValidationError) as info:
        validate_request(body)
    err = info.value
    assert err.field == field, str(err)
    assert words in str(err), str(err)
    assert isinstance(err, ValueError)
    assert field in str(err)


def test_matrix_is_big_enough():
    assert len(INVALID) >= 40
    fields = {c[2].split("[")[0].split(".")[0] for c in INVALID}
    for name in PARAM_FIELDS:  # every optional field has at least one invalid case
        assert name in fields, name


def test_unknown_field_lists_allowed_fields():
    with pytest.raises(ValidationError) as info:
        validate_request(req(temprature=0.5))
    msg = str(info.value)
    assert "did you mean 'temperature'" in msg
    for name in ("model", "messages", *PARAM_FIELDS):
        assert name in msg


def test_constants():
    assert DEFAULTS == {
        "temperature": 0.3,
        "p": 0.75,
        "k": 0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "safety_mode": "CONTEXTUAL",
    }
    assert SAFETY_MODES == ("CONTEXTUAL", "STRICT", "OFF")
    assert TOOL_CHOICES == ("REQUIRED", "NONE")
    assert set(CITATION_MODES) == {"ENABLED", "DISABLED", "FAST", "ACCURATE", "OFF"}
    assert "TOOL_CALL" in FINISH_REASONS and "ERROR" in FINISH_REASONS
    assert validate_request(req(**{k: v for k, v in DEFAULTS.items()}))


# -- real recorded requests -----------------------------------------------------------------
REQUESTS = request_names()


@pytest.mark.parametrize("name", REQUESTS)
def test_recorded_requests(name):
    body = load(name, ".request.json")
    code = status(name)
    if code in (400, 422):
        # Cohere rejected these (an early client sent v1 shapes); so must we.
        with pytest.raises(ValidationError):
            validate_request(body)
    else:
        out = validate_request(body)  # Cohere accepted it (200, or 404 for a retired model)
        assert out["messages"] and out["model"] == body["model"]


def test_enough_recorded_requests():
    assert len(REQUESTS) >= 60
    assert sum(status(n) == 200 for n in REQUESTS) >= 50


# -- recorded non-stream responses ----------------------------------------------------------
RESPONSES = response_names()


@pytest.mark.parametrize("name", RESPONSES)
def test_recorded_response_shapes(name):
    body = load(name, ".response.json")
    meta_status = status(name)
    if meta_status != 200:
        assert set(body) >= {"message"} and isinstance(body["message"], str)
        return
    assert isinstance(body["id"], str) and body["id"]
    assert body["finish_reason"] in FINISH_REASONS
    msg = body["message"]
    assert msg["role"] == "assistant"
    for block in msg.get("content", []):
        assert block["type"] in ("text", "thinking")
        assert isinstance(block[block["type"]], str)
    for call in msg.get("tool_calls", []):
        assert call["type"] == "function" and isinstance(call["function"]["arguments"], str)
    if body["finish_reason"] == "TOOL_CALL":
        assert msg["tool_calls"]
    text = message_text(msg)
    for cit in msg.get("citations", []):
        assert cit["sources"] and cit["start"] <= cit["end"]
        assert text[cit["start"] : cit["end"]] == cit["text"]  # code-point offsets
    usage = body.get("usage")
    if usage is not None:
        assert usage["tokens"]["input_tokens"] >= 0
    # The assistant message goes back as-is in a follow-up request (SDK-ready shape).
    follow = req(messages=[USER, {k: v for k, v in msg.items()}, USER])
    validate_request(follow)


# -- helpers --------------------------------------------------------------------------------
def test_normalize_documents():
    docs = ["plain", {"data": "s"}, {"id": "x", "data": {"title": "t"}}, {"data": {"a": 1}}]
    assert normalize_documents(docs) == [
        {"id": "doc:0", "data": {"text": "plain"}},
        {"id": "doc:1", "data": {"text": "s"}},
        {"id": "x", "data": {"title": "t"}},
        {"id": "doc:3", "data": {"a": 1}},
    ]
    assert normalize_documents(None) == []


def test_message_text():
    assert message_text({"role": "user", "content": "hi"}) == "hi"
    assert message_text({"role": "assistant"}) == ""
    blocks = [
        {"type": "thinking", "thinking": "secret"},
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "u"}},
        {"type": "text", "text": "b"},
    ]
    assert message_text({"role": "assistant", "content": blocks}) == "ab"


# -- fuzz: only ValidationError, never another exception ------------------------------------
_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_call = st.fixed_dictionaries(
    {"id": st.sampled_from(["c1", "c2"]) | _scalar},
    optional={
        "type": st.sampled_from(["function", "x"]) | _scalar,
        "function": st.dictionaries(
            st.sampled_from(["name", "arguments", "x"]), _scalar, max_size=3
        ),
    },
)
_msg = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system", "x"])},
    optional={
        "content": _json,
        "tool_call_id": st.sampled_from(["c1", "c2", ""]) | _scalar,
        "tool_calls": st.lists(_call, max_size=2),
        "tool_plan": _scalar,
    },
)
_bodies = st.one_of(
    _json,
    st.builds(
        lambda model, messages, params: {"model": model, "messages": messages, **params},
        st.text(max_size=5) | _scalar,
        st.lists(_msg, max_size=3),
        st.dictionaries(st.sampled_from([*PARAM_FIELDS, "x"]), _json, max_size=4),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies)
def test_fuzz_only_validation_errors(body):
    try:
        out = validate_request(body)
    except ValidationError as err:
        assert err.field and str(err)
    else:
        assert validate_request(out) == out  # normalizing is idempotent


# -- safety_mode vs documents/tools (Cohere: not configurable together) --------------------------
@pytest.mark.parametrize(
    "extra",
    [
        {"documents": ["The sky is green."]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    ],
)
@pytest.mark.parametrize("mode", ["CONTEXTUAL", "STRICT", "OFF"])
def test_safety_mode_with_documents_or_tools_is_refused(extra: dict, mode: str) -> None:
    from nbchat.protocol.request import SAFETY_MODE_CONFLICT

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    validate_request(body)  # without safety_mode: fine (Cohere's default mode applies)
    with pytest.raises(ValidationError) as info:
        validate_request({**body, "safety_mode": mode})
    assert info.value.field == "safety_mode"
    assert str(info.value).startswith(SAFETY_MODE_CONFLICT)
    # empty documents/tools lists are no documents/tools
    empty = {k: [] for k in extra}
    assert validate_request({**body, **empty, "safety_mode": mode})["safety_mode"] == mode
