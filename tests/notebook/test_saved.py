"""What a saved notebook keeps of a turn and of a panel (application/vnd.nbchat.*+json + fallbacks).

The browser side (the extension drawing these without a kernel) is tests/e2e/test_browser_saved.py.
"""

from __future__ import annotations

import json

import pytest
from test_view import SAMPLE, feed, recorded, stream_events  # noqa: F401

from nbchat.conversation import Conversation
from nbchat.notebook.panel import Panel
from nbchat.notebook.render import render_markdown
from nbchat.notebook.saved import PANEL_MIME, TURN_MIME, WIDGET_MIME, doc_from_turn
from nbchat.notebook.view import TurnView

pytestmark = pytest.mark.usefixtures("recorded")  # comms record instead of sending


def _data(bundle):
    return bundle[0] if isinstance(bundle, tuple) else bundle


def test_finished_turn_bundle_holds_the_turn_and_fallbacks() -> None:
    view = TurnView("explain <b>gd</b>", params={"temperature": 0.3})
    live = _data(view._repr_mimebundle_())
    assert {WIDGET_MIME, TURN_MIME, "text/plain"} <= set(live)
    assert "text/html" not in live  # not before the turn ends
    feed(view, stream_events(SAMPLE))
    data = _data(view._repr_mimebundle_())
    assert {WIDGET_MIME, TURN_MIME, "text/html", "text/markdown", "text/plain"} <= set(data)
    doc = data[TURN_MIME]
    assert doc["prompt"] == "explain <b>gd</b>" and doc["params"] == {"temperature": 0.3}
    state = doc["state"]
    assert "".join(state["blocks"]) + state["tail"] == render_markdown(SAMPLE)
    assert state["meta"]["status"] == "done" and state["meta"]["stats"]["finish"] == "COMPLETE"
    # no JS/CSS in the output: a turn costs its text (here ~1 KB) a few times, well under 8 KB
    size = len(json.dumps(data))
    assert size < 4 * len(SAMPLE.encode()) + 2048, size
    assert "nbchat-turn {" not in json.dumps(data) and "export default" not in json.dumps(data)


def test_doc_from_a_finished_turn_without_a_view() -> None:
    turn = {
        "prompt": "hi",
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "<script>x</script> **yo**"}],
            },
        ],
        "finish_reason": "MAX_TOKENS",
        "usage": {"tokens": {"input_tokens": 3, "output_tokens": 5}},
        "cancelled": True,
    }
    doc = doc_from_turn(turn)
    st = doc["state"]
    assert st["meta"]["status"] == "stopped" and "error" not in st["meta"]
    assert st["meta"]["stats"] == {"tokens": 5, "input_tokens": 3, "finish": "MAX_TOKENS"}
    assert "<script>" not in st["blocks"][0] and "&lt;script&gt;" in st["blocks"][0]


def test_panel_bundle_holds_its_transcript() -> None:
    conv = Conversation()
    panel = Panel(conv)
    data = _data(panel._repr_mimebundle_())
    assert {WIDGET_MIME, PANEL_MIME, "text/html", "text/markdown", "text/plain"} <= set(data)
    assert data[PANEL_MIME] == {"turns": [], "footer": "0 turns"}
    view = TurnView("hello panel")
    feed(view, stream_events("Panel reply."))
    panel.views.append(view)
    data = _data(panel._repr_mimebundle_())
    turns = data[PANEL_MIME]["turns"]
    assert [t["prompt"] for t in turns] == ["hello panel"]
    assert "Panel reply." in "".join(turns[0]["state"]["blocks"]) + turns[0]["state"]["tail"]
    assert "Panel reply." in data["text/html"] and "hello panel" in data["text/plain"]


def test_prebuilt_extension_is_built_from_the_current_view() -> None:
    """nbchat/labextension bundles js/view.*: a change there needs `bash labext/build.sh`."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    lines = (root / "nbchat" / "labextension" / "sources.sha256").read_text().split("\n")
    for line in filter(None, lines):
        digest, name = line.split(maxsplit=1)
        now = hashlib.sha256((root / name).read_bytes()).hexdigest()
        assert now == digest, (
            f"{name} changed after the extension was built: run `bash labext/build.sh` and "
            "commit nbchat/labextension (saved notebooks draw turns with that copy)"
        )
