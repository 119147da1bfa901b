"""A reasoning model's stream (thinking block at index 0, then text) folded by nbchat and the SDK.

The body is tests/fixtures/built/va_reasoning_stream.sse (see the README there: real event
payloads, reconstructed SSE framing).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from fixtures_util import load
from v2server import V2Server, sse

from nbchat.backends.cohere import Client
from nbchat.protocol import Accumulator, SSEDecoder, check_order, decode_all, validate_request

BODY = (Path(__file__).parents[1] / "fixtures" / "built" / "va_reasoning_stream.sse").read_bytes()
THINKING = (
    "The user is asking for the sum of 2 and 2. Since this is a straightforward arithmetic"
    " problem, I don't need to use any tools. I can calculate the answer directly."
)
TEXT = "The answer to 2 + 2 is 4."
USAGE = {
    "billed_units": {"input_tokens": 8, "output_tokens": 50},
    "tokens": {"input_tokens": 1394, "output_tokens": 54},
    "cached_tokens": 1360,
}
MESSAGE = {
    "role": "assistant",
    "content": [{"type": "thinking", "thinking": THINKING}, {"type": "text", "text": TEXT}],
}


def _check(acc: Accumulator) -> None:
    assert acc.thinking == THINKING
    assert acc.text == TEXT
    assert acc.malformed == 0
    resp = acc.response
    assert resp == {
        "id": "c9117d7f-a7e4-499f-b643-a2a1e139687b",
        "finish_reason": "COMPLETE",
        "message": MESSAGE,
        "usage": USAGE,
    }


def test_event_sequence_is_the_wire_docs():
    events = decode_all(BODY)
    check_order(events)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message-start", "content-start"]
    assert (
        events[1]["index"] == 0 and events[1]["delta"]["message"]["content"]["type"] == "thinking"
    )
    first_text = kinds.index("content-start", 2)
    assert events[first_text]["index"] == 1
    assert events[first_text]["delta"]["message"]["content"]["type"] == "text"
    assert kinds[-1] == "message-end"
    assert BODY.endswith(b"data: [DONE]\n\n")


def test_accumulator_folds_thinking_then_text():
    acc = Accumulator()
    for ev in decode_all(BODY):
        acc.feed(ev)
    _check(acc)


def test_accumulator_folds_it_in_any_chunking():
    rng = random.Random(13)
    for sizes in ([1], [5, 11], [rng.randint(1, 300) for _ in range(40)]):
        dec, acc, pos, i = SSEDecoder(), Accumulator(), 0, 0
        while pos < len(BODY):
            n = sizes[i % len(sizes)]
            for ev in dec.iter_feed(BODY[pos : pos + n]):
                acc.feed(ev)
            pos, i = pos + n, i + 1
        for ev in dec.close():
            acc.feed(ev)
        _check(acc)


def test_same_shape_as_the_recorded_non_stream_reasoning_answer():
    recorded = load("va_reasoning", ".response.json")
    assert [b["type"] for b in recorded["message"]["content"]] == ["thinking", "text"]
    assert set(recorded["usage"]) == set(USAGE)
    acc = Accumulator()
    for ev in decode_all(BODY):
        acc.feed(ev)
    assert acc.response.keys() == recorded.keys()
    assert acc.response["message"].keys() == recorded["message"].keys()


def test_folded_message_is_accepted_back_in_history():
    req = {
        "model": "command-a-reasoning-08-2025",
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            MESSAGE,
            {"role": "user", "content": "And 3 + 3?"},
        ],
        "thinking": {"type": "enabled", "token_budget": 2000},
    }
    assert validate_request(req) == req


def test_nbchat_client_streams_it_from_a_real_server():
    with V2Server() as srv:
        srv.push(sse(BODY, chunk_size=9))
        with Client(api_key="x", base_url=srv.url) as client:
            stream = client.chat_stream(
                model="command-a-reasoning-08-2025",
                messages=[{"role": "user", "content": "What is 2 + 2?"}],
                thinking={"type": "enabled"},
            )
            events = list(stream)
            assert stream.response["message"] == MESSAGE
            assert stream.response["usage"] == USAGE
        assert srv.last.json["thinking"] == {"type": "enabled"}
    assert len(events) == 51


def test_official_sdk_reads_it_the_same():
    import cohere

    with V2Server() as srv:
        srv.push(sse(BODY))
        co = cohere.ClientV2(api_key="x", base_url=srv.url, max_retries=0)
        events = list(co.chat_stream(model="m", messages=[{"role": "user", "content": "hi"}]))
    thinking = "".join(
        e.delta.message.content.thinking or ""
        for e in events
        if e.type == "content-delta" and e.index == 0
    )
    text = "".join(
        e.delta.message.content.text or ""
        for e in events
        if e.type == "content-delta" and e.index == 1
    )
    assert (thinking, text) == (THINKING, TEXT)
    end = json.loads(events[-1].model_dump_json(exclude_none=True))
    assert end["delta"]["usage"]["cached_tokens"] == 1360
