"""Issue 10's smaller items, each against real parts (a shell with nbchat loaded, a real v2 HTTP
server, the real view state): %chat panel binds, `chat` after a restart, did-you-mean flags,
%%chat? without reST, Export (link, JSON columns, integer counts), stopped/cut turns in saved
output, citations never inside a word, the token count travelling with the text."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from test_view import recorded, stream_events  # noqa: E402, F401
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat.conversation import Conversation  # noqa: E402
from nbchat.notebook.panel import Panel  # noqa: E402
from nbchat.notebook.render import insert_marks, static_bundle  # noqa: E402
from nbchat.notebook.turnstate import TurnState  # noqa: E402


@pytest.fixture
def server():
    srv = V2Server(default=sse(events_body(text_events(["Hello ", "there."]))))
    yield srv
    srv.close()


@pytest.fixture
def ip(server, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", "k-test")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    shell.run_line_magic("config", "NbChat.backend = 'v2'")
    shell.run_line_magic("config", f"NbChat.base_url = '{server.url}'")
    yield shell
    shell.run_line_magic("unload_ext", "nbchat")
    shell.user_ns.pop("chat", None)


def run(ip: InteractiveShell, source: str) -> Any:
    with capture_output():
        return ip.run_cell(source)


def test_chat_panel_returns_the_panel_so_it_can_be_bound(ip) -> None:
    run(ip, "p = %chat panel").raise_error()
    assert isinstance(ip.user_ns["p"], Panel) and ip.user_ns["p"].conversation is ip.user_ns["chat"]


def test_typing_chat_after_a_restart_says_what_happened(ip) -> None:
    ip.automagic = True
    res = run(ip, "chat")  # no variable `chat` yet: automagic calls %chat with no command
    err = res.error_in_exec
    assert isinstance(err, UsageError)
    assert "'chat' is not defined" in str(err) and "%chat resume" in str(err)
    assert "needs a command" not in str(err)


def test_a_mistyped_flag_gets_a_suggestion(ip) -> None:
    res = run(ip, "%%chat --temprature 0.5\nhi")
    assert isinstance(res.error_in_exec, UsageError)
    assert "did you mean --temperature?" in str(res.error_in_exec)
    res = run(ip, "%%chat --max-tockens 5\nhi")
    assert "did you mean --max-tokens?" in str(res.error_in_exec)


def test_chat_help_has_no_raw_rest_and_documents_the_per_round_budget(ip) -> None:
    doc = ip.find_cell_magic("chat").__doc__
    assert "``" not in doc and "::" not in doc
    assert doc.lstrip().startswith("%%chat [")
    assert "per model round" in " ".join(doc.split())
    assert "``" not in ip.find_line_magic("chat").__doc__


def test_export_link_json_columns_and_integer_counts(ip, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run(ip, "%config NbChat.live = 'never'")
    run(ip, "%%chat -t 0.3\nhi").raise_error()
    panel = Panel(ip.user_ns["chat"])
    df = panel.export()
    status = panel.status.value
    assert str(tmp_path) in status and 'href="data:text/csv;base64,' in status
    assert "download nbchat-export-" in status
    import csv

    rows = list(csv.DictReader(open(panel.export_path, newline="")))
    assert rows and len(rows) == len(df)
    params = json.loads(rows[0]["params"])  # JSON, not a Python repr
    assert params["temperature"] == 0.3
    counts = [r["output_tokens"] for r in rows if r.get("output_tokens")]
    assert counts and all(c.isdigit() for c in counts), counts  # 84, not 84.0


def test_stopped_and_cut_turns_read_as_such_in_saved_output() -> None:
    stopped = {
        "prompt": "q",
        "messages": [{"role": "assistant", "content": [{"type": "text", "text": "part"}]}],
        "cancelled": True,
        "error": "cancelled",
    }
    b = static_bundle(stopped)
    for kind in ("text/plain", "text/markdown", "text/html"):
        assert "Error" not in b[kind] and "Stopped" in b[kind], b[kind]
    cut = {**stopped, "cancelled": False, "error": None, "finish_reason": "MAX_TOKENS"}
    b = static_bundle(cut)
    assert all("max_tokens reached" in b[k] for k in ("text/plain", "text/markdown", "text/html"))


def test_a_citation_never_lands_inside_a_word() -> None:
    text = 'It is "Tokyo" today.'
    inside = text.index("kyo")  # a citation ending after "To"
    marked = insert_marks(text, [(inside, 0)])
    mark = chr(0xE000)  # render._MARK_BASE + mark id 0
    assert f'"Tokyo{mark}"' in marked


def test_the_token_count_travels_with_the_text() -> None:
    st = TurnState()
    seen = []
    for ev in stream_events("one two three four five six seven eight"):
        st.feed(ev)
        msg = st.patch()
        if msg and "o" in msg:
            seen.append((msg.get("n"), st.tokens))
    assert seen and all(n == tokens for n, tokens in seen), seen


@pytest.mark.usefixtures("recorded")
def test_panel_transcript_has_a_max_height_and_enter_sends() -> None:
    panel = Panel(Conversation())
    assert panel.transcript.layout.max_height and panel.transcript.layout.overflow == "auto"
    sent: list[str] = []
    panel.send = lambda prompt=None: sent.append(panel.prompt.value)  # type: ignore[method-assign]
    # what the prompt box's Enter / Ctrl+Enter sends (js: model.send({type: "send", text}))
    panel.prompt._handle(panel.prompt, {"type": "send", "text": "typed text"}, [])
    assert sent == ["typed text"]


def test_dry_run_shows_the_new_message_not_the_whole_history(ip) -> None:
    run(ip, "%config NbChat.live = 'never'")
    for i in range(3):
        run(ip, f"%%chat\nearlier question {i}").raise_error()
    with capture_output() as cap:
        ip.run_cell("%%chat --dry-run\nthe new one").raise_error()
    data = cap.outputs[-1].data
    assert "5 earlier messages" in data["text/markdown"] or "6 earlier" in data["text/markdown"]
    assert "earlier question 0" not in data["text/markdown"] + data["text/plain"]
    assert "the new one" in data["text/markdown"]
    whole = data["application/json"]["messages"]  # the body as it would be sent, collapsed
    assert any("earlier question 0" in json.dumps(m) for m in whole)
    assert cap.outputs[-1].metadata["application/json"]["expanded"] is False


def test_view_and_history_agree_on_ttft_and_tokens_per_second(ip) -> None:
    from nbchat.notebook.view import TurnView
    from nbchat.runner import start_turn

    conv = Conversation()
    from nbchat.backends import get_backend

    backend = get_backend("v2", base_url=ip.config.NbChat.base_url, api_key="k")
    view = TurnView("q")
    with capture_output():
        turn = start_turn(conv, backend, "q", {}, listener=view.listener()).wait(20)
    stats = view.snapshot()["meta"]["stats"]
    assert stats["ttft"] == round(turn.timings["ttft"], 3)
    assert stats.get("tps") == round(turn.timings["tokens_per_second"], 1)
    assert f"TTFT {turn.timings['ttft']:.2f} s" in turn.stats()  # the view's unit
    assert "turn 1:" in conv._repr_markdown_() and "turn 0:" not in conv._repr_markdown_()


def test_a_queued_turn_says_queued_and_its_ttft_excludes_the_wait(ip) -> None:
    from nbchat.backends import get_backend
    from nbchat.notebook.view import TurnView
    from nbchat.runner import start_turn

    slow = V2Server(default=sse(events_body(text_events(["a "] * 30)), delay=0.03))
    try:
        conv = Conversation()
        backend = get_backend("v2", base_url=slow.url, api_key="k")
        with capture_output():
            first = start_turn(conv, backend, "one", {}, background=True)
            view = TurnView("two")
            second = start_turn(conv, backend, "two", {}, listener=view.listener(), background=True)
            view.attach(second)
            assert view.snapshot()["meta"]["status"] == "queued"
            first.wait(30)
            second.wait(30)
    finally:
        slow.close()
    stats = view.snapshot()["meta"]["stats"]
    waited = first.turn.timings["total"]
    assert view.snapshot()["meta"]["status"] == "done"
    assert stats["ttft"] < waited, (stats, waited)  # the wait behind `first` is not in it


def test_json_reply_is_a_code_block_and_turn_json_parses_or_says_why(ip) -> None:
    from nbchat.backends import get_backend
    from nbchat.notebook.view import TurnView
    from nbchat.runner import start_turn

    whole = V2Server(default=sse(events_body(text_events(['{"a": ', "1}"]))))
    cut = V2Server(
        default=sse(events_body(text_events(['{"a": ', "[1, 2"], finish_reason="MAX_TOKENS")))
    )
    try:
        params = {"response_format": {"type": "json_object"}}
        turns, views = [], []
        for srv in (whole, cut):
            view = TurnView("give json", params={"response_format": "json_object"})
            backend = get_backend("v2", base_url=srv.url, api_key="k")
            with capture_output():
                turns.append(
                    start_turn(
                        Conversation(), backend, "give json", params, listener=view.listener()
                    ).wait(20)
                )
            views.append(view)
    finally:
        whole.close()
        cut.close()
    assert turns[0].json == {"a": 1}
    with pytest.raises(ValueError, match="cut off by max_tokens"):
        _ = turns[1].json
    for view in views:
        state = view.snapshot()
        html = "".join(state["blocks"]) + state["tail"]
        assert 'class="language-json"' in html and "<p>{" not in html, html
    data = views[1]._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    assert "max_tokens reached" in data["text/plain"]  # the saved output warns too
