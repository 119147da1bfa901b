"""compose.build_request: the one request path (what the runner sends is what compose built)."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from nbchat.backends.base import Cancel
from nbchat.compose import build_request, round_request
from nbchat.conversation import Conversation, Turn
from nbchat.errors import ValidationError
from nbchat.protocol.events import StreamBuilder
from nbchat.runner import start_turn


class ScriptBackend:
    """A real Backend: answers every request with a short text (or one tool call first)."""

    name = "script"

    def __init__(self, text: str = "ok", tool_call: tuple[str, str] | None = None) -> None:
        self.text = text
        self.tool_call = tool_call
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def models(self) -> list[str]:
        return ["script-1"]

    def stream(self, request: dict[str, Any], cancel: Cancel | None = None) -> Any:
        with self.lock:
            self.requests.append(copy.deepcopy(request))
            first = len(self.requests) == 1
        b = StreamBuilder()
        yield b.start()
        if self.tool_call and first:
            name, args = self.tool_call
            yield b.tool_call_start("call_1", name, args)
            yield b.tool_call_end()
            yield from b.end("TOOL_CALL")
            return
        yield from b.text(self.text)
        yield from b.end("COMPLETE")


def _conv_with_history() -> Conversation:
    conv = Conversation(system="Be terse.")
    conv.add_turn(
        Turn(
            [{"role": "user", "content": "Q1"}],
            [{"role": "assistant", "content": "A1"}],
            cell={"cell_id": "c1"},
        )
    )
    conv.add_turn(
        Turn(
            [{"role": "user", "content": "Q2"}],
            [{"role": "assistant", "content": "A2"}],
            cell={"cell_id": "c2"},
        )
    )
    return conv


def test_runner_sends_exactly_the_composed_request() -> None:
    conv = _conv_with_history()
    backend = ScriptBackend()
    params = {"model": "m", "temperature": 0.2, "max_tokens": 9}
    composed = build_request(conv, "Q3", params, backend=backend, cell={"cell_id": "c3"})
    start_turn(conv, backend, "Q3", params, cell={"cell_id": "c3"}, background=False)
    assert backend.requests == [composed.request]
    assert composed.request["stream"] is True
    assert [m["content"] for m in composed.request["messages"]] == [
        "Be terse.",
        "Q1",
        "A1",
        "Q2",
        "A2",
        "Q3",
    ]
    assert conv.last.params == composed.params and "messages" not in composed.params


def test_system_rule() -> None:
    conv = _conv_with_history()
    # no "system" key: the conversation's prompt is used as is
    r = build_request(conv, "x", {"model": "m"})
    assert r.request["messages"][0] == {"role": "system", "content": "Be terse."}
    assert r.system == "Be terse." and not r.sets_system
    # a new system prompt replaces the conversation's, in this very request
    r = build_request(conv, "x", {"model": "m", "system": "Be loud."})
    roles = [m["role"] for m in r.request["messages"]]
    assert roles.count("system") == 1 and r.request["messages"][0]["content"] == "Be loud."
    assert r.sets_system and r.system == "Be loud."
    # system=None / "" clears it
    for empty in (None, ""):
        r = build_request(conv, "x", {"model": "m", "system": empty})
        assert all(m["role"] != "system" for m in r.request["messages"])
        assert r.sets_system and r.system is None
    # composing changes nothing; the runner stores the new prompt with the turn
    assert conv.system == "Be terse."
    backend = ScriptBackend()
    start_turn(conv, backend, "x", {"model": "m", "system": "Be loud."}, background=False)
    assert conv.system == "Be loud."
    assert backend.requests[0]["messages"][0] == {"role": "system", "content": "Be loud."}


def test_no_conversation_dry_run_shape() -> None:
    r = build_request(None, "hi", {"model": "m", "system": "S"})
    assert r.request["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
    ]


def test_cell_rerun_sees_only_history_before_it() -> None:
    conv = _conv_with_history()
    r = build_request(conv, "Q1 again", {"model": "m"}, cell={"cell_id": "c1"})
    assert r.replaces == 0
    assert [m["content"] for m in r.request["messages"]] == ["Be terse.", "Q1 again"]
    backend = ScriptBackend()
    start_turn(conv, backend, "Q1 again", {"model": "m"}, cell={"cell_id": "c1"}, background=False)
    assert backend.requests == [r.request]
    assert [t.prompt for t in conv.turns] == ["Q1 again", "Q2"]


def test_model_from_the_policy_and_missing_model() -> None:
    from nbchat.backends.registry import default_model, register_backend, unregister_backend

    with pytest.raises(ValidationError) as e:  # an unregistered backend gets no model
        build_request(None, "x", {}, backend=ScriptBackend())
    assert e.value.field == "model"
    with pytest.raises(ValidationError) as e:
        build_request(None, "x", {})
    assert e.value.field == "model"
    register_backend("script", ScriptBackend)  # registered: no default -> first served model
    try:
        r = build_request(None, "x", {}, backend=ScriptBackend())
        assert r.request["model"] == "script-1" and default_model("script") == ""
        r = build_request(None, "x", {"model": "explicit"}, backend=ScriptBackend())
        assert r.request["model"] == "explicit"
    finally:
        unregister_backend("script")


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def test_tools_functions_and_dicts() -> None:
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    r = build_request(None, "x", {"model": "m", "tools": [other]}, tools=[add])
    names = [t["function"]["name"] for t in r.request["tools"]]
    assert names == ["other", "add"] and set(r.functions) == {"add"}
    # the runner runs the composed function when the model calls it
    conv = Conversation()
    backend = ScriptBackend(tool_call=("add", '{"a": 2, "b": 3}'))
    turn = start_turn(conv, backend, "x", {"model": "m"}, tools=[add], background=False).turn
    assert turn.complete and len(backend.requests) == 2
    assert backend.requests[1] == round_request(turn.params, turn.messages[:-1])
    assert turn.output[1]["content"][0]["document"]["data"] == {"result": 5}


def test_bad_value_changes_nothing() -> None:
    conv = _conv_with_history()
    before = conv.to_dict()
    with pytest.raises(ValidationError) as e:
        start_turn(conv, ScriptBackend(), "x", {"model": "m", "temperature": 7}, background=False)
    assert e.value.field == "temperature"
    assert conv.to_dict() == before
