"""Images and reasoning end to end: Conversation.send(images=...), exports, the embedded engine's
honest refusals (in the kernel and through `nbchat serve`), an OpenAI-compatible server that
streams vLLM-shaped reasoning."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_util import load
from test_server import EchoBackend, post, run_server
from v2server import V2Server, events_body, sse, text_events

from nbchat import Conversation
from nbchat.backends import get_backend
from nbchat.backends.local import LocalBackend
from nbchat.backends.openai import OpenAIBackend
from nbchat.errors import ValidationError
from nbchat.images import image_block, placeholder
from nbchat.protocol import Accumulator, check_order
from nbchat.server import create_app

PIXEL = base64.b64decode(
    load("lc_vision_base64", ".request.json")["messages"][0]["content"][1]["image_url"][
        "url"
    ].partition(",")[2]
)


VISION = "command-a-vision-07-2025"


def _v2(srv: V2Server):
    return get_backend("v2", base_url=srv.url, api_key="k")


# -- Conversation.send(images=...) -------------------------------------------------------------------
def test_send_images_sends_the_recorded_request_shape_and_keeps_real_blocks():
    rec = load("lc_vision_base64", ".request.json")
    with V2Server(default=sse(events_body(text_events(["A ", "pixel."])))) as srv:
        chat = Conversation(model=VISION)
        chat.send("Describe this image", backend=_v2(srv), images=[PIXEL], image_detail="high")
        sent = srv.last.json
    assert sent["messages"] == rec["messages"]
    assert chat.messages[0] == rec["messages"][0]  # the real image_url block, not a placeholder


def test_send_images_limits_count_the_history_and_name_the_argument():
    url = "https://example.org/a.png"
    with V2Server(default=sse(events_body(text_events(["ok"])))) as srv:
        chat = Conversation(model=VISION)
        chat.send("first", backend=_v2(srv), images=[url] * 15)
        with pytest.raises(ValidationError) as err:
            chat.send("second", backend=_v2(srv), images=[url] * 6)
        assert err.value.field == "images" and "at most 20" in str(err.value)
        assert len(chat) == 1 and len(srv.requests) == 1  # nothing sent, nothing recorded


def test_dataframe_has_placeholders_and_thinking_json_keeps_everything():
    reasoning = (
        Path(__file__).parents[1] / "fixtures" / "built" / "va_reasoning_stream.sse"
    ).read_bytes()
    arr = np.zeros((480, 640, 3), dtype=np.uint8)
    with V2Server(default=sse(reasoning)) as srv:
        chat = Conversation(model=VISION)
        chat.send("What is in it?", backend=_v2(srv), images=[arr], thinking={"type": "enabled"})
    df = chat.to_dataframe()
    user, assistant = df.iloc[0], df.iloc[1]
    shown = json.dumps(df.to_dict(orient="records"), default=str, ensure_ascii=False)
    assert "base64" not in shown  # no megabytes of base64 in the table
    assert placeholder(image_block(arr)) in shown
    assert json.loads(user["images"]) == [placeholder(image_block(arr))]
    assert __import__("pandas").isna(user["thinking"])
    assert assistant["thinking"].startswith("The user is asking")
    assert assistant["text"] == "The answer to 2 + 2 is 4."
    again = Conversation.from_json(chat.to_json())
    assert again.messages == chat.messages  # JSON export: the real blocks, round trip
    assert again.messages[0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    # the DataFrame says where an image was, it does not pretend to hold it
    back = Conversation.from_dataframe(df)
    assert back.messages[0]["content"][1] == {"type": "text", "text": placeholder(image_block(arr))}
    assert back.messages[1] == chat.messages[1]  # thinking kept in the assistant message


# -- the embedded engine refuses what it cannot take ---------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"images": [PIXEL]}, "messages[0].content[1].type"),
        ({"thinking": {"type": "enabled"}}, "thinking.type"),
    ],
)
def test_local_engine_refuses_images_and_thinking_conversation_unchanged(kwargs, field):
    chat = Conversation()
    with pytest.raises(ValidationError) as err:
        chat.send("What is this?", backend=LocalBackend(), **kwargs)
    assert err.value.field == field
    assert "smollm2-135m" in str(err.value)
    assert len(chat) == 0 and chat.messages == []


@pytest.mark.engine
def test_local_engine_accepts_thinking_disabled():
    chat = Conversation()
    turn = chat.send("Hi", backend=LocalBackend(), thinking={"type": "disabled"}, max_tokens=3)
    assert turn.status == "complete" and turn.params["thinking"] == {"type": "disabled"}


def test_serve_answers_400_in_cohere_shape_naming_the_field():
    base = {"model": "smollm2-135m", "stream": True}
    image_msg = {"role": "user", "content": [{"type": "text", "text": "what?"}, image_block(PIXEL)]}
    with run_server(create_app(LocalBackend())) as url:
        status, headers, body = post(url, {**base, "messages": [image_msg]})
        assert status == 400 and headers["content-type"].startswith("application/json")
        err = json.loads(body)
        assert set(err) == {"id", "message"}
        assert "messages[0].content[1].type" in err["message"] and "smollm2-135m" in err["message"]
        status, _, body = post(
            url,
            {
                **base,
                "messages": [{"role": "user", "content": "hi"}],
                "thinking": {"type": "enabled"},
            },
        )
        assert status == 400 and "thinking.type" in json.loads(body)["message"]


@pytest.mark.engine
def test_serve_accepts_thinking_disabled_on_the_embedded_engine():
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Hi"}],
        "thinking": {"type": "disabled"},
        "max_tokens": 3,
    }
    with run_server(create_app(LocalBackend())) as url:
        status, _, raw = post(url, body, timeout=120)
    assert status == 200, raw
    assert json.loads(raw)["message"]["role"] == "assistant"


def test_serve_passes_thinking_and_images_to_a_backend_that_takes_them():
    echo = EchoBackend()
    image_msg = {"role": "user", "content": [{"type": "text", "text": "what?"}, image_block(PIXEL)]}
    body = {
        "model": "echo-1",
        "messages": [image_msg],
        "thinking": {"type": "enabled", "token_budget": 64},
    }
    with run_server(create_app(echo)) as url:
        status, _, raw = post(url, body)
    assert status == 200, raw
    assert echo.requests[-1]["thinking"] == {"type": "enabled", "token_budget": 64}
    assert echo.requests[-1]["messages"][0]["content"][1] == image_block(PIXEL)


# -- OpenAI-compatible servers that reason -------------------------------------------------------------
def _openai_sse(chunks: list[dict]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


def _chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "Qwen/Qwen3-0.6B",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
    }


VLLM_REASONING = [
    _chunk({"role": "assistant", "content": ""}),
    *[_chunk({"reasoning_content": p}) for p in ["Okay, ", "2 + 2 ", "is 4."]],
    *[_chunk({"content": p}) for p in ["The answer ", "is 4."]],
    _chunk({}, "stop", stop_reason=None),
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
]


def test_openai_backend_streams_vllm_reasoning_content_as_thinking():
    with V2Server(default=sse(_openai_sse(VLLM_REASONING))) as srv:
        backend = OpenAIBackend(base_url=srv.url, model="Qwen/Qwen3-0.6B")
        request = {
            "model": "Qwen/Qwen3-0.6B",
            "messages": [{"role": "user", "content": "2 + 2?"}],
            "thinking": {"type": "enabled"},
        }
        events = list(backend.stream(request))
        sent = srv.last.json
    check_order(events)
    starts = [e for e in events if e["type"] == "content-start"]
    assert [s["delta"]["message"]["content"]["type"] for s in starts] == ["thinking", "text"]
    assert [s["index"] for s in starts] == [0, 1]
    acc = Accumulator()
    for e in events:
        acc.feed(e)
    assert acc.message["content"] == [
        {"type": "thinking", "thinking": "Okay, 2 + 2 is 4."},
        {"type": "text", "text": "The answer is 4."},
    ]
    assert acc.finish_reason == "COMPLETE"
    assert sent["chat_template_kwargs"] == {"enable_thinking": True, "thinking": True}


def test_openai_backend_thinking_disabled_and_newer_reasoning_field():
    chunks = [_chunk({"reasoning": "hmm"}), _chunk({"content": "ok"}), _chunk({}, "stop")]
    with V2Server(default=sse(_openai_sse(chunks))) as srv:
        backend = OpenAIBackend(base_url=srv.url, model="m")
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        acc = Accumulator()
        for e in backend.stream({**request, "thinking": {"type": "disabled"}}):
            acc.feed(e)
        assert _chat_requests(srv)[-1].json["chat_template_kwargs"] == {
            "enable_thinking": False,
            "thinking": False,
        }
        assert acc.thinking == "hmm" and acc.text == "ok"
        list(backend.stream(request))
        # nothing asked, nothing sent
        assert "chat_template_kwargs" not in _chat_requests(srv)[-1].json


def _chat_requests(srv):
    """The chat requests only: a stream without usage also asks the tokenize endpoints."""
    return [r for r in srv.requests if r.path.endswith("/chat/completions")]
