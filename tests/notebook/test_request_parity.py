"""What nbchat shows is what it sends: ``%%chat --dry-run`` and the panel's `request()` against
the body a real v2 server (tests/v2server.py, real HTTP on 127.0.0.1) then receives.

Hypothesis draws flag lines, ``%config NbChat.defaults``, a conversation's history, system
prompt and own parameters, and panel control settings (>= 200 examples each). For each draw,
either the shown body equals the received body exactly, or both refuse with the same message
naming the field and nothing reaches the server. Every request is built by `nbchat.compose`.
"""

from __future__ import annotations

import json
import shlex
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from v2server import V2Server, events_body, sse, text_events

from nbchat.conversation import Conversation
from nbchat.errors import ValidationError
from nbchat.protocol.request import CITATION_MODES, SAFETY_MODE_CONFLICT, SAFETY_MODES

CANARY = "canary-KEY-parity-51c2"
EXAMPLES = 200
HYPO = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DOCS = [{"id": "d1", "data": {"text": "The sky is green."}}, "plain text doc"]

# text without "@{" (interpolation is tested elsewhere) and without surrogates
_ALPHABET = string.ascii_letters + string.digits + " .,;:!?-_'\"{}()[]éß漢😀\t"
words = st.text(alphabet=_ALPHABET, min_size=1, max_size=30).filter(lambda s: s.strip())
unit = st.floats(0, 1).map(lambda x: round(x, 3))
# mostly valid values, sometimes out of range (then both sides must refuse alike)
temperature = st.one_of(unit, st.sampled_from([1.5, -0.1]))
top_p = st.one_of(st.floats(0.01, 0.99).map(lambda x: round(x, 2)), st.just(1.0))
top_k = st.one_of(st.integers(0, 500), st.just(900))


def reply() -> Any:
    return sse(events_body(text_events(["ok"])))


@pytest.fixture
def server():
    with V2Server(default=reply()) as srv:
        yield srv


@pytest.fixture
def ip(server, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", CANARY)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    shell.run_line_magic("config", "NbChat.backend = 'v2'")
    shell.run_line_magic("config", f"NbChat.base_url = '{server.url}'")
    yield shell
    shell.run_line_magic("unload_ext", "nbchat")
    InteractiveShell.clear_instance()


def run(ip: InteractiveShell, source: str) -> tuple[Any, Any]:
    with capture_output() as cap:
        res = ip.run_cell(source)
    return res, cap


# -- what a draw can contain --------------------------------------------------------------------
history = st.lists(
    st.tuples(words, words).map(
        lambda qa: [{"role": "user", "content": qa[0]}, {"role": "assistant", "content": qa[1]}]
    ),
    max_size=2,
).map(lambda pairs: [m for pair in pairs for m in pair])

defaults = st.fixed_dictionaries(
    {},
    optional={
        "temperature": unit,
        "p": st.floats(0.01, 0.99).map(lambda x: round(x, 2)),
        "k": st.integers(0, 500),
        "max_tokens": st.integers(1, 4000),
        "seed": st.integers(0, 2**64 - 1),
        "safety_mode": st.sampled_from(SAFETY_MODES),
        "stop_sequences": st.lists(
            st.text(string.ascii_letters, min_size=1, max_size=6), max_size=5
        ),
        "priority": st.integers(0, 999),
        "frequency_penalty": unit,
        "presence_penalty": unit,
    },
)

flag_values = st.fixed_dictionaries(
    {},
    optional={
        "-m": st.sampled_from(["command-a-03-2025", "command-r-08-2024"]),
        "-t": temperature,
        "-p": top_p,
        "-k": top_k,
        "--frequency-penalty": unit,
        "--presence-penalty": unit,
        "--max-tokens": st.integers(0, 5000),
        "--seed": st.integers(0, 2**64 - 1),
        "--stop": st.lists(st.text(string.ascii_letters, min_size=1, max_size=6), max_size=6),
        "--safety-mode": st.sampled_from([*SAFETY_MODES, "strict", "off"]),
        "--citations": st.sampled_from(CITATION_MODES),
        "--logprobs": st.just(True),
        "--priority": st.integers(0, 999),
        "--json": st.just(True),
        "--documents": st.just("docs"),
        "--tool-choice": st.sampled_from(["NONE", "REQUIRED"]),
        "--system": words,
    },
)


def flag_line(flags: dict[str, Any]) -> str:
    parts: list[str] = []
    for flag, value in flags.items():
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            for v in value:
                parts += [flag, shlex.quote(v)]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


# -- %%chat --dry-run == what %%chat sends ------------------------------------------------------
@HYPO
@given(
    flags=flag_values,
    nb_defaults=defaults,
    past=history,
    system=st.one_of(st.none(), words),
    model_setting=st.sampled_from(["command-a-03-2025", "command-r7b-12-2024"]),
    conv_params=st.fixed_dictionaries(
        {}, optional={"temperature": unit, "max_tokens": st.integers(1, 50)}
    ),
    prompt=words,
)
def test_dry_run_shows_exactly_what_chat_sends(
    ip, server, flags, nb_defaults, past, system, model_setting, conv_params, prompt
):
    ip.user_ns["docs"] = DOCS
    ip.user_ns["chat"] = Conversation(past, system=system, **conv_params)
    ip.run_line_magic("config", f"NbChat.defaults = {nb_defaults!r}")
    ip.run_line_magic("config", f"NbChat.model = {model_setting!r}")
    line = flag_line(flags)
    sent = len(server.requests)
    res, cap = run(ip, f"%%chat --dry-run {line}\n{prompt}")
    assert len(server.requests) == sent  # a dry run sends nothing
    if res.error_in_exec is not None:
        err = res.error_in_exec
        assert isinstance(err, UsageError), err
        res2, _ = run(ip, f"%%chat {line}\n{prompt}")
        assert isinstance(res2.error_in_exec, UsageError)
        assert str(res2.error_in_exec) == str(err)
        assert len(server.requests) == sent  # refused before sending
        event(f"refused: {str(err).split(':')[0]}")
        return
    [out] = cap.outputs
    shown = out.data["application/json"]  # the whole body
    # the readable copy is the same body with the history before the new message summarised
    readable = json.loads(out.data["text/plain"])
    assert {k: v for k, v in readable.items() if k != "messages"} == {
        k: v for k, v in shown.items() if k != "messages"
    }
    assert readable["messages"][-1] == shown["messages"][-1]
    if len(readable["messages"]) != len(shown["messages"]):
        assert (
            isinstance(readable["messages"][-2], str)
            and "earlier message" in readable["messages"][-2]
        )
    res, _ = run(ip, f"%%chat {line}\n{prompt}")
    res.raise_error()
    assert len(server.requests) == sent + 1
    assert server.requests[-1].json == shown
    assert not ("safety_mode" in shown and ("documents" in shown or "tools" in shown))
    event("sent")


# -- the panel: request() == what Send sends ----------------------------------------------------
panel_controls = st.fixed_dictionaries(
    {},
    optional={
        "temperature": unit,
        "p": st.floats(0.01, 0.99).map(lambda x: round(x, 2)),
        "k": st.integers(0, 500),
        "frequency_penalty": unit,
        "presence_penalty": unit,
        "max_tokens": st.sampled_from(["", "0", "1", "77", "-3", "x"]),
        "seed": st.one_of(st.sampled_from(["", "abc", "-1"]), st.integers(0, 2**64 - 1).map(str)),
        "safety_mode": st.sampled_from(SAFETY_MODES),
        "model": st.sampled_from(["command-a-03-2025", "command-r-08-2024"]),
    },
)


@HYPO
@given(
    controls=panel_controls,
    nb_defaults=defaults,
    past=history,
    system=st.one_of(st.none(), words),
    documents=st.booleans(),
    conv_params=st.fixed_dictionaries({}, optional={"stop_sequences": st.just(["END"])}),
    prompt=words,
)
def test_panel_request_is_exactly_what_send_sends(
    server, monkeypatch, controls, nb_defaults, past, system, documents, conv_params, prompt
):
    from nbchat.backends import get_backend
    from nbchat.notebook.panel import Panel

    monkeypatch.setenv("CO_API_KEY", CANARY)
    backend = get_backend("v2", base_url=server.url, api_key=CANARY)
    conv = Conversation(past, system=system, **conv_params)
    panel = Panel(conv, backend, model="command-a-03-2025", defaults=nb_defaults)
    for name, value in controls.items():
        if name in panel.sliders:
            panel.sliders[name].value = value
        else:
            getattr(panel, name).value = value
    if documents:
        panel.documents = DOCS
    sent, turns = len(server.requests), len(conv.turns)
    try:
        shown = panel.request(prompt)
    except ValidationError as exc:
        assert panel.send(prompt) is None
        assert exc.field.split(".")[0] in panel.status.value
        assert len(server.requests) == sent and len(conv.turns) == turns
        event(f"refused: {exc.field}")
        return
    assert len(server.requests) == sent
    view = panel.send(prompt)
    assert view is not None, panel.status.value
    conv.wait(10)
    assert len(server.requests) == sent + 1
    assert server.requests[-1].json == shown
    assert ("safety_mode" in shown) is (not documents)
    event("sent")


# -- the safety_mode rule: one rule, refused the same way in both places -------------------------
def test_documents_with_safety_mode_is_refused_before_sending_naming_safety_mode(ip, server):
    from nbchat.backends import get_backend
    from nbchat.notebook.panel import Panel

    ip.user_ns["docs"] = DOCS
    ip.run_line_magic("config", "NbChat.model = 'command-a-03-2025'")
    for line in (
        "--documents docs --safety-mode STRICT",
        "--dry-run --documents docs --safety-mode OFF",
    ):
        res, _ = run(ip, f"%%chat {line}\nWhat colour is the sky?")
        err = res.error_in_exec
        assert isinstance(err, UsageError), err
        assert "--safety-mode" in str(err) and "safety_mode" in str(err)
        assert SAFETY_MODE_CONFLICT in str(err)
    ip.run_line_magic("config", "NbChat.defaults = {'safety_mode': 'STRICT'}")
    res, _ = run(ip, "%%chat --documents docs\nWhat colour is the sky?")
    assert isinstance(res.error_in_exec, UsageError) and "safety_mode" in str(res.error_in_exec)
    assert server.requests == []
    assert "chat" not in ip.user_ns or not ip.user_ns["chat"].turns
    # the panel disables the box and says the same rule
    panel = Panel(Conversation(), get_backend("v2", base_url=server.url, api_key=CANARY))
    panel.documents = DOCS
    assert panel.safety_mode.disabled and SAFETY_MODE_CONFLICT in panel.safety_note.value
    assert "safety_mode" not in panel.request("What colour is the sky?")


# -- a third-party backend (entry point) in %%chat and %chat panel ------------------------------
def test_plugin_backend_in_chat_dry_run_and_panel(echo_plugin) -> None:
    """tests/plugins/nbchat_echo_backend, registered only through its entry point: `%%chat
    --backend echo` answers through it, --dry-run shows its default model, and `%chat panel
    --backend echo` sends through it too."""
    from nbchat.notebook.panel import Panel

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    try:
        res, cap = run(shell, "%%chat --backend echo --dry-run -t 0.2\nhello plugin")
        res.raise_error()
        shown = cap.outputs[0].data["application/json"]
        assert shown["model"] == "echo-1" and shown["temperature"] == 0.2
        res, cap = run(shell, "%%chat --backend echo -t 0.2\nhello plugin")
        res.raise_error()
        conv = shell.user_ns["chat"]
        assert conv.last.text == "echo: hello plugin" and conv.last.backend == "echo"
        assert conv.last.params == {
            k: v for k, v in shown.items() if k not in ("messages", "stream")
        }
        assert "echo: hello plugin" in cap.outputs[0].data["text/plain"]
        res, _ = run(shell, "%chat config")
        res.raise_error()
        panel = shell.run_line_magic("chat", "panel --backend echo")
        assert isinstance(panel, Panel) and panel.conversation is conv
        assert panel.request("via panel")["model"] == "echo-1"
        assert panel.send("via panel") is not None
        conv.wait(10)
        assert conv.last.text == "echo: via panel" and conv.last.backend == "echo"
        res, _ = run(shell, "%%chat --backend nope\nhi")
        assert isinstance(res.error_in_exec, UsageError) and "echo" in str(res.error_in_exec)
    finally:
        shell.run_line_magic("unload_ext", "nbchat")
        InteractiveShell.clear_instance()
