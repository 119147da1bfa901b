"""StreamBuilder emits Cohere's exact wire shapes, in grammar order, and round-trips."""

from __future__ import annotations

import pytest
from fixtures_util import load, same, sse_bytes, stream_names
from hypothesis import given, settings
from hypothesis import strategies as st

from nbchat.protocol import (
    DONE,
    FINISH_REASONS,
    Accumulator,
    SSEDecoder,
    StreamBuilder,
    check_order,
    decode_all,
    encode_event,
    new_id,
    usage_dict,
)


def roundtrip(events):
    body = b"".join(encode_event(e) for e in events) + DONE
    dec = SSEDecoder()
    out = []
    for i in range(0, len(body), 5):
        out += dec.feed(body[i : i + 5])
    out += dec.close()
    assert dec.done
    acc = Accumulator()
    for e in out:
        acc.feed(e)
    return out, acc


def test_message_start_shape():
    b = StreamBuilder("abc")
    assert b.start() == {
        "id": "abc",
        "type": "message-start",
        "delta": {
            "message": {
                "role": "assistant",
                "content": [],
                "tool_plan": "",
                "tool_calls": [],
                "citations": [],
            }
        },
    }
    assert encode_event(StreamBuilder("abc").start()).startswith(
        b'event: message-start\ndata: {"id":"abc","type":"message-start","delta":'
    )


def test_text_stream_is_byte_identical_to_a_capture():
    # Rebuild a real capture from its text pieces: same bytes as Cohere sent.
    name = "lc_stream_plain"
    events = decode_all(sse_bytes(name))
    b = StreamBuilder(events[0]["id"])
    rebuilt = [b.start()]
    for ev in events:
        if ev["type"] == "content-delta":
            rebuilt += b.text(ev["delta"]["message"]["content"]["text"])
    end = events[-1]["delta"]
    rebuilt += b.end(end["finish_reason"], end["usage"])
    assert b"".join(encode_event(e) for e in rebuilt) + DONE == sse_bytes(name)


def test_tool_call_stream_is_byte_identical_to_a_capture():
    name = "lc_stream_tool_call"
    events = decode_all(sse_bytes(name))
    b = StreamBuilder(events[0]["id"])
    rebuilt = [b.start()]
    for ev in events[1:-1]:
        msg = ev.get("delta", {}).get("message", {})
        if ev["type"] == "tool-plan-delta":
            rebuilt.append(b.tool_plan(msg["tool_plan"]))
        elif ev["type"] == "tool-call-start":
            tc = msg["tool_calls"]
            rebuilt.append(b.tool_call_start(tc["id"], tc["function"]["name"]))
        elif ev["type"] == "tool-call-delta":
            rebuilt.append(b.tool_call_delta(msg["tool_calls"]["function"]["arguments"]))
        elif ev["type"] == "tool-call-end":
            rebuilt.append(b.tool_call_end())
    end = events[-1]["delta"]
    rebuilt += b.end(end["finish_reason"], end["usage"])
    assert rebuilt == events
    same(roundtrip(rebuilt)[1].tool_calls, load(name, ".final.json")["tool_calls"])


def test_error_stream_shape_matches_capture():
    events = decode_all(sse_bytes("lc_stream_error_invalid_tool_1"))
    b = StreamBuilder(events[0]["id"])
    rebuilt = [b.start()]
    rebuilt += [b.tool_plan(e["delta"]["message"]["tool_plan"]) for e in events[1:-1]]
    d = events[-1]["delta"]
    rebuilt += b.end("ERROR", error=d["error"], error_type=d["error_type"])
    assert rebuilt == events  # usage {} for ERROR


def test_reasoning_then_text_with_citations_and_logprobs():
    b = StreamBuilder()
    lp = {"token_ids": [5], "text": "Hi", "logprobs": [-0.5]}
    events = [b.start()]
    events += b.thinking("let me")
    events += b.thinking(" think")
    events += b.text("Hi", logprobs=lp)
    events += b.text(" there 😀")
    cit = {
        "start": 0,
        "end": 2,
        "text": "Hi",
        "sources": [{"type": "document", "id": "doc:0", "document": {"id": "doc:0", "text": "Hi"}}],
        "type": "TEXT_CONTENT",
    }
    events += b.citation(cit)
    events += b.end("COMPLETE", usage_dict(10, 4))
    assert [e["type"] for e in events] == [
        "message-start",
        "content-start",
        "content-delta",
        "content-delta",
        "content-end",
        "content-start",
        "content-delta",
        "content-delta",
        "citation-start",
        "citation-end",
        "content-end",
        "message-end",
    ]
    assert events[1] == {
        "type": "content-start",
        "index": 0,
        "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}},
    }
    assert events[5]["index"] == 1 and events[5]["delta"]["message"]["content"] == {
        "type": "text",
        "text": "",
    }
    assert events[6] == {
        "type": "content-delta",
        "index": 1,
        "delta": {"message": {"content": {"text": "Hi"}}},
        "logprobs": lp,
    }
    assert events[8] == {
        "type": "citation-start",
        "index": 0,
        "delta": {"message": {"citations": cit}},
    }
    assert events[-1] == {
        "type": "message-end",
        "delta": {
            "finish_reason": "COMPLETE",
            "usage": {
                "billed_units": {"input_tokens": 10, "output_tokens": 4},
                "tokens": {"input_tokens": 10, "output_tokens": 4},
            },
        },
    }
    check_order(events)
    decoded, acc = roundtrip(events)
    assert decoded == events
    resp = acc.response
    assert resp["message"]["content"] == [
        {"type": "thinking", "thinking": "let me think"},
        {"type": "text", "text": "Hi there 😀"},
    ]
    assert resp["message"]["citations"] == [cit]
    assert resp["logprobs"] == [lp]
    assert resp["usage"]["tokens"] == {"input_tokens": 10, "output_tokens": 4}


def test_parallel_tool_calls_and_end_closes_open_call():
    b = StreamBuilder()
    events = [b.start(), b.tool_plan("I will call two tools.")]
    events += [b.tool_call_start("a_1", "a"), b.tool_call_delta('{"x": 1}'), b.tool_call_end()]
    events += [b.tool_call_start("b_2", "b", "")]
    events += b.end("TOOL_CALL", usage_dict(3, 2))  # closes call 1
    assert [e["type"] for e in events][-2:] == ["tool-call-end", "message-end"]
    assert events[-2]["index"] == 1
    check_order(events)
    _, acc = roundtrip(events)
    assert acc.message["tool_calls"] == [
        {"id": "a_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "b_2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
    ]
    assert acc.message["tool_plan"] == "I will call two tools."


def test_end_defaults_usage_and_validates_finish_reason():
    b = StreamBuilder()
    b.start()
    with pytest.raises(ValueError, match="finish_reason"):
        b.end("DONE")
    (end,) = b.end("MAX_TOKENS")
    assert end["delta"]["usage"] == usage_dict(0, 0)
    assert b.ended


def test_misuse_raises():
    b = StreamBuilder()
    with pytest.raises(RuntimeError):
        b.text("x")  # before start
    b.start()
    b.thinking("t")
    with pytest.raises(RuntimeError, match="close_content"):
        b.tool_call_start("id", "f")
    b.close_content()
    assert b.close_content() == []
    with pytest.raises(RuntimeError):
        b.tool_call_delta("{}")
    b.tool_call_start("id", "f")
    with pytest.raises(RuntimeError):
        b.text("x")
    with pytest.raises(RuntimeError):
        b.tool_plan("late")
    b.end("TOOL_CALL")
    with pytest.raises(RuntimeError):
        b.text("after end")


def test_ids():
    a, b = new_id(), new_id()
    assert a != b and len(a) == 36 and a.count("-") == 4
    assert StreamBuilder().id != StreamBuilder().id


@pytest.mark.parametrize("name", stream_names())
def test_check_order_accepts_every_capture(name):
    check_order(decode_all(sse_bytes(name)))


@pytest.mark.parametrize(
    "types",
    [
        ["content-start"],  # no message-start
        ["message-start", "message-start"],
        ["message-start", "content-delta"],  # delta without start
        ["message-start", "citation-start", "content-end"],
        ["message-start", "tool-call-start", "content-start"],
        ["message-start"],  # no message-end
    ],
)
def test_check_order_rejects(types):
    events = []
    for t in types:
        ev = {"type": t, "index": 0}
        if t == "message-start":
            ev = StreamBuilder().start()
        events.append(ev)
    with pytest.raises(ValueError):
        check_order(events)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.text(max_size=6)),
        st.tuples(st.just("thinking"), st.text(max_size=6)),
        st.tuples(st.just("cite"), st.integers(0, 5)),
        st.tuples(st.just("close"), st.none()),
    ),
    max_size=15,
)


@settings(max_examples=100, deadline=None)
@given(
    ops=_ops,
    calls=st.lists(st.text(max_size=10), max_size=3),
    finish=st.sampled_from(FINISH_REASONS),
)
def test_any_builder_sequence_follows_grammar_and_round_trips(ops, calls, finish):
    b = StreamBuilder()
    events = [b.start()]
    text = thinking = ""
    for op, arg in ops:
        if op == "text":
            events += b.text(arg)
            text += arg
        elif op == "thinking":
            events += b.thinking(arg)
            thinking += arg
        elif op == "cite":
            events += b.citation({"start": 0, "end": arg, "text": "", "sources": []})
        else:
            events += b.close_content()
    if calls:
        events += b.close_content()
        events.append(b.tool_plan("plan"))
        for i, args in enumerate(calls):
            events.append(b.tool_call_start(f"t{i}", "f"))
            events.append(b.tool_call_delta(args))
            events.append(b.tool_call_end())
    events += b.end(finish)
    check_order(events)
    decoded, acc = roundtrip(events)
    assert decoded == events
    assert acc.text == text and acc.thinking == thinking
    assert acc.finish_reason == finish
    assert [c["function"]["arguments"] for c in acc.tool_calls] == [
        a if a.strip() not in ("", "null") else "{}" for a in calls
    ]
