"""Every recorded Cohere stream folds to the official SDK's result (the .final.json files)."""

from __future__ import annotations

import random

import pytest
from fixtures_util import load, same, sse_bytes, stream_names

from nbchat.protocol import Accumulator, SSEDecoder, check_order, decode_all

STREAMS = stream_names()


def test_all_stream_captures_present():
    assert len(STREAMS) == 30


def _fold(events):
    acc = Accumulator()
    for ev in events:
        acc.feed(ev)
    return acc


def _check_final(acc: Accumulator, final: dict) -> None:
    resp = acc.response
    assert resp["id"] == final["id"]
    assert acc.text == final["text"]
    assert acc.thinking == final["thinking"]
    assert acc.tool_plan == final["tool_plan"]
    assert resp["finish_reason"] == final["finish_reason"]
    same(resp.get("usage"), final["usage"])
    assert resp.get("error") == final["error"]
    expected_calls = []
    for call in final["tool_calls"]:
        call = {**call, "function": dict(call["function"])}
        if call["function"]["arguments"].strip() in ("", "null"):
            call["function"]["arguments"] = "{}"
        expected_calls.append(call)
    assert acc.tool_calls == expected_calls
    assert acc.citations == final["citations"]
    # the message is SDK-ready: empties omitted, text in content blocks
    msg = resp["message"]
    assert msg["role"] == "assistant"
    assert ("tool_calls" in msg) == bool(final["tool_calls"])
    assert ("citations" in msg) == bool(final["citations"])
    assert ("tool_plan" in msg) == bool(final["tool_plan"])
    texts = [b["text"] for b in msg.get("content", []) if b["type"] == "text"]
    assert "".join(texts) == final["text"]


@pytest.mark.parametrize("name", STREAMS)
def test_capture_matches_sdk_final(name):
    events = decode_all(sse_bytes(name))
    check_order(events)
    _check_final(_fold(events), load(name, ".final.json"))


@pytest.mark.parametrize("name", STREAMS)
def test_capture_random_chunks_matches_sdk_final(name):
    body = sse_bytes(name)
    rng = random.Random(name)
    for sizes in ([1], [2, 3, 7], [rng.randint(1, 200) for _ in range(50)]):
        dec, acc, pos, i = SSEDecoder(), Accumulator(), 0, 0
        while pos < len(body):
            n = sizes[i % len(sizes)]
            for ev in dec.iter_feed(body[pos : pos + n]):
                acc.feed(ev)
            pos, i = pos + n, i + 1
        for ev in dec.close():
            acc.feed(ev)
        assert dec.done
        _check_final(acc, load(name, ".final.json"))


def test_in_stream_error_kept():
    acc = _fold(decode_all(sse_bytes("lc_stream_error_invalid_tool_1")))
    resp = acc.response
    assert resp["finish_reason"] == "ERROR"
    assert resp["usage"] == {}
    assert resp["error_type"] == "INVALID_TOOL_GENERATION"
    assert "invalid tool generation" in resp["error"]
    assert "tool_calls" not in resp["message"] and resp["message"]["tool_plan"]


def test_streamed_citation_capture():
    acc = _fold(decode_all(sse_bytes("lc_h20241115_agent_stream_call02")))
    (cit,) = acc.message["citations"]
    assert cit["sources"][0]["type"] == "tool"
    assert acc.text[cit["start"] : cit["end"]] == cit["text"]


def test_empty_and_null_arguments_become_empty_object():
    acc = Accumulator()
    for i, pieces in enumerate([[], ["null"], [" ", "nu", "ll "]]):
        acc.feed(
            {
                "type": "tool-call-start",
                "index": i,
                "delta": {
                    "message": {
                        "tool_calls": {
                            "id": f"c{i}",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    }
                },
            }
        )
        for p in pieces:
            acc.feed(
                {
                    "type": "tool-call-delta",
                    "index": i,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": p}}}},
                }
            )
    assert [c["function"]["arguments"] for c in acc.tool_calls] == ["{}", "{}", "{}"]


def test_unknown_events_and_fields_are_ignored():
    acc = Accumulator()
    acc.feed({"type": "debug", "prompt": "x"})
    acc.feed({"type": "content-delta", "index": 0, "delta": {"message": {"content": "odd"}}})
    acc.feed({"type": "content-delta", "index": 0, "delta": None})
    acc.feed(
        {
            "type": "content-delta",
            "index": 0,
            "delta": {"message": {"content": {"text": "ok"}}},
            "x": 1,
        }
    )
    acc.feed({"type": "message-end", "delta": {"finish_reason": "COMPLETE", "extra": True}})
    assert acc.text == "ok"
    assert acc.response["finish_reason"] == "COMPLETE"


def test_thinking_and_logprobs():
    acc = Accumulator()
    lp = {"token_ids": [1], "text": "A", "logprobs": [-0.1]}
    acc.feed(
        {
            "type": "content-start",
            "index": 0,
            "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}},
        }
    )
    acc.feed(
        {
            "type": "content-delta",
            "index": 0,
            "delta": {"message": {"content": {"thinking": "hmm"}}},
        }
    )
    acc.feed(
        {
            "type": "content-start",
            "index": 1,
            "delta": {"message": {"content": {"type": "text", "text": ""}}},
        }
    )
    acc.feed(
        {
            "type": "content-delta",
            "index": 1,
            "delta": {"message": {"content": {"text": "A"}}},
            "logprobs": lp,
        }
    )
    assert acc.thinking == "hmm" and acc.text == "A"
    assert acc.message["content"] == [
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "A"},
    ]
    assert acc.response["logprobs"] == [lp]
