"""The live view's Python side: safe rendering, incremental patches, coalescing, threads.

No kernel: widgets get a recording comm (a real `comm.base_comm.BaseComm` subclass that keeps
every message it would publish), so the tests see the exact bytes a front end would receive.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import comm
import pytest
from comm.base_comm import BaseComm

from nbchat.notebook.render import clean_text, render_markdown, static_bundle
from nbchat.notebook.view import StreamDoc, TurnView, apply_message
from nbchat.protocol.events import StreamBuilder, usage_dict

SAMPLE = """Sure! Here is a short overview of how **gradient descent** works, with an example.

Gradient descent is an iterative optimisation algorithm. At every step it computes the gradient
of the loss with respect to the parameters and moves them a small step the other way. The size
of that step is the *learning rate*: too large and updates overshoot, too small and it crawls.

- The gradient points uphill, so we subtract it.
- SGD estimates the gradient from a mini-batch.
- Momentum and Adam usually converge faster.

```python
def gradient_descent(grad, x0, lr=0.1, steps=100):
    x = float(x0)
    for _ in range(steps):
        x = x - lr * grad(x)
    return x
```

Running this prints a value close to `0`, the minimum of f(x) = x². Émoji too: 😀.
"""


class RecordingComm(BaseComm):
    """A comm that records what it would send to the front end."""

    def __init__(self, **kwargs: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        super().__init__(**kwargs)

    def publish_msg(
        self,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        self.sent.append({"msg_type": msg_type, "data": data})

    def custom(self) -> list[dict[str, Any]]:
        return [
            m["data"]["content"] for m in self.sent if (m["data"] or {}).get("method") == "custom"
        ]

    def custom_bytes(self) -> int:
        return sum(
            len(json.dumps(m["data"], separators=(",", ":"), ensure_ascii=False).encode())
            for m in self.sent
            if (m["data"] or {}).get("method") == "custom"
        )

    def updates(self) -> list[dict[str, Any]]:
        return [m["data"] for m in self.sent if (m["data"] or {}).get("method") == "update"]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[RecordingComm]:
    comms: list[RecordingComm] = []

    def create(*args: Any, **kwargs: Any) -> RecordingComm:
        c = RecordingComm(**kwargs)
        comms.append(c)
        return c

    monkeypatch.setattr(comm, "create_comm", create)
    return comms


def tokens_of(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def stream_events(
    text: str, citations: list[dict[str, Any]] = (), logprobs: bool = False
) -> list[dict[str, Any]]:
    b = StreamBuilder()
    events = [b.start()]
    for i, tok in enumerate(tokens_of(text)):
        lp = {"text": tok, "token_ids": [i], "logprobs": [-0.1 * (i % 5)]} if logprobs else None
        events += b.text(tok, lp)
    for c in citations:
        events += b.citation(c)
    events += b.end("COMPLETE", usage_dict(12, len(tokens_of(text))))
    return events


def feed(
    view: TurnView, events: list[dict[str, Any]], delay: float = 0.0, done: Any = None
) -> None:
    listener = view.listener()
    listener.on_start()
    for e in events:
        listener.on_event(e)
        if delay:
            time.sleep(delay)
    listener.on_done(done)


def rebuild(messages: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for m in messages:
        state = apply_message(state, m)
    return state


# -- rendering safety --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "evil, forbidden",
    [
        ("<script>alert(1)</script>", "<script"),
        ("<img src=x onerror=alert(1)>", "<img"),
        ('<a href="javascript:alert(1)">x</a>', "<a "),
        ("[click](javascript:alert(1))", "href"),
        ("[click](JaVaScRiPt:alert(1))", "href"),
        ("[click](vbscript:msgbox(1))", "href"),
        ("[click](data:text/html;base64,PHNjcmlwdD4=)", "href"),
        ("<javascript:alert(1)>", "href"),
        ("![pixel](https://evil.example/track.png)", "<img"),
        ("<iframe src=https://evil.example></iframe>", "<iframe"),
        ("<div onclick=alert(1)>x</div>", "<div"),
        ("<style>body{display:none}</style>", "<style"),
    ],
)
def test_untrusted_markup_renders_as_inert_text(evil: str, forbidden: str) -> None:
    out = render_markdown(f"before {evil} after")
    assert forbidden not in out.lower()
    assert "before" in out and "after" in out
    assert "onerror=" not in out or "&lt;" in out  # only ever as escaped text


def test_safe_links_get_rel_and_target() -> None:
    out = render_markdown("see [docs](https://docs.cohere.com/v2) or <mailto:a@b.c>")
    assert 'href="https://docs.cohere.com/v2"' in out
    assert 'rel="noopener noreferrer nofollow"' in out and 'target="_blank"' in out
    assert 'href="mailto:a@b.c"' in out


def test_control_and_bidi_characters_are_visible_and_inert() -> None:
    text = "bell\x07 esc\x1b[31m del\x7f c1\x85 rlo\u202eevil nul\x00 pua\ue123"
    out = render_markdown(text)
    for ch in "\x07\x1b\x7f\x85\u202e\x00\ue123":
        assert ch not in out
    assert "\u2407" in out and "\u241b" in out  # control pictures
    assert len(clean_text(text)) == len(text)  # one for one: citation offsets survive


def test_code_blocks_escape_and_keep_language() -> None:
    out = render_markdown("```python\nif a < b and '<script>':\n    pass\n```")
    assert '<code class="language-python">' in out
    assert "&lt;script&gt;" in out and "<script" not in out


def test_citations_become_superscripts_with_escaped_source() -> None:
    text = "The sky is green. Grass is blue."
    cits = [
        {
            "start": 11,
            "end": 16,
            "text": "green",
            "sources": [
                {
                    "type": "document",
                    "id": "doc:0",
                    "document": {
                        "id": "doc:0",
                        "title": 'a "quoted" <b>title</b>',
                        "text": "The sky is green.",
                    },
                }
            ],
        },
        {
            "start": 27,
            "end": 31,
            "text": "blue",
            "sources": [{"type": "tool", "id": "t:0", "tool_output": {"output": "blue"}}],
        },
    ]
    out = render_markdown(text, cits)
    assert out.count('class="nbchat-cite"') == 2
    assert "green<sup" in out and "blue<sup" in out and "[1]" in out and "[2]" in out
    assert "<b>title" not in out and "&lt;b&gt;title" in out and "&quot;quoted&quot;" in out


def test_citation_inside_a_link_never_changes_the_link() -> None:
    text = "[site](https://example.com/path) end"
    out = render_markdown(text, [{"start": 10, "end": 14, "sources": []}])
    assert 'href="https://example.com/path"' in out


# -- incremental patches -----------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 3, 17])
def test_patches_rebuild_exactly_the_full_render(step: int) -> None:
    text = SAMPLE * 3 + "\n> quote\n> more\n\n1. one\n2. two\n\n    indented code\n\nSetext\n---\n"
    doc, state = StreamDoc(), {}
    for i in range(0, len(text), step):
        doc.append(text[i : i + step])
        state = apply_message(state, {"o": doc.take_ops()})
    assert "".join(state["blocks"]) + state["tail"] == render_markdown(text) == doc.html()
    assert len(doc.blocks) > 5  # finished blocks were split off, the tail stayed small


def test_citation_for_a_finished_block_replaces_only_that_block() -> None:
    doc, state = StreamDoc(), {}
    text = "First paragraph here.\n\nSecond paragraph.\n\nThird one still growing"
    doc.append(text)
    state = apply_message(state, {"o": doc.take_ops()})
    cit = {
        "start": 6,
        "end": 15,
        "text": "paragraph",
        "sources": [{"type": "document", "id": "d", "document": {"text": "x"}}],
    }
    doc.add_citation(cit)
    ops = doc.take_ops()
    assert [op[0] for op in ops] == ["r"] and ops[0][1] == 0
    state = apply_message(state, {"o": ops})
    assert "".join(state["blocks"]) + state["tail"] == render_markdown(text, [cit])


def test_long_reply_bytes_and_messages_are_coalesced(recorded: list[RecordingComm]) -> None:
    text = SAMPLE * 12  # ~12 KB
    view = TurnView("explain gradient descent", params={"temperature": 0.3})
    c = view.comm
    events = stream_events(text)
    n_tokens = sum(1 for e in events if e["type"] == "content-delta")
    start = time.monotonic()
    feed(view, events)  # as fast as the backend can produce: coalescing decides the rate
    elapsed = time.monotonic() - start
    custom = c.custom()
    n_bytes = c.custom_bytes()
    reply_bytes = len(text.encode())
    # O(N) bytes, not O(N^2): at most 1.5x the reply, far fewer messages than tokens
    assert n_bytes <= 1.5 * reply_bytes, (n_bytes, reply_bytes)
    assert len(custom) < n_tokens / 5, (len(custom), n_tokens)
    assert len(custom) <= elapsed / 0.05 + 5  # never faster than ~20 Hz
    # the front end rebuilds exactly the final render, and the final state trait agrees
    state = rebuild(custom)
    assert "".join(state["blocks"]) + state["tail"] == render_markdown(text)
    assert view.state["blocks"] == state["blocks"] and view.state["meta"]["status"] == "done"
    # the final state was not echoed to the front end (it rebuilt it from the patches)
    assert not any("state" in (u.get("state") or {}) for u in c.updates())
    assert view.state["meta"]["stats"]["tokens"] == n_tokens
    assert view.state["meta"]["stats"]["finish"] == "COMPLETE"


def test_naive_resend_would_be_quadratic(recorded: list[RecordingComm]) -> None:
    """The comparison the bench makes: a trait re-sent per token grows with N^2."""
    import ipywidgets

    text = SAMPLE * 2
    html = ipywidgets.HTML()
    c = html.comm
    acc = ""
    for tok in tokens_of(text):
        acc += tok
        html.value = render_markdown(acc)
    naive = sum(len(json.dumps(u, separators=(",", ":")).encode()) for u in c.updates())
    assert naive > 20 * len(text.encode())


def test_timer_flushes_when_the_stream_pauses(recorded: list[RecordingComm]) -> None:
    view = TurnView("hi", params={})
    c = view.comm
    b = StreamBuilder()
    listener = view.listener()
    listener.on_start()
    for e in [b.start(), *b.text("Hello"), *b.text(" world")]:
        listener.on_event(e)
    time.sleep(0.3)  # no further events: the timer thread must deliver the pending text
    state = rebuild(c.custom())
    assert "Hello world" in state["tail"]
    listener.on_done(None)


def test_logprobs_thinking_plan_and_tool_calls_reach_the_view(
    recorded: list[RecordingComm],
) -> None:
    view = TurnView("weather?", params={"logprobs": True})
    c = view.comm
    b = StreamBuilder()
    events = [
        b.start(),
        *b.thinking("Let me think."),
        *b.close_content(),
        b.tool_plan("I will call the tool."),
    ]
    events += [
        b.tool_call_start("call_1", "get_weather", ""),
        b.tool_call_delta('{"city": "Paris"}'),
        b.tool_call_end(),
    ]
    events += b.end("TOOL_CALL", usage_dict(5, 7))
    b2 = StreamBuilder()
    events2 = [
        b2.start(),
        *b2.text("Sunny", {"text": "Sunny", "token_ids": [1], "logprobs": [-0.05]}),
        *b2.text(" and <b>warm</b>", {"text": " and", "token_ids": [2], "logprobs": [-2.0]}),
    ]
    events2 += b2.end("COMPLETE", usage_dict(9, 2))
    listener = view.listener()
    listener.on_start()
    for e in events:
        listener.on_event(e)
    listener.on_tool_calls(
        [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ]
    )
    result: dict[str, Any] = {}
    approver = threading.Thread(
        target=lambda: result.setdefault(
            "ok",
            view.approve(
                [{"id": "call_1", "function": {"name": "get_weather", "arguments": "{}"}}]
            ),
        )
    )
    approver.start()
    deadline = time.monotonic() + 2
    while view.snapshot()["meta"].get("status") != "approval" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rebuild(c.custom())["meta"]["approval"][0]["name"] == "get_weather"
    view._handle_custom_msg({"type": "approve", "ok": True}, [])  # the Approve button
    approver.join(2)
    assert result["ok"] is True
    listener.on_tool_result(
        {"id": "call_1"},
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": [{"type": "document", "document": {"data": '{"temp": 21}'}}],
        },
    )
    for e in events2:
        listener.on_event(e)
    listener.on_done(None)
    state = rebuild(c.custom())
    assert state["think"] == "Let me think."
    assert state["plan"] == "I will call the tool."
    [call] = state["meta"]["calls"]
    assert (
        call["name"] == "get_weather"
        and "Paris" in call["args"]
        and "21" in call["result"]
        and call["approved"] is True
    )
    assert [p for _, p in state["lp"]] == [
        round(2.718281828**-0.05, 3),
        round(2.718281828**-2.0, 3),
    ]
    html = "".join(state["blocks"]) + state["tail"]
    assert "Sunny" in html and "&lt;b&gt;warm" in html and "<b>" not in html


def test_approval_times_out_to_deny_and_stop_denies(recorded: list[RecordingComm]) -> None:
    view = TurnView("x", params={})
    assert view.approve([{"function": {"name": "f", "arguments": "{}"}}], timeout=0.05) is False
    out: list[bool] = []
    t = threading.Thread(
        target=lambda: out.append(view.approve([{"function": {"name": "f"}}], timeout=5))
    )
    t.start()
    time.sleep(0.05)
    view._handle_custom_msg({"type": "stop"}, [])
    t.join(1)
    assert out == [False]


def test_stop_message_cancels_the_attached_handle_and_marks_stopped(
    recorded: list[RecordingComm],
) -> None:
    from nbchat.conversation import Conversation
    from nbchat.runner import start_turn

    class SlowBackend:
        name = "slow"

        def stream(self, request: dict[str, Any], cancel: Any = None):
            b = StreamBuilder()
            yield b.start()
            for i in range(400):
                if cancel is not None and cancel.is_set():
                    return
                yield from b.text(f"w{i} ")
                time.sleep(0.005)
            yield from b.end("COMPLETE", usage_dict(1, 400))

        def models(self) -> list[str]:
            return ["slow"]

    conv = Conversation()
    view = TurnView("go", params={})
    c = view.comm
    handle = start_turn(conv, SlowBackend(), "go", {"model": "slow"}, listener=view.listener())
    view.attach(handle)
    time.sleep(0.3)
    t0 = time.monotonic()
    view._handle_custom_msg({"type": "stop"}, [])  # the Stop button
    handle.wait(2)
    assert time.monotonic() - t0 < 0.5
    deadline = time.monotonic() + 2
    while view.snapshot()["meta"].get("status") != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    state = rebuild(c.custom())
    assert state["meta"]["status"] == "stopped"
    assert "w0" in state["tail"] + "".join(state["blocks"])  # partial reply kept
    assert conv.turns[-1].cancelled and conv.turns[-1].text.startswith("w0")


def test_late_view_gets_a_snapshot_on_hello(recorded: list[RecordingComm]) -> None:
    view = TurnView("x", params={})
    c = view.comm
    b = StreamBuilder()
    listener = view.listener()
    listener.on_start()
    for e in [b.start(), *b.text("Some text\n\nmore")]:
        listener.on_event(e)
    view._flush()
    view._handle_custom_msg({"type": "hello", "s": 0}, [])  # a page reloaded mid-stream
    snap = c.custom()[-1]
    assert snap["type"] == "snap"
    assert "".join(snap["state"]["blocks"]) + snap["state"]["tail"] == render_markdown(
        "Some text\n\nmore"
    )
    listener.on_done(None)


def test_error_is_shown_redacted(
    recorded: list[RecordingComm], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CO_API_KEY", "sk-secret-key-123456")
    view = TurnView("x", params={})
    c = view.comm
    view.show_error(RuntimeError("HTTP 401: bad key sk-secret-key-123456"))
    state = rebuild(c.custom())
    assert state["meta"]["status"] == "error"
    assert "sk-secret" not in json.dumps(c.sent) and "***" in state["meta"]["error"]


def test_listener_sets_the_captured_parent_in_the_worker() -> None:
    """In a real kernel shell (ipykernel's ZMQInteractiveShell API), on_start routes output."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    calls: list[Any] = []
    shell.get_parent = lambda: {"header": {"msg_id": "cell-1"}}  # what ipykernel 7 provides
    shell.set_thread_parent = lambda parent: calls.append((threading.current_thread().name, parent))
    try:
        view = TurnView("x", params={})
        listener = view.listener()  # main thread: captures the parent
        worker = threading.Thread(target=listener.on_start, name="worker")
        worker.start()
        worker.join()
        listener.on_done(None)
        assert ("worker", {"header": {"msg_id": "cell-1"}}) in calls
    finally:
        del shell.get_parent, shell.set_thread_parent
        InteractiveShell.clear_instance()


# -- static output -----------------------------------------------------------------------------


def test_static_bundle_of_a_real_turn() -> None:
    from nbchat.conversation import Conversation, Turn

    conv = Conversation()
    turn = Turn(
        [{"role": "user", "content": "What colour is the sky? <script>x</script>"}],
        [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "It is **green** <img src=x onerror=alert(1)>."}
                ],
                "citations": [
                    {
                        "start": 6,
                        "end": 15,
                        "text": "**green**",
                        "sources": [
                            {
                                "type": "document",
                                "id": "doc:0",
                                "document": {"id": "doc:0", "text": "The sky is green."},
                            }
                        ],
                    }
                ],
            }
        ],
        finish_reason="COMPLETE",
        usage={"tokens": {"input_tokens": 10, "output_tokens": 6}},
        params={"model": "smollm2-135m"},
    )
    conv.add_turn(turn)
    bundle = static_bundle(turn)
    assert set(bundle) == {"text/plain", "text/markdown", "text/html"}
    assert "User: What colour is the sky?" in bundle["text/plain"]
    assert (
        "Assistant: It is **green**" in bundle["text/plain"] and "COMPLETE" in bundle["text/plain"]
    )
    assert "[1] " in bundle["text/plain"] and "10 in / 6 out" in bundle["text/plain"]
    assert "> What colour" in bundle["text/markdown"]
    h = bundle["text/html"]
    assert (
        "<script" not in h
        and "<img" not in h
        and "<strong>green</strong>" in h
        and "nbchat-cite" in h
    )


def test_static_bundle_marks_stopped_and_error_turns() -> None:
    from nbchat.conversation import Turn

    stopped = Turn(
        [{"role": "user", "content": "hi"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "partial"}]}],
        status="cancelled",
        error="cancelled",
    )
    assert "stopped" in static_bundle(stopped)["text/plain"]
    failed = Turn([{"role": "user", "content": "hi"}], [], status="error", error="HTTP 500: boom")
    b = static_bundle(failed)
    assert "Error: HTTP 500: boom" in b["text/plain"] and "boom" in b["text/html"]


def test_view_mimebundle_has_text_fallback(recorded: list[RecordingComm]) -> None:
    view = TurnView("hello there", params={})
    data = view._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"].startswith("User: hello there")
    feed(view, stream_events("Hi **you**"))
    data = view._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    assert (
        "Assistant: Hi **you**" in data["text/plain"]
        and "<strong>you</strong>" in data["text/html"]
    )


def test_esm_is_one_local_module_without_network() -> None:
    from nbchat.notebook.view import _asset

    js = _asset("view.js").read_text()
    assert "export default" in js
    assert not re.search(r"""\bimport\s.*from\s+['"]|https?://|import\(""", js)
    # sent with every widget instance (not stored in saved notebooks: see notebook/saved.py)
    assert len(js.encode()) < 24_000


def test_gfm_tables_render_with_alignment_classes_and_stay_inert() -> None:
    html = render_markdown("| a | b |\n|:-|-:|\n| <b>1</b> | [x](javascript:alert(1)) |")
    assert "<table>" in html and 'class="nbchat-al-right"' in html
    assert "style=" not in html  # alignment travels as a class; the view drops styles
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert 'href="javascript' not in html
