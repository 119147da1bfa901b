"""Continue and Regenerate on panel turns (the buttons of the turn's view, clicked through the
view's front-end message), against the scripted v2 server."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from IPython.utils.capture import capture_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

import nbchat.history  # noqa: E402, F401  (imported here, not first by two threads at once)
from nbchat.backends import get_backend  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402
from nbchat.notebook.panel import Panel  # noqa: E402


def reply(*pieces: str, finish: str = "COMPLETE", id: str = "gen-1") -> Any:
    return sse(events_body(text_events(list(pieces), id=id, finish_reason=finish)))


@pytest.fixture
def server():
    srv = V2Server(default=reply("Hello ", "there."))
    yield srv
    srv.close()


@pytest.fixture
def panel(server) -> Panel:
    backend = get_backend("v2", base_url=server.url, api_key="k-test")
    return Panel(Conversation(backend=backend, model="command-a-03-2025"), backend=backend)


def settle(panel: Panel, view: Any) -> None:
    """Until the view's on_done ran (it follows the turn's end: the buttons are set then)."""
    panel._handle.wait(20)
    for _ in range(400):
        if view._done:
            return
        time.sleep(0.05)
    raise AssertionError("the view never finished")


def send(panel: Panel, text: str) -> Any:
    with capture_output():
        view = panel.send(text)
        settle(panel, view)
    return view


def click(panel: Panel, view: Any, kind: str) -> None:
    with capture_output():
        view._on_frontend_msg(view, {"type": kind}, None)  # what the button sends
        settle(panel, view)


def offered(view: Any) -> list[str]:
    return list(view.snapshot()["meta"].get("actions") or [])


def test_continue_after_max_tokens_grows_the_same_panel_turn(panel, server):
    server.push(reply("def f(x):\n", "    return", finish="MAX_TOKENS", id="gen-a"))
    view = send(panel, "write f")
    turn = panel.conversation.last
    assert turn.finish_reason == "MAX_TOKENS"
    assert offered(view) == ["continue", "regenerate"]
    server.push(reply(" x * 2\n", id="gen-b"))
    click(panel, view, "continue")
    assert panel.conversation.last is turn and len(panel.conversation) == 1
    assert turn.text == "def f(x):\n    return x * 2\n" and turn.response_ids == ["gen-a", "gen-b"]
    assert "return x * 2" in view.text  # streamed into the same view
    assert offered(view) == ["regenerate"]  # nothing cut any more
    assert "(20 in / 3 out)" in panel.footer.value  # the footer followed: usage summed


def test_regenerate_replaces_the_last_panel_turn_and_keeps_the_old_one(panel, server):
    first = send(panel, "one")
    assert panel.stop_button.disabled  # a fast turn: Stop is not left enabled
    view = send(panel, "two")
    assert offered(view) == ["regenerate"]
    n = len(server.requests)
    click(panel, first, "regenerate")  # no longer the last turn (as in a %%chat view):
    assert offered(first) == [] and len(server.requests) == n  # the buttons go, nothing sent
    old = panel.conversation.last
    server.push(reply("Another ", "answer.", id="gen-r"))
    click(panel, view, "regenerate")
    new = panel.conversation.last
    assert new is not old and new.text == "Another answer." and len(panel.conversation) == 2
    assert [t.id for t in new.alternatives] == [old.id]
    sent = server.last.json["messages"]
    assert sent[-1] == {"role": "user", "content": "two"} and len(sent) == 3
    assert view.text == "Another answer."  # the same view shows the new reply
    assert panel.stop_button.disabled  # the panel saw the run end
