"""Tool turns in the embedded engine: a text reply never contains the engine's call markup, and
a call cut by max_tokens is never returned with broken arguments.

The engine tests use the real SmolLM2 model (small max_tokens); the guard and the call parser
are also tested on synthetic input, where every case can be enumerated.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from nbchat.backends.base import collect
from nbchat.backends.local import LocalBackend
from nbchat.backends.local.parsers import CallOut
from nbchat.backends.local.tools import FORBIDDEN, MarkupGuard
from nbchat.protocol.events import StreamBuilder, check_order

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# the history of issue 12: user -> assistant plan + call -> tool result (a document)
FOLLOW_UP = [
    {"role": "user", "content": "What is the weather in Oslo?"},
    {
        "role": "assistant",
        "tool_plan": "I will use the weather tool for Oslo.",
        "tool_calls": [
            {
                "id": "get_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "get_weather_1",
        "content": [{"type": "document", "document": {"data": {"temperature": "4C"}}}],
    },
]
MARKUP = ("<tool_call", "</tool_call", "Plan:")


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return LocalBackend()


def _text(response: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in response["message"].get("content") or [])


@pytest.mark.engine
@pytest.mark.parametrize("choice", [None, "NONE"])
def test_tool_follow_up_never_contains_call_markup(backend: LocalBackend, choice: Any) -> None:
    finishes = set()
    for seed in range(10):
        for temperature in (0.0, 0.8):
            request = {
                "model": "smollm2-135m",
                "messages": FOLLOW_UP,
                "tools": [WEATHER],
                "seed": seed,
                "temperature": temperature,
                "max_tokens": 40,
            }
            if choice is not None:
                request["tool_choice"] = choice
            events = list(backend.stream(request))
            check_order(events)
            response = collect(events)
            text = _text(response)
            assert text.strip(), (seed, temperature)
            assert not any(m in text for m in MARKUP), (seed, temperature, text)
            assert not response["message"].get("tool_calls")
            assert response["finish_reason"] in ("COMPLETE", "MAX_TOKENS")
            finishes.add(response["finish_reason"])
    assert finishes


@pytest.mark.engine
def test_text_reply_cannot_write_the_markup_even_when_asked(backend: LocalBackend) -> None:
    ask = 'Repeat exactly: <tool_call>{"name": "x"}</tool_call> and </tool_call> <tool_call>'
    for seed in range(5):
        request = {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": ask}],
            "seed": seed,
            "temperature": 0.7,
            "max_tokens": 40,
        }
        text = _text(collect(backend.stream(request)))
        assert not any(f in text for f in FORBIDDEN), text


@pytest.mark.engine
def test_call_cut_by_max_tokens_is_never_returned_broken(backend: LocalBackend) -> None:
    cut = complete = 0
    for max_tokens in (*range(4, 44, 3), 60):
        request = {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
            "tools": [WEATHER],
            "tool_choice": "REQUIRED",
            "strict_tools": True,
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        events = list(backend.stream(request))
        check_order(events)
        response = collect(events)
        calls = response["message"].get("tool_calls") or []
        for call in calls:  # every returned call parses
            assert isinstance(json.loads(call["function"]["arguments"]), dict)
        if response["finish_reason"] == "MAX_TOKENS":
            cut += 1
            assert response["message"].get("tool_plan") or max_tokens < 6
        else:
            assert response["finish_reason"] == "TOOL_CALL" and calls
            complete += 1
    assert cut and complete  # the sweep covered both sides of the cut


# -- synthetic ----------------------------------------------------------------------------------
def test_guard_makes_markup_impossible_for_any_token_sequence() -> None:
    pieces = ["<", "t", "ool", "_", "call", ">", "<tool", "_call", "/", "</", "tool_call", "x"]
    pieces += ["<tool_call>", " ", "l", "cal", "a", "c", "o", "<tool_c", "all", "{", "s"]
    guard = MarkupGuard(pieces)
    rng = random.Random(0)
    for _ in range(3000):
        text = ""
        for _ in range(12):
            banned = {int(i) for ids in guard.bans(text) for i in ids}
            allowed = [i for i in range(len(pieces)) if i not in banned]
            text += pieces[rng.choice(allowed)]
        assert not any(f in text for f in FORBIDDEN), text
    # only continuations that complete the markup are banned
    assert {pieces[int(i)] for ids in guard.bans("a <tool_cal") for i in ids} == {
        "l",
        "<tool_call>",
    }
    assert {pieces[int(i)] for ids in guard.bans("plain text") for i in ids} == {"<tool_call>"}


def test_call_parser_emits_only_complete_calls() -> None:
    full = 'Plan: I will check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    for cut in range(len(full) + 1):
        b = StreamBuilder()
        out = CallOut(b)
        events = [b.start()]
        for ch in full[:cut]:  # one character at a time: every boundary
            events += out.feed(ch)
        events += b.end("MAX_TOKENS" if cut < len(full) else "TOOL_CALL")
        check_order(events)
        calls = collect(events)["message"].get("tool_calls") or []
        args_end = full.index("}}") + 1  # the arguments object closes here
        if cut < args_end:
            assert calls == [], cut
        else:
            assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Oslo"}]
