"""%%chat --compare: the grid, variants at once on the real v2 test server, Keep, headless
output, the DataFrame, the history store."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from v2server import V2Server, events_body, sse, text_events

from nbchat.notebook.grid import expand_grid


class ByTemperature(V2Server):
    """Replies chosen by the request's temperature (variants arrive in any order)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_temp: dict[Any, Any] = {}

    def _next(self, rec: Any) -> Any:
        with self._lock:
            self.requests.append(rec)
        body = rec.json or {}
        return self.by_temp.get(body.get("temperature"), self.default)


def reply(*pieces: str, finish: str = "COMPLETE", delay: float = 0.0, id: str = "g") -> Any:
    return sse(events_body(text_events(list(pieces), id=id, finish_reason=finish)), delay=delay)


@pytest.fixture
def server():
    srv = ByTemperature()
    yield srv
    srv.close()


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


def run(ip: Any, src: str) -> Any:
    with capture_output() as cap:
        res = ip.run_cell(src)
    return res, cap


# -- grid ------------------------------------------------------------------------------------------
def test_grid_expansion_is_the_product_in_order():
    grid = expand_grid(["temperature=0,1", "model=command-a-03-2025,command-r7b-12-2024"])
    assert grid == [
        {"temperature": 0.0, "model": "command-a-03-2025"},
        {"temperature": 0.0, "model": "command-r7b-12-2024"},
        {"temperature": 1.0, "model": "command-a-03-2025"},
        {"temperature": 1.0, "model": "command-r7b-12-2024"},
    ]
    assert expand_grid(["max-tokens=5,9"]) == [{"max_tokens": 5}, {"max_tokens": 9}]
    assert expand_grid(["safety_mode=off,strict"]) == [
        {"safety_mode": "OFF"},
        {"safety_mode": "STRICT"},
    ]
    assert expand_grid(["backend=v2,local"]) == [{"backend": "v2"}, {"backend": "local"}]


@pytest.mark.parametrize(
    "specs, words",
    [
        (["temperature=0,0.5,1", "k=1,2,3"], ["k=1,2,3", "9 variants", "at most 8"]),
        (["colour=1,2"], ["colour", "allowed", "temperature"]),
        (["temperature=hot,0"], ["temperature", "'hot'"]),
        (["safety_mode=loud,off"], ["safety_mode", "allowed", "CONTEXTUAL"]),
        (["temperature"], ["FIELD=V1,V2"]),
        (["temperature=0,1", "temperature=0.5,0.7"], ["already compared"]),
        (["temperature=0.5,0.5"], ["repeated"]),
    ],
)
def test_grid_errors_name_the_flag(specs, words):
    with pytest.raises(UsageError) as err:
        expand_grid(specs)
    for word in words:
        assert word in str(err.value)


def test_out_of_range_value_names_the_field_and_sends_nothing(ip, server):
    res, _ = run(ip, "%%chat --compare temperature=0.2,7\nhi")
    msg = str(res.error_in_exec)
    assert isinstance(res.error_in_exec, UsageError)
    assert "--compare temperature=7.0" in msg and "temperature" in msg and "0" in msg
    assert server.requests == [] and "chat" not in ip.user_ns or len(ip.user_ns["chat"]) == 0


def test_keep_out_of_range_and_keep_without_compare(ip, server):
    res, _ = run(ip, "%%chat --compare temperature=0.2,0.9 --keep 3\nhi")
    assert "--keep" in str(res.error_in_exec) and "1..2" in str(res.error_in_exec)
    res, _ = run(ip, "%%chat --keep 1\nhi")
    assert "--keep" in str(res.error_in_exec) and "--compare" in str(res.error_in_exec)
    assert server.requests == []


# -- running -----------------------------------------------------------------------------------------
def test_headless_compare_prints_every_variant_and_keeps_n(ip, server):
    server.by_temp = {0.2: reply("cold", " answer"), 0.9: reply("hot", " take", " here")}
    res, cap = run(ip, "%%chat --compare temperature=0.2,0.9 --keep 2\nSay something")
    res.raise_error()
    conv = ip.user_ns["chat"]
    assert len(conv) == 1 and len(server.requests) == 2
    assert sorted(r.json["temperature"] for r in server.requests) == [0.2, 0.9]
    # both requests carry the same history and prompt
    assert {str(r.json["messages"]) for r in server.requests} == {
        str([{"role": "user", "content": "Say something"}])
    }
    turn = conv.last
    assert turn.text == "hot take here"
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]
    assert [a.text for a in turn.alternatives] == ["cold answer"]
    plain = "\n".join(o.data.get("text/plain", "") for o in cap.outputs)
    assert "temperature=0.2" in plain and "temperature=0.9" in plain
    assert "cold answer" in plain and "hot take here" in plain and "(kept)" in plain
    data = cap.outputs[-1].data
    assert "application/vnd.nbchat.panel+json" in data
    titles = [d["title"] for d in data["application/vnd.nbchat.panel+json"]["turns"]]
    assert titles == ["Variant 1: temperature=0.2", "Variant 2: temperature=0.9 (kept)"]


def test_keep_switches_messages_and_dataframe_columns(ip, server):
    server.by_temp = {0.2: reply("A", " one"), 0.9: reply("B", " two", " three")}
    run(ip, "%%chat --compare temperature=0.2,0.9\nq")[0].raise_error()
    conv = ip.user_ns["chat"]
    turn = conv.last
    assert conv.messages[-1]["content"][0]["text"] == "A one"  # default: the first variant
    comp = turn.comparison
    comp.keep(1)
    assert conv.messages[-1]["content"][0]["text"] == "B two three"
    assert [a.text for a in turn.alternatives] == ["A one"]
    df = comp.to_dataframe()
    assert list(df.columns) == [
        "temperature",
        "text",
        "tokens",
        "tokens_per_second",
        "ttft",
        "finish_reason",
        "status",
        "kept",
    ]
    assert list(df["temperature"]) == [0.2, 0.9]
    assert list(df["text"]) == ["A one", "B two three"]
    assert list(df["tokens"]) == [2, 3]
    assert list(df["finish_reason"]) == ["COMPLETE", "COMPLETE"]
    assert list(df["kept"]) == [False, True]
    assert (df["ttft"] > 0).all() and (df["tokens_per_second"] > 0).all()
    # the next turn's history holds the kept reply
    server.by_temp = {None: reply("ok")}
    run(ip, "%%chat\nnext")[0].raise_error()
    sent = server.requests[-1].json["messages"]
    assert sent[1]["content"][0]["text"] == "B two three"
    # a round trip through to_dict keeps the comparison
    from nbchat import Conversation

    again = Conversation.from_dict(conv.to_dict())
    c2 = again.turns[0].comparison
    assert [t.text for t in c2.turns] == ["A one", "B two three"] and c2.kept == 1


def test_variants_stream_at_once_and_cancel_one_leaves_the_other(ip, server):
    slow = [f"w{i} " for i in range(40)]
    server.by_temp = {0.2: reply(*slow, delay=0.05), 0.9: reply(*slow, delay=0.05)}
    from nbchat import Conversation
    from nbchat.backends import get_backend
    from nbchat.comparison import start_comparison

    conv = Conversation()
    backend = get_backend("v2", base_url=server.url, api_key="k")
    variants = [
        ({"temperature": t}, {"model": "command-a-03-2025", "temperature": t}, backend)
        for t in (0.2, 0.9)
    ]
    h = start_comparison(conv, "go", variants)
    comp = h.comparison
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(len(t.text) > 0 for t in comp.turns):
        time.sleep(0.02)
    assert all(t.status == "running" and t.text for t in comp.turns)  # both streaming
    h.cancel_variant(0)
    assert comp.turns[0].status == "cancelled"
    grown = len(comp.turns[1].text)
    time.sleep(0.3)
    assert comp.turns[1].status == "running" and len(comp.turns[1].text) > grown
    h.wait(20)
    assert h.done and comp.turns[1].status == "complete"
    assert comp.turns[1].text == "".join(slow)
    assert conv.last.status == "cancelled"  # the first variant (the reply) was stopped
    assert conv.messages == []  # a stopped reply is never resent
    comp.keep(1)
    assert conv.messages[-1]["content"][0]["text"] == "".join(slow)
    # no turn or compare thread outlives the comparison (the suite's other threads don't count)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _nbchat_workers():
        time.sleep(0.02)
    assert not _nbchat_workers()


def _nbchat_workers() -> list[str]:
    names = [t.name for t in threading.enumerate()]
    return [n for n in names if n.startswith(("nbchat-turn-", "nbchat-compare"))]


def test_conv_wait_and_a_queued_turn_wait_for_the_comparison(ip, server):
    server.by_temp = {0.2: reply("a", delay=0.05), 0.9: reply("b", delay=0.05), None: reply("c")}
    from nbchat import Conversation
    from nbchat.backends import get_backend
    from nbchat.comparison import start_comparison

    conv = Conversation()
    backend = get_backend("v2", base_url=server.url, api_key="k")
    variants = [({"temperature": t}, {"temperature": t}, backend) for t in (0.2, 0.9)]
    start_comparison(conv, "one", variants)
    conv.send("two", backend=backend, wait=True)
    sent = server.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert conv.turns[0].comparison is not None and len(conv) == 2


def test_compare_is_stored_in_the_history(ip, server, tmp_path):
    from nbchat.history import recorder

    db = tmp_path / "h.sqlite"
    recorder.configure(str(db))
    try:
        server.by_temp = {0.2: reply("x"), 0.9: reply("y")}
        run(ip, "%%chat --compare temperature=0.2,0.9\nq")[0].raise_error()
        conv = ip.user_ns["chat"]
        conv.last.comparison.keep(1)
        store = recorder.current_store()
        assert store is not None and store.flush()
        from nbchat import history
        from nbchat.history.store import conversation_id

        assert len(history.conversations(path=str(db))) == 1  # scratch variants not apart
        loaded = history.load(conversation_id(conv), path=str(db))
        assert len(loaded) == 1  # one turn: the scratch variants are not recorded apart
        comp = loaded.last.comparison
        assert comp is not None and comp.kept == 1 and loaded.last.text == "y"
        assert [t.text for t in comp.turns] == ["x", "y"]
        assert comp.varied == [{"temperature": 0.2}, {"temperature": 0.9}]
    finally:
        recorder.configure(None)


def test_live_compare_view_columns_stop_and_keep(ip, server):
    slow = [f"w{i} " for i in range(30)]
    server.by_temp = {0.2: reply(*slow, delay=0.05), 0.9: reply(*slow, delay=0.05)}
    ip.run_line_magic("config", "NbChat.live = 'always'")
    with capture_output():
        ip.run_cell("%%chat --compare temperature=0.2,0.9\nq").raise_error()
    conv = ip.user_ns["chat"]
    h = conv.running_handles()[0]
    from nbchat.notebook.compareview import CompareView

    view = next(w for w in _widgets() if isinstance(w, CompareView))
    assert [v.title for v in view.views] == ["1 · temperature=0.2", "2 · temperature=0.9"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(t.text for t in h.comparison.turns):
        time.sleep(0.02)
    view.views[1].stop()  # the column's own Stop
    assert h.comparison.turns[1].status == "cancelled"
    assert h.comparison.turns[0].status == "running"
    conv.wait(20)
    assert view.keep_buttons[0].description == "✓ Kept"
    assert not view.keep_buttons[1].disabled
    view.keep_buttons[1].click()  # Keep this on the stopped column: not resent
    assert conv.last.cancelled and conv.messages == []
    view.keep_buttons[0].click()
    assert conv.messages[-1]["content"][0]["text"] == "".join(slow)
    assert view.keep_buttons[0].description == "✓ Kept"
    bundle = view._repr_mimebundle_()
    assert (
        "application/vnd.nbchat.panel+json" in bundle and "temperature=0.9" in bundle["text/plain"]
    )


def _widgets() -> list[Any]:
    from ipywidgets.widgets.widget import _instances

    return list(_instances.values())


def test_panel_compare_sends_current_settings_next_to_the_previous_send(server):
    from nbchat import Conversation
    from nbchat.backends import get_backend
    from nbchat.notebook.panel import Panel

    backend = get_backend("v2", base_url=server.url, api_key="k")
    panel = Panel(Conversation(), backend, model="command-a-03-2025")
    assert panel.compare("q") is None and "send once first" in panel.status.value
    panel.sliders["temperature"].value = 0.2
    server.by_temp = {0.2: reply("first")}
    panel.send("one")
    panel.conversation.wait(10)
    assert panel.compare("q") is None and "Same settings" in panel.status.value
    assert len(server.requests) == 1
    panel.sliders["temperature"].value = 0.9
    server.by_temp = {0.2: reply("cold"), 0.9: reply("hot")}
    view = panel.compare("two")
    assert view is not None and view in panel.transcript.children
    assert view.labels == ["temperature=0.2", "temperature=0.9"]
    panel.conversation.wait(10)
    assert sorted(r.json["temperature"] for r in server.requests[1:]) == [0.2, 0.9]
    turn = panel.conversation.last
    assert turn.text == "cold" and [t.text for t in turn.comparison.turns] == ["cold", "hot"]
    view.keep_buttons[1].click()
    assert panel.conversation.messages[-1]["content"][0]["text"] == "hot"
    assert "2 turns" in panel.footer.value


def test_compare_on_the_embedded_engine(ip):
    """The embedded model gets both variants' requests at once (both sent before either is
    done); each variant is a complete reply with its own stats."""
    res, cap = run(
        ip, "%%chat --backend local -m smollm2-135m --max-tokens 6 --compare temperature=0,1\nHi."
    )
    res.raise_error()
    comp = ip.user_ns["chat"].last.comparison
    a, b = comp.turns
    assert all(t.status == "complete" and t.text for t in comp.turns)
    assert b.timings["started_at"] < a.timings["started_at"] + a.timings["total"]
    df = comp.to_dataframe()
    assert list(df["temperature"]) == [0.0, 1.0] and (df["tokens"] > 0).all()
    assert "Variant 2: temperature=1.0" in cap.outputs[-1].data["text/plain"]


def test_live_stop_all_stops_every_column(ip, server):
    slow = [f"w{i} " for i in range(40)]
    server.by_temp = {0.2: reply(*slow, delay=0.05), 0.9: reply(*slow, delay=0.05)}
    ip.run_line_magic("config", "NbChat.live = 'always'")
    with capture_output():
        ip.run_cell("%%chat --compare temperature=0.2,0.9\nq").raise_error()
    conv = ip.user_ns["chat"]
    h = conv.running_handles()[0]
    from nbchat.notebook.compareview import CompareView

    view = [w for w in _widgets() if isinstance(w, CompareView)][-1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(t.text for t in h.comparison.turns):
        time.sleep(0.02)
    view.stop_all.click()
    conv.wait(10)
    assert [t.status for t in h.comparison.turns] == ["cancelled", "cancelled"]
    assert all(0 < len(t.text) < len("".join(slow)) for t in h.comparison.turns)  # partial kept
    assert conv.last.cancelled and conv.messages == []
