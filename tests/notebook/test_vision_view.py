"""The live view's state for a reasoning turn: thinking/answer token split, cached tokens, and
THINKING_CONTENT citations kept with the thinking (not applied to the answer's offsets)."""

from __future__ import annotations

from pathlib import Path

from nbchat.notebook.render import static_bundle
from nbchat.notebook.turnstate import TurnState
from nbchat.protocol import decode_all
from nbchat.protocol.events import StreamBuilder, usage_dict

BODY = (Path(__file__).parents[1] / "fixtures" / "built" / "va_reasoning_stream.sse").read_bytes()
DOC = {"type": "document", "id": "doc:0", "document": {"id": "doc:0", "title": "Arithmetic"}}


def test_stats_split_thinking_and_answer_and_show_cached_tokens():
    st = TurnState()
    for ev in decode_all(BODY):
        st.feed(ev)
    stats = st.stats(final=True)
    assert stats["thinking_tokens"] == 36 and stats["answer_tokens"] == 9
    assert stats["tokens"] == 54 and stats["input_tokens"] == 1394
    assert stats["cached_tokens"] == 1360
    live = st.stats()
    assert "cached_tokens" not in live and live["thinking_tokens"] == 36


def test_thinking_count_is_sent_while_it_streams():
    st = TurnState()
    events = decode_all(BODY)
    for ev in events[:12]:  # message-start, content-start (thinking), 10 thinking deltas
        st.feed(ev)
    assert st.patch()["m"]["think_n"] == 10
    for ev in events[12:20]:
        st.feed(ev)
    assert st.patch()["m"]["think_n"] == 18


def test_plain_turn_has_no_thinking_stats():
    b = StreamBuilder("x")
    st = TurnState()
    for ev in [b.start(), *b.text("Hi there"), *b.end("COMPLETE", usage_dict(3, 2))]:
        st.feed(ev)
    assert "thinking_tokens" not in st.stats(final=True)
    assert "cached_tokens" not in st.stats(final=True)


def _cited_turn_events():
    b = StreamBuilder("cited")
    thinking = "The doc says two plus two is four."
    text = "Four."
    events = [b.start(), *b.thinking(thinking), *b.text(text)]
    events += b.citation(
        {
            "start": 9,
            "end": 34,
            "text": thinking[9:34],
            "sources": [DOC],
            "type": "THINKING_CONTENT",
        }
    )
    events += b.citation(
        {"start": 0, "end": 5, "text": "Four.", "sources": [DOC], "type": "TEXT_CONTENT"}
    )
    events += b.end("COMPLETE", usage_dict(5, 9))
    return events


def test_thinking_citations_stay_with_the_thinking():
    st = TurnState()
    for ev in _cited_turn_events():
        st.feed(ev)
    msg = st.patch(final=True)
    assert len(msg["m"]["think_cits"]) == 1 and "Arithmetic" in msg["m"]["think_cits"][0]
    assert len(st.doc.sups) == 1  # only the answer's citation is a superscript in the answer


def test_static_bundle_lists_thinking_citations_apart():
    from nbchat.protocol import Accumulator

    acc = Accumulator()
    for ev in _cited_turn_events():
        acc.feed(ev)
    turn = {
        "prompt": "2 + 2?",
        "messages": [{"role": "user", "content": "2 + 2?"}, acc.message],
        "citations": acc.citations,
    }
    plain = static_bundle(turn)["text/plain"]
    assert plain.count("[1] ") == 1 and "[2] " not in plain
    assert "[thinking] " in plain


# -- the panel's thinking toggle and budget box ------------------------------------------------------
def test_panel_thinking_controls_follow_the_backend():
    import pytest

    from nbchat.conversation import Conversation
    from nbchat.errors import ValidationError
    from nbchat.notebook.panel import Panel

    panel = Panel(Conversation(), backend="v2")
    th = panel.thinking
    assert not th.toggle.disabled and th.note.value == ""
    assert "thinking" not in panel.request_params()  # default: not sent
    th.toggle.value = "on"
    assert panel.request_params()["thinking"] == {"type": "enabled"}
    th.budget.value = "256"
    assert panel.request_params()["thinking"] == {"type": "enabled", "token_budget": 256}
    th.toggle.value = "off"
    with pytest.raises(ValidationError) as err:
        panel.request_params()
    assert err.value.field == "thinking.token_budget"
    th.budget.value = ""
    assert panel.request_params()["thinking"] == {"type": "disabled"}
    th.budget.value = "0"
    th.toggle.value = "on"
    with pytest.raises(ValidationError, match="token_budget"):
        panel.request_params()
    # the embedded model cannot reason: disabled, with the reason shown, nothing sent
    panel.backend.value = "local"
    assert th.toggle.disabled and th.budget.disabled
    assert "smollm2-135m" in th.note.value and "cannot" in th.note.value
    assert "thinking" not in panel.request_params()
    panel.backend.value = "cohere"
    assert not th.toggle.disabled and th.note.value == ""


def test_conversation_repr_shows_image_placeholders_not_base64():
    import numpy as np

    from nbchat.conversation import Conversation
    from nbchat.images import image_block, placeholder

    block = image_block(np.zeros((48, 64, 3), dtype=np.uint8))
    conv = Conversation(
        [
            {"role": "user", "content": [{"type": "text", "text": "What is it?"}, block]},
            {"role": "assistant", "content": [{"type": "text", "text": "Black."}]},
        ]
    )
    for shown in (repr(conv), conv._repr_markdown_()):
        assert placeholder(block) in shown and "base64" not in shown


def test_saved_turn_document_keeps_the_thumbnails():
    import numpy as np

    from nbchat.images import image_block, thumbnail
    from nbchat.notebook.view import TurnView

    thumb = thumbnail(image_block(np.zeros((300, 400, 3), dtype=np.uint8)))
    view = TurnView("What is it?", params={"model": "m"}, images=[thumb, "[image https://x/y.png]"])
    assert view.doc()["images"] == [thumb, "[image https://x/y.png]"]
    assert "images" not in TurnView("plain").doc()
