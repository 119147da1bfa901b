"""Continue and Regenerate on a real Conversation against the real v2 HTTP test server."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from v2server import V2Server, events_body, sse, text_events

from nbchat import Conversation
from nbchat.backends import get_backend
from nbchat.errors import ValidationError


def reply(*pieces: str, finish: str = "COMPLETE", id: str = "gen-1", delay: float = 0.0) -> Any:
    return sse(events_body(text_events(list(pieces), id=id, finish_reason=finish)), delay=delay)


@pytest.fixture
def server():
    with V2Server() as srv:
        yield srv


@pytest.fixture
def backend(server):
    return get_backend("v2", base_url=server.url, api_key="test-key")


def assistants(conv: Conversation) -> list[dict[str, Any]]:
    return [m for m in conv.messages if m["role"] == "assistant"]


def test_continue_after_max_tokens_grows_the_same_turn(server, backend):
    conv = Conversation(backend=backend, model="command-a-03-2025")
    server.push(reply("def f(x):\n", "    return", finish="MAX_TOKENS", id="gen-a"))
    turn = conv.send("write f", max_tokens=5)
    assert turn.finish_reason == "MAX_TOKENS" and turn.status == "complete"
    before = dict(turn.usage["tokens"])
    server.push(reply(" x * 2\n", id="gen-b"))
    same = conv.continue_()
    assert same is turn and len(conv) == 1
    assert turn.text == "def f(x):\n    return x * 2\n"
    assert turn.finish_reason == "COMPLETE" and turn.status == "complete"
    assert turn.response_ids == ["gen-a", "gen-b"]
    assert turn.usage["tokens"]["output_tokens"] > before["output_tokens"]
    assert [display for display in assistants(conv)] == [conv.messages[-1]]  # ONE assistant message
    req = server.requests[-1].json
    assert req["max_tokens"] == 5  # the turn's own settings
    roles = [m["role"] for m in req["messages"]]
    assert roles == ["user", "assistant", "user"]  # the cut reply, then "continue"
    assert "Continue exactly where" in req["messages"][-1]["content"]
    d = conv.to_dict()
    assert Conversation.from_dict(d)[0].text == turn.text


def test_continue_after_stop(server, backend):
    conv = Conversation(backend=backend, model="command-a-03-2025")
    server.push(reply(*[f"w{i} " for i in range(200)], delay=0.02))
    turn = conv.send("long", wait=False)
    while not turn.text:
        pass
    conv.cancel()
    conv.wait()
    assert turn.status == "cancelled" and conv.messages == []
    cut = turn.text
    server.push(reply("END"))
    conv.continue_()
    assert turn.status == "complete" and turn.text == cut + "END"
    assert len(assistants(conv)) == 1


def test_continue_refused_when_nothing_was_cut(server, backend):
    conv = Conversation(backend=backend, model="command-a-03-2025")
    with pytest.raises(ValidationError, match="continue"):
        conv.continue_()
    server.push(reply("done"))
    conv.send("hi")
    with pytest.raises(ValidationError, match="MAX_TOKENS"):
        conv.continue_()
    assert len(server.requests) == 1


def test_regenerate_replaces_the_last_turn_and_keeps_the_old_one(server, backend):
    conv = Conversation(backend=backend, model="command-a-03-2025")
    server.push(reply("first"), reply("second"), reply("third"))
    conv.send("one")
    old = conv.send("two", temperature=0.3)
    new = conv.regenerate()
    assert len(conv) == 2 and conv.last is new and new is not old
    assert new.text == "third" and [a.text for a in new.alternatives] == ["second"]
    assert server.requests[-1].json["temperature"] == 0.3  # the same settings
    assert server.requests[-1].json["messages"][-1] == {"role": "user", "content": "two"}
    assert [m["content"] for m in conv.messages if m["role"] == "user"] == ["one", "two"]
    server.push(reply("fourth"))
    newer = conv.regenerate(temperature=0.9)
    assert server.requests[-1].json["temperature"] == 0.9
    assert [a.text for a in newer.alternatives] == ["second", "third"]
    back = Conversation.from_dict(conv.to_dict())
    assert [a.text for a in back.last.alternatives] == ["second", "third"]


def test_regenerate_keyed_turn_is_replaced_in_place(server, backend):
    conv = Conversation(backend=backend, model="command-a-03-2025")
    server.push(reply("a"), reply("b"))
    conv.send("q", cell={"cell_id": "c1", "execution_count": 1})
    new = conv.regenerate()
    assert len(conv) == 1 and new.cell["cell_id"] == "c1" and new.alternatives[0].text == "a"


def test_regenerate_refused_then_nothing_lost(server, backend):
    conv = Conversation(backend=backend, model="command-a-03-2025")
    with pytest.raises(ValidationError, match="regenerate"):
        conv.regenerate()
    server.push(reply("a"))
    conv.send("q")
    with pytest.raises(ValidationError):
        conv.regenerate(temperature=9)  # out of range: refused before sending
    assert len(conv) == 1 and conv.last.text == "a" and len(server.requests) == 1


@pytest.fixture
def ip(server, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "test-key")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    shell.run_line_magic("config", "NbChat.backend = 'v2'")
    shell.run_line_magic("config", f"NbChat.base_url = '{server.url}'")
    shell.run_line_magic("config", "NbChat.model = 'command-a-03-2025'")
    yield shell
    shell.run_line_magic("unload_ext", "nbchat")
    InteractiveShell.clear_instance()


def test_chat_continue_and_regenerate_commands(ip, server):
    server.push(reply("half", finish="MAX_TOKENS"), reply(" whole"), reply("again"))
    with capture_output():
        ip.run_cell("%%chat --max-tokens 3\nq").raise_error()
        ip.run_cell("%chat continue").raise_error()
    conv = ip.user_ns["chat"]
    assert len(conv) == 1 and conv.last.text == "half whole"
    with capture_output() as cap:
        ip.run_cell("%chat regenerate").raise_error()
    assert conv.last.text == "again" and conv.last.alternatives[0].text == "half whole"
    assert any("again" in str(o.data) for o in cap.outputs)  # shown (static bundle)
    with capture_output():
        res = ip.run_cell("%chat continue")
    assert isinstance(res.error_in_exec, UsageError) and "MAX_TOKENS" in str(res.error_in_exec)


def test_view_buttons_continue_then_regenerate_in_the_same_view(ip, server, monkeypatch):
    from nbchat.notebook.view import TurnView

    shown: list[TurnView] = []
    display = TurnView.display
    monkeypatch.setattr(TurnView, "display", lambda self: (shown.append(self), display(self))[1])
    ip.run_line_magic("config", "NbChat.live = 'always'")
    server.push(reply("```python\n", "def f(x):\n", "    return", finish="MAX_TOKENS"))
    with capture_output():
        ip.run_cell("%%chat --max-tokens 4\nwrite f").raise_error()
    conv = ip.user_ns["chat"]
    conv.wait()
    [view] = shown
    assert view.snapshot()["meta"]["actions"] == ["continue", "regenerate"]
    server.push(reply(" x * 2\n", "```\n"))
    view._on_frontend_msg(view, {"type": "continue"}, [])  # what the button sends
    conv.wait()
    turn = conv.last
    assert len(conv) == 1 and turn.text == "```python\ndef f(x):\n    return x * 2\n```\n"
    assert view.text == turn.text  # the same view grew (one code block, not two)
    snap = view.snapshot()
    assert snap["meta"]["status"] == "done" and snap["meta"]["actions"] == ["regenerate"]
    assert "return x * 2" in "".join(snap["blocks"]) + snap["tail"]
    server.push(reply("fresh"))
    view._on_frontend_msg(view, {"type": "regenerate"}, [])
    conv.wait()
    assert conv.last.text == "fresh" and view.text == "fresh"
    assert conv.last.alternatives[0].text == turn.text
    assert server.requests[-1].json["max_tokens"] == 4
