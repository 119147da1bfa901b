"""Panel: Cohere ranges/defaults, what Send sends, safety_mode gating, transcript, export."""

from __future__ import annotations

import time
from typing import Any

import pytest

from nbchat.conversation import Conversation
from nbchat.notebook.panel import RANGES, Panel
from nbchat.notebook.view import TurnView
from nbchat.protocol.events import StreamBuilder, usage_dict


class RecordingBackend:
    """A v2 Backend that answers with a fixed text and records each request it got."""

    name = "local"

    def __init__(self, text: str = "Hello from the panel.") -> None:
        self.text = text
        self.requests: list[dict[str, Any]] = []

    def stream(self, request: dict[str, Any], cancel: Any = None):
        self.requests.append(request)
        b = StreamBuilder()
        yield b.start()
        for word in self.text.split(" "):
            yield from b.text(word + " ")
        yield from b.end("COMPLETE", usage_dict(7, 4))

    def models(self) -> list[str]:
        return ["smollm2-135m"]


def test_sliders_have_cohere_ranges_and_defaults() -> None:
    panel = Panel(backend=RecordingBackend())
    expect = {
        "temperature": (0.0, 1.0, 0.3),
        "p": (0.01, 0.99, 0.75),
        "k": (0, 500, 0),
        "frequency_penalty": (0.0, 1.0, 0.0),
        "presence_penalty": (0.0, 1.0, 0.0),
    }
    for name, (lo, hi, default) in expect.items():
        s = panel.sliders[name]
        assert (s.min, s.max, s.value) == (lo, hi, default), name
        assert RANGES[name][3] == default
    assert panel.safety_mode.options == ("CONTEXTUAL", "STRICT", "OFF")
    assert panel.safety_mode.value == "CONTEXTUAL"
    params = panel.request_params()
    assert params == {
        "temperature": 0.3,
        "p": 0.75,
        "k": 0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "model": "smollm2-135m",
        "safety_mode": "CONTEXTUAL",
    }


def test_slider_clamps_to_range() -> None:
    panel = Panel(backend=RecordingBackend())
    panel.sliders["temperature"].value = 5
    panel.sliders["p"].value = 0.0
    panel.sliders["k"].value = 9999
    p = panel.request_params()
    assert (p["temperature"], p["p"], p["k"]) == (1.0, 0.01, 500)


def test_changed_values_reach_the_request() -> None:
    backend = RecordingBackend()
    conv = Conversation()
    panel = Panel(conv, backend)
    panel.sliders["temperature"].value = 0.55
    panel.sliders["k"].value = 40
    panel.max_tokens.value = 16
    panel.seed.value = "7"
    panel.safety_mode.value = "STRICT"
    panel.prompt.value = "hi there"
    view = panel.send()
    assert view is not None and panel.prompt.value == ""
    conv.wait(5)
    [req] = backend.requests
    assert req["temperature"] == 0.55 and req["k"] == 40 and req["max_tokens"] == 16
    assert req["seed"] == 7 and req["safety_mode"] == "STRICT"
    assert req["messages"][-1] == {"role": "user", "content": "hi there"}
    assert conv.turns[-1].params["temperature"] == 0.55
    assert view in panel.transcript.children
    deadline = time.monotonic() + 2
    while "1 turn ·" not in panel.footer.value:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert "11 tokens" in panel.footer.value  # 7 in + 4 out
    # a second turn on the same conversation carries the history
    panel.send("and again")
    conv.wait(5)
    assert [m["role"] for m in backend.requests[-1]["messages"]] == ["user", "assistant", "user"]


def test_documents_or_tools_disable_safety_mode_with_explanation() -> None:
    panel = Panel(backend=RecordingBackend())
    assert not panel.safety_mode.disabled and panel.safety_note.value == ""
    panel.documents = [{"data": {"text": "The sky is green."}}]
    assert panel.safety_mode.disabled and "documents or tools" in panel.safety_note.value
    p = panel.request_params()
    assert "safety_mode" not in p and p["documents"] == [{"data": {"text": "The sky is green."}}]
    panel.documents = None
    assert not panel.safety_mode.disabled

    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    panel.tools = [get_weather]
    assert panel.safety_mode.disabled and "safety_mode" not in panel.request_params()


def test_bad_seed_is_reported_and_nothing_is_sent() -> None:
    backend = RecordingBackend()
    conv = Conversation()
    panel = Panel(conv, backend)
    panel.seed.value = "abc"
    assert panel.send("hi") is None
    assert "abc" in panel.status.value and backend.requests == [] and conv.turns == []


def test_validation_error_leaves_conversation_unchanged() -> None:
    conv = Conversation()
    panel = Panel(conv, RecordingBackend())
    conv.params["citation_options"] = {"mode": "SOMETIMES"}  # not a v2 citation mode
    assert panel.send("hi") is None
    assert conv.turns == [] and "citation_options" in panel.status.value


def test_stop_keeps_partial_and_marks_the_view_stopped() -> None:
    class Slow(RecordingBackend):
        def stream(self, request: dict[str, Any], cancel: Any = None):
            b = StreamBuilder()
            yield b.start()
            for i in range(500):
                if cancel is not None and cancel.is_set():
                    return
                yield from b.text(f"t{i} ")
                time.sleep(0.005)
            yield from b.end("COMPLETE")

    conv = Conversation()
    panel = Panel(conv, Slow())
    view = panel.send("long")
    time.sleep(0.2)
    panel.stop()
    conv.wait(2)
    deadline = time.monotonic() + 2
    while view.snapshot()["meta"].get("status") != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert conv.turns[-1].cancelled and conv.turns[-1].text.startswith("t0")


def test_export_gives_dataframe_and_csv(tmp_path: Any) -> None:
    pytest.importorskip("pandas")
    conv = Conversation()
    panel = Panel(conv, RecordingBackend())
    panel.send("hi")
    conv.wait(5)
    df = panel.export(str(tmp_path / "out.csv"))
    assert list(df["role"]) == ["user", "assistant"]
    assert (tmp_path / "out.csv").read_text().startswith("turn,role")
    assert panel.dataframe is df


def test_existing_turns_are_shown_statically() -> None:
    conv = Conversation(
        [{"role": "user", "content": "q <script>"}, {"role": "assistant", "content": "a **b**"}]
    )
    panel = Panel(conv, RecordingBackend())
    [static] = panel.transcript.children
    # drawn by the same view as new turns (its final state set, no stream)
    assert isinstance(static, TurnView) and static.prompt == "q <script>"
    html = "".join(static.state["blocks"])
    assert "<strong>b</strong>" in html and "<script" not in html
    assert static.state["meta"]["status"] == "done"


def test_backend_label_max_tokens_placeholder_and_footer_wording() -> None:
    from nbchat.backends.cohere import Client

    panel = Panel(Conversation(), Client(base_url="http://127.0.0.1:9", api_key="k"))
    assert panel.backend.label == "v2 · 127.0.0.1:9"  # not "cohere": it is another host
    assert panel._get_backend().base_url == "http://127.0.0.1:9"
    assert panel.max_tokens.value == "" and panel.max_tokens.placeholder == "model default"
    assert "max_tokens" not in panel.request_params()
    panel.max_tokens.value = "0"  # 0 still means the default
    assert "max_tokens" not in panel.request_params()
    panel.max_tokens.value = "-3"
    assert panel.send("hi") is None and "max_tokens" in panel.status.value
    panel.backend.value = "local"
    assert panel.model.value == "smollm2-135m"
    panel.backend.value = "given"
    assert panel._get_backend().base_url == "http://127.0.0.1:9"
    assert "0 turns ·" in panel.footer.value
