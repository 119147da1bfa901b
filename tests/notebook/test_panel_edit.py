"""Panel Edit and resend, against the scripted v2 server: the resent request ends with the
edited prompt and holds none of the later turns; the old turns stay reachable in the record."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from IPython.utils.capture import capture_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat.backends import get_backend  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402
from nbchat.errors import ValidationError  # noqa: E402
from nbchat.notebook.panel import Panel  # noqa: E402


@pytest.fixture
def server():
    srv = V2Server(default=sse(events_body(text_events(["Hello ", "there."]))))
    yield srv
    srv.close()


@pytest.fixture
def panel(server) -> Panel:
    backend = get_backend("v2", base_url=server.url, api_key="k-test")
    return Panel(Conversation(backend=backend), backend=backend)


def _send(panel: Panel, text: str) -> Any:
    with capture_output():
        view = panel.send(text)
        assert view is not None, panel.status.value
        panel._handle.wait(20)
    return view


def _chats(server: V2Server) -> list[Any]:
    return [r for r in server.requests if r.method == "POST"]


def _texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for m in messages:
        c = m.get("content")
        text = c if isinstance(c, str) else "".join(b.get("text", "") for b in c or [])
        out.append((m["role"], text))
    return out


def test_edit_and_resend_drops_later_turns_from_the_request_and_keeps_them(panel, server):
    for q in ("first question", "second question", "third question"):
        _send(panel, q)
    old = [t.id for t in panel.conversation.turns]
    assert len(_chats(server)) == 3

    panel.edit_controls.begin(1)  # the Edit button on turn 2
    assert panel.prompt.value == "second question"
    assert panel.editing == 1 and panel.send_button.description == "Resend"
    panel.prompt.value = "second question, edited"
    with capture_output():
        view = panel.send()  # Send in edit mode resends
        assert view is not None, panel.status.value
        panel._handle.wait(20)

    sent = _texts(server.last.json["messages"])
    assert sent[-1] == ("user", "second question, edited")
    assert sent[:-1] == [("user", "first question"), ("assistant", "Hello there.")]
    assert not any("second question" == t or "third question" in t for _, t in sent)

    turns = panel.conversation.turns
    assert [t.id for t in turns[:1]] == old[:1] and len(turns) == 2
    new = turns[-1]
    assert new.status == "complete" and new.input[-1]["content"] == "second question, edited"
    assert [t.id for t in new.alternatives] == [old[1]]  # the edited turn, with its reply
    assert new.alternatives[0].text == "Hello there."
    assert [t.id for t in new.dropped] == [old[2]]  # the later turn, kept
    assert new.dropped[0].input[-1]["content"] == "third question"
    # the record survives a round trip (and so the history store, which keeps to_dict)
    back = Conversation.from_json(panel.conversation.to_json())
    assert [t.id for t in back.turns[-1].dropped] == [old[2]]
    # the transcript: the turn before, then the resent one; edit mode is over
    assert len(panel.transcript.children) == 2 and panel.transcript.children[-1] is view
    assert panel.editing is None and panel.send_button.description == "Send"
    # the conversation goes on from the edited branch
    _send(panel, "fourth")
    sent = _texts(server.last.json["messages"])
    assert [t for _, t in sent] == [
        "first question",
        "Hello there.",
        "second question, edited",
        "Hello there.",
        "fourth",
    ]


def test_conversation_edit_and_bad_input(server):
    conv = Conversation(backend=get_backend("v2", base_url=server.url, api_key="k-test"))
    conv.send("a")
    conv.send("b")
    with pytest.raises(ValidationError, match="index"):
        conv.edit(5, "x")
    with pytest.raises(ValidationError, match="prompt"):
        conv.edit(0, "  ")
    assert len(_chats(server)) == 2 and len(conv.turns) == 2  # nothing sent, nothing lost
    new = conv.edit(0, "a2")
    assert _texts(server.last.json["messages"]) == [("user", "a2")]
    assert [t.input[-1]["content"] for t in new.alternatives + new.dropped] == ["a", "b"]
    assert len(conv.turns) == 1


def test_cancel_edit_leaves_edit_mode_and_sends_normally(panel, server):
    _send(panel, "one")
    panel.edit_controls.begin(0)
    panel.edit_controls.cancel()
    assert panel.editing is None and panel.prompt.value == ""
    _send(panel, "two")
    assert [t for _, t in _texts(server.last.json["messages"])] == ["one", "Hello there.", "two"]
