"""%%chat / %chat through a real IPython InteractiveShell, a real kernel and real sockets.

The v2 endpoint is `tests/v2server.py` (a real HTTP server on 127.0.0.1 that records every
request body), reached through nbchat's own HTTP client (backend "v2"). Nothing is mocked:
the shell parses and runs the magic exactly as in a notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from v2server import V2Server, error_reply, events_body, sse, text_events

from nbchat.protocol.events import StreamBuilder

CANARY = "canary-KEY-7f3a9c1e"
ISSUE_FLAGS = [
    "-m", "--model", "-t", "--temperature", "-p", "-k", "--frequency-penalty",
    "--presence-penalty", "--max-tokens", "--seed", "--stop", "--safety-mode", "--citations",
    "--logprobs", "--priority", "--tool-choice", "--strict-tools", "--json", "--schema",
    "--documents", "--tools", "--system", "-n", "--name", "--new", "--wait", "--dry-run",
    "--backend", "--no-interpolate",
]  # fmt: skip


def reply(*pieces: str, delay: float = 0.0) -> Any:
    return sse(events_body(text_events(list(pieces) or ["ok"])), delay=delay)


def tool_call_reply(name: str, arguments: dict[str, Any]) -> Any:
    b = StreamBuilder("gen-tool")
    events = [b.start(), b.tool_plan("I will call the tool.")]
    events.append(b.tool_call_start("call_1", name, json.dumps(arguments)))
    events.append(b.tool_call_end())
    events += b.end("TOOL_CALL")
    return sse(events_body(events))


@pytest.fixture
def server():
    with V2Server() as srv:
        yield srv


@pytest.fixture
def ip(server, monkeypatch):
    """A fresh shell with nbchat loaded, talking v2 to the recording server."""
    monkeypatch.setenv("CO_API_KEY", CANARY)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    shell.run_line_magic("config", "NbChat.backend = 'v2'")
    shell.run_line_magic("config", f"NbChat.base_url = '{server.url}'")
    shell.run_line_magic("config", "NbChat.model = 'command-a-03-2025'")
    yield shell
    shell.run_line_magic("unload_ext", "nbchat")
    InteractiveShell.clear_instance()


def run(ip: InteractiveShell, source: str) -> tuple[Any, Any]:
    """Run a cell the way a front end does; return (ExecutionResult, captured output)."""
    with capture_output() as cap:
        res = ip.run_cell(source)
    return res, cap


def all_text(cap: Any) -> str:
    parts = [cap.stdout, cap.stderr]
    for out in cap.outputs:
        parts += [json.dumps(v) if not isinstance(v, str) else v for v in out.data.values()]
    return "\n".join(parts)


def dry_request(ip: InteractiveShell, line: str, body: str) -> dict[str, Any]:
    res, cap = run(ip, f"%%chat --dry-run {line}\n{body}")
    res.raise_error()
    [out] = cap.outputs
    assert set(out.data) >= {"text/plain", "application/json", "text/markdown"}
    assert json.loads(out.data["text/plain"]) == out.data["application/json"]
    return out.data["application/json"]


# -- registration, help, config --------------------------------------------------------------------
def test_load_registers_cell_and_line_magics(ip):
    mm = ip.magics_manager.magics
    assert mm["cell"]["chat"] is not None and mm["cell"]["nbchat"] is not None
    assert mm["cell"]["chat"].__func__ is mm["cell"]["nbchat"].__func__
    assert mm["line"]["chat"].__func__ is mm["line"]["nbchat"].__func__
    ip.run_line_magic("config", "NbChat.model = 'm-1'")
    ip.run_line_magic("config", "NbChat.defaults = {'temperature': 0.1}")
    settings = [c for c in ip.configurables if type(c).__name__ == "NbChat"]
    assert len(settings) == 1 and settings[0].model == "m-1"
    assert settings[0].defaults == {"temperature": 0.1}


def test_reload_ext_does_not_duplicate_or_warn(ip):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ip.run_line_magic("reload_ext", "nbchat")
    assert len([c for c in ip.configurables if type(c).__name__ == "NbChat"]) == 1
    assert ip.find_cell_magic("chat") is not None


def test_existing_chat_magic_is_not_clobbered(ip):
    ip.run_line_magic("unload_ext", "nbchat")

    def other_chat(line, cell):
        return "other"

    ip.register_magic_function(other_chat, "cell", "chat")
    with pytest.warns(UserWarning, match=r"%%chat is already defined.*%%nbchat"):
        ip.run_line_magic("load_ext", "nbchat")
    assert ip.find_cell_magic("chat") is other_chat
    assert type(ip.find_cell_magic("nbchat").__self__).__name__ == "ChatMagics"
    # the line magic %chat was free, so nbchat took it
    assert type(ip.find_line_magic("chat").__self__).__name__ == "ChatMagics"
    del ip.magics_manager.magics["cell"]["chat"]


def test_help_lists_every_flag_with_range_or_unset(ip):
    doc = ip.find_cell_magic("chat").__doc__
    for flag in ISSUE_FLAGS:
        assert f" {flag}" in doc, flag
    assert "@{expr}" in doc and "@@{" in doc and "Examples" in doc
    parser = ip.find_cell_magic("chat").parser
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:  # valued flags: range/allowed + unset
            assert "Unset" in action.help, action.option_strings
    assert "api" not in " ".join(a for act in parser._actions for a in act.option_strings)
    assert "%chat panel" in doc


def test_chat_help_via_question_mark(ip):
    res, cap = run(ip, "%%chat?")
    res.raise_error()
    text = all_text(cap)
    for needle in ["%%chat [-m NAME]", "--temperature", "@{expr}", "0.01..0.99", "Examples"]:
        assert needle in text, needle


# -- dry run: the exact request, nothing sent -------------------------------------------------------
def test_dry_run_carries_every_parameter_and_sends_nothing(ip, server):
    def get_weather(city: str) -> str:
        """Current weather.

        Args:
            city: the city name
        """
        return "sunny"

    ip.user_ns.update(
        docs=["The deadline is Friday.", {"id": "n2", "data": {"text": "Budget: 3k"}}],
        schema={"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        fns=[get_weather],
    )
    line = (
        "-m my-model -t 0 -p 0.5 -k 40 --frequency-penalty 0.2 --presence-penalty 0.3 "
        "--max-tokens 64 --seed 7 --stop END --stop '###' --citations fast "
        "--logprobs --priority 3 --tools fns --tool-choice required --strict-tools "
        "--documents docs --system 'Be brief.'"
    )
    req = dry_request(ip, line, "Hello")
    assert req["model"] == "my-model"
    assert req["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    expected = {
        "temperature": 0.0, "p": 0.5, "k": 40, "frequency_penalty": 0.2,
        "presence_penalty": 0.3, "max_tokens": 64, "seed": 7, "stop_sequences": ["END", "###"],
        "citation_options": {"mode": "FAST"}, "logprobs": True,
        "priority": 3, "tool_choice": "REQUIRED", "strict_tools": True, "stream": True,
    }  # fmt: skip
    for key, value in expected.items():
        assert req[key] == value, key
    assert req["documents"][0] == "The deadline is Friday."
    assert req["documents"][1] == {"id": "n2", "data": {"text": "Budget: 3k"}}
    [tool] = req["tools"]
    assert tool["function"]["name"] == "get_weather"
    assert tool["function"]["parameters"]["properties"]["city"]["type"] == "string"

    # safety_mode is not configurable with documents/tools (Cohere): alone it is sent
    assert dry_request(ip, "--safety-mode strict", "Hello")["safety_mode"] == "STRICT"
    req = dry_request(ip, "--schema schema", "Give JSON")
    assert req["response_format"] == {"type": "json_object", "json_schema": ip.user_ns["schema"]}
    req = dry_request(ip, "--json", "Give JSON")
    assert req["response_format"] == {"type": "json_object"}
    assert server.requests == []  # nothing was sent
    assert "chat" not in ip.user_ns  # a dry run creates no conversation


def test_dry_run_documents_from_dataframe_rows(ip):
    pd = pytest.importorskip("pandas")
    ip.user_ns["df"] = pd.DataFrame({"title": ["a", "b"], "n": [1, 2], "id": ["x1", "x2"]})
    req = dry_request(ip, "--documents df", "Summarise")
    assert req["documents"] == [
        {"id": "x1", "data": {"title": "a", "n": 1}},
        {"id": "x2", "data": {"title": "b", "n": 2}},
    ]


def test_defaults_and_flag_precedence(ip):
    ip.run_line_magic("config", "NbChat.defaults = {'temperature': 0.1, 'max_tokens': 50}")
    req = dry_request(ip, "-t 0.9", "hi")
    assert req["temperature"] == 0.9 and req["max_tokens"] == 50
    ip.run_line_magic("config", "NbChat.defaults = {'temprature': 0.1}")
    res, _ = run(ip, "%%chat --dry-run\nhi")
    assert isinstance(res.error_in_exec, UsageError)
    assert "NbChat.defaults" in str(res.error_in_exec) and "temprature" in str(res.error_in_exec)


# -- interpolation ---------------------------------------------------------------------------------
CODE_WITH_BRACES = textwrap.dedent(
    """\
    Review this:
    config = {"a": 1, "b": {"c": [1, 2]}}
    print(f"{config['a']!r} and {{literal}}")
    {"json": [true, null, {"x": "y"}]}
    echo ${HOME} $1 {{ jinja }} %(name)s
    """
)


def test_interpolation_leaves_code_with_braces_alone(ip):
    req = dry_request(ip, "", CODE_WITH_BRACES)
    assert req["messages"][-1]["content"] == CODE_WITH_BRACES.strip("\n")


def test_interpolation_substitutes_and_escapes(ip):
    ip.user_ns.update(topic="tides", n=3, person={"name": "Ada"})
    body = 'Explain @{topic} in @{n + 1} lines for @{person["name"]}; literal @@{topic} {topic}'
    req = dry_request(ip, "--system 'You teach @{topic}.'", body)
    assert req["messages"][-1]["content"] == (
        "Explain tides in 4 lines for Ada; literal @{topic} {topic}"
    )
    assert req["messages"][0]["content"] == "You teach tides."


def test_interpolation_missing_variable_names_it(ip, server):
    res, _ = run(ip, "%%chat\nWhat about @{undefined_thing}?")
    assert isinstance(res.error_in_exec, UsageError)
    assert "'undefined_thing'" in str(res.error_in_exec)
    assert server.requests == [] and "chat" not in ip.user_ns


def test_interpolation_can_be_turned_off(ip):
    req = dry_request(ip, "--no-interpolate", "Keep @{this} as is")
    assert req["messages"][-1]["content"] == "Keep @{this} as is"
    ip.run_line_magic("config", "NbChat.interpolate = False")
    req = dry_request(ip, "", "Keep @{that} too")
    assert req["messages"][-1]["content"] == "Keep @{that} too"


# -- bad flags: UsageError naming the flag; nothing sent, nothing changed ----------------------------
@pytest.mark.parametrize(
    "line, must_contain",
    [
        ("-t 1.5", ["--temperature", "temperature", "1.5"]),
        ("-t warm", ["--temperature", "warm"]),
        ("-p 1", ["-p", "0.99"]),
        ("-k 900", ["-k", "500"]),
        ("--max-tokens 0", ["--max-tokens"]),
        ("--safety-mode lax", ["--safety-mode", "CONTEXTUAL", "STRICT", "OFF"]),
        ("--citations sometimes", ["--citations", "FAST", "ACCURATE"]),
        ("--tool-choice maybe", ["--tool-choice", "REQUIRED", "NONE"]),
        ("--tool-choice required", ["--tool-choice", "tools"]),
        ("--priority 5000", ["--priority", "999"]),
        ("--stop a --stop b --stop c --stop d --stop e --stop f", ["--stop"]),
        ("--documents nowhere", ["--documents", "'nowhere'"]),
        ("--documents 42", ["--documents", "int"]),
        ("--tools 42", ["--tools", "not a function"]),
        ("--schema 42", ["--schema", "int"]),
        ("--backend nope", ["--backend", "local"]),
        ("--frobnicate", ["unrecognized", "--frobnicate"]),
        ("-n 3x", ["-n/--name", "3x"]),
    ],
)
def test_bad_flag_is_a_usage_error_and_changes_nothing(ip, server, line, must_contain):
    server.push(reply("first"))
    run(ip, "%%chat\nhello")[0].raise_error()
    conv = ip.user_ns["chat"]
    before = conv.to_json()
    sent = len(server.requests)
    res, _ = run(ip, f"%%chat {line}\nsecond")
    err = res.error_in_exec
    assert isinstance(err, UsageError), err
    for part in must_contain:
        assert part in str(err), (part, str(err))
    assert conv.to_json() == before and ip.user_ns["chat"] is conv
    assert len(server.requests) == sent


def test_name_holding_something_else_is_refused(ip, server):
    ip.user_ns["chat"] = {"not": "a conversation"}
    res, _ = run(ip, "%%chat\nhi")
    assert isinstance(res.error_in_exec, UsageError) and "--new" in str(res.error_in_exec)
    assert ip.user_ns["chat"] == {"not": "a conversation"} and server.requests == []


# -- headless (not live): runs in the cell, static bundle, errors raise ------------------------------
def test_parameters_reach_the_server_and_static_output(ip, server):
    server.push(reply("Hello", " there", "!"))
    res, cap = run(ip, "%%chat -t 0.2 -k 5 --max-tokens 30 --seed 1 --stop STOP\nSay hi")
    res.raise_error()
    assert res.result is None  # nothing in Out[]: the bundle is displayed instead
    body = server.requests[-1].json
    assert server.requests[-1].path == "/v2/chat"
    assert body["stream"] is True and body["model"] == "command-a-03-2025"
    assert (body["temperature"], body["k"], body["max_tokens"], body["seed"]) == (0.2, 5, 30, 1)
    assert body["stop_sequences"] == ["STOP"]
    assert body["messages"] == [{"role": "user", "content": "Say hi"}]
    [out] = cap.outputs
    assert set(out.data) >= {"text/plain", "text/markdown", "text/html"}
    assert "Hello there!" in out.data["text/plain"] and "Hello there!" in out.data["text/markdown"]
    conv = ip.user_ns["chat"]
    assert conv.turns[-1].finish_reason == "COMPLETE"
    assert conv.messages[-1]["role"] == "assistant"


def test_history_accumulates_and_new_starts_fresh(ip, server):
    server.push(reply("A1"), reply("A2"), reply("B1"))
    run(ip, "%%chat\nQ1")[0].raise_error()
    run(ip, "%%chat\nQ2")[0].raise_error()
    second = server.requests[-1].json["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    old = ip.user_ns["chat"]
    run(ip, "%%chat --new\nQ3")[0].raise_error()
    assert server.requests[-1].json["messages"] == [{"role": "user", "content": "Q3"}]
    assert ip.user_ns["chat"] is not old and len(old.turns) == 2
    server.push(reply("C1"))
    run(ip, "%%chat -n other --system 'Be terse.'\nQ4")[0].raise_error()
    assert server.requests[-1].json["messages"][0] == {"role": "system", "content": "Be terse."}
    assert ip.user_ns["other"].system == "Be terse."


def test_failed_call_raises_and_is_flagged(ip, server):
    server.push(reply("ok"), error_reply(400, "upstream exploded"))
    run(ip, "%%chat\nfirst")[0].raise_error()
    res, cap = run(ip, "%%chat\nsecond")
    from nbchat.errors import APIError

    assert isinstance(res.error_in_exec, APIError) and res.error_in_exec.status_code == 400
    assert any("upstream exploded" in json.dumps(o.data) for o in cap.outputs)  # static output
    conv = ip.user_ns["chat"]
    assert conv.turns[-1].status == "error"
    assert len(conv.messages) == 2  # the failed turn is not resent


def test_tools_auto_approved_run_in_the_kernel(ip, server):
    calls = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    ip.user_ns["fns"] = [add]
    ip.run_line_magic("config", "NbChat.auto_approve_tools = True")
    server.push(tool_call_reply("add", {"a": 2, "b": 3}), reply("The sum is 5."))
    res, cap = run(ip, "%%chat --tools fns\nWhat is 2 + 3?")
    res.raise_error()
    assert calls == [(2, 3)]
    second = server.requests[-1].json
    assert second["tools"][0]["function"]["name"] == "add"
    tool_msgs = [m for m in second["messages"] if m["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["tool_call_id"] == "call_1"
    assert "5" in json.dumps(tool_msgs[0]["content"])
    assert ip.user_ns["chat"].turns[-1].text == "The sum is 5."


def test_tools_denied_without_a_live_view_unless_auto_approved(ip, server):
    calls = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    ip.user_ns["add"] = add
    server.push(tool_call_reply("add", {"a": 1, "b": 1}), reply("I could not run it."))
    res, cap = run(ip, "%%chat --tools add\nWhat is 1 + 1?")
    res.raise_error()
    assert calls == []
    assert "auto_approve_tools" in cap.stderr
    tool_msgs = [m for m in server.requests[-1].json["messages"] if m["role"] == "tool"]
    assert "denied" in json.dumps(tool_msgs[0]["content"])


# -- live mode (forced in a bare shell): the cell returns at once ------------------------------------
def test_live_mode_returns_at_once_and_wait_blocks(ip, server):
    ip.run_line_magic("config", "NbChat.live = 'always'")
    server.push(reply("warm-up"))  # the first cell pays one-time imports (httpx, the view)
    run(ip, "%%chat\nwarm up")[0].raise_error()
    ip.user_ns["chat"].wait(10)
    server.push(reply(*[f"w{i} " for i in range(20)], delay=0.03))
    t0 = time.perf_counter()
    res, cap = run(ip, "%%chat\nstream please")
    elapsed = time.perf_counter() - t0
    res.raise_error()
    conv = ip.user_ns["chat"]
    assert elapsed < 0.5 and conv.running  # ~0.6 s of stream still to come
    t1 = time.perf_counter()
    run(ip, "x = 1 + 1")[0].raise_error()  # other cells run meanwhile
    assert time.perf_counter() - t1 < 0.2
    turn = conv.wait(10)
    assert turn.status == "complete" and turn.text.split() == [f"w{i}" for i in range(20)]
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in cap.outputs)

    server.push(reply("done", delay=0.05))
    run(ip, "%%chat --wait\nand now wait")[0].raise_error()
    assert not conv.running and conv.turns[-1].text == "done"


# -- secrets --------------------------------------------------------------------------------------
def test_api_key_never_appears_in_any_output(ip, server):
    server.push(reply("fine"), error_reply(401, f"invalid api token {CANARY}"))
    outputs = []
    for src in [
        "%%chat\nhello",
        "%%chat --dry-run -t 0.1\nhello again",
        "%chat config",
        "%config NbChat",
        "%%chat\nthis one fails",
        "%chat history",
        "print(repr(chat), chat.to_json())",
    ]:
        res, cap = run(ip, src)
        outputs.append(all_text(cap) + str(res.error_in_exec or ""))
    assert server.requests[0].headers["authorization"] == f"Bearer {CANARY}"  # it was used
    joined = "\n".join(outputs)
    assert "invalid api token" in joined  # the error was shown ...
    assert CANARY not in joined  # ... but never the key
    # a key set through %config is hidden as well
    ip.run_line_magic("config", "NbChat.api_key = 'other-secret-123'")
    _, cap = run(ip, "%config NbChat")
    _, cap2 = run(ip, "%chat config")
    assert "other-secret-123" not in all_text(cap) + all_text(cap2)
    assert "<hidden>" in all_text(cap)


# -- %chat commands --------------------------------------------------------------------------------
def test_line_commands(ip, server, tmp_path):
    server.push(reply("one"), reply("two"))
    run(ip, "%%chat\nfirst")[0].raise_error()
    run(ip, "%%chat\nsecond")[0].raise_error()
    res, cap = run(ip, "%chat history")
    res.raise_error()
    assert "second" in all_text(cap) and "two" in all_text(cap)
    path = tmp_path / "conv.json"
    run(ip, f"%chat export {path}")[0].raise_error()
    assert json.loads(path.read_text())["turns"][1]["output"][0]["role"] == "assistant"
    pytest.importorskip("pandas")
    csv = tmp_path / "conv.csv"
    run(ip, f"%chat export {csv}")[0].raise_error()
    assert "second" in csv.read_text()
    res, _ = run(ip, "%chat export")
    assert len(res.result) == 4  # one row per message
    res, _ = run(ip, f"%chat export {tmp_path / 'x.txt'}")
    assert isinstance(res.error_in_exec, UsageError) and ".csv" in str(res.error_in_exec)
    run(ip, "%chat stop")[0].raise_error()
    run(ip, "%chat reset")[0].raise_error()
    assert ip.user_ns["chat"].turns == []
    res, _ = run(ip, "%chat frobnicate")
    assert isinstance(res.error_in_exec, UsageError) and "panel" in str(res.error_in_exec)
    res, _ = run(ip, "%chat history -n missing")
    assert isinstance(res.error_in_exec, UsageError) and "missing" in str(res.error_in_exec)


def test_panel_command_shows_a_panel(ip):
    res, cap = run(ip, "%chat panel")
    res.raise_error()
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in cap.outputs)
    assert "chat" in ip.user_ns


def test_panel_command_uses_the_configured_model(ip):
    """%chat panel sends with NbChat.model, like %%chat (not the backend's default model)."""
    from ipywidgets.widgets.widget import _instances

    ip.run_line_magic("config", "NbChat.model = 'my-served-model'")
    res, cap = run(ip, "%chat panel")
    res.raise_error()
    view = next(o.data for o in cap.outputs if "application/vnd.jupyter.widget-view+json" in o.data)
    panel = _instances[view["application/vnd.jupyter.widget-view+json"]["model_id"]]
    assert panel.request_params()["model"] == "my-served-model"


# -- import cost (fresh interpreter) --------------------------------------------------------------
HEAVY = ["pandas", "llama_cpp", "httpx", "ipywidgets", "anywidget", "starlette", "markdown_it"]


def test_import_and_load_ext_stay_light():
    code = textwrap.dedent(
        f"""
        import sys, time, json
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        t0 = time.perf_counter()
        import nbchat
        ip.run_line_magic("load_ext", "nbchat")
        dt = time.perf_counter() - t0
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print(json.dumps({{"seconds": dt, "heavy": heavy}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["seconds"] < 0.3, result


# -- a real kernel: live detection, cell ids, replace-on-rerun ---------------------------------------
@pytest.fixture(scope="module")
def kernel():
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k not in ("CO_API_KEY", "COHERE_API_KEY")}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc: Any, code: str, *, cell_id: str | None = None, allow_stdin: bool = False,
            timeout: float = 60) -> dict[str, Any]:  # fmt: skip
    """Send an execute_request like a front end (metadata.cellId, allow_stdin) and collect it."""
    content = {
        "code": code, "silent": False, "store_history": True, "user_expressions": {},
        "allow_stdin": allow_stdin, "stop_on_error": True,
    }  # fmt: skip
    msg = kc.session.msg(
        "execute_request", content, metadata={"cellId": cell_id} if cell_id else {}
    )
    t0 = time.perf_counter()
    kc.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    while True:
        rep = kc.get_shell_msg(timeout=timeout)
        if rep["parent_header"].get("msg_id") == msg_id:
            break
    replied = time.perf_counter() - t0
    outputs = []
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
        outputs.append(m)
    return {"reply": rep["content"], "outputs": outputs, "seconds": replied}


def value(kc: Any, expr: str) -> Any:
    r = execute(kc, f"import json as _j; print(_j.dumps({expr}))")
    assert r["reply"]["status"] == "ok", r["reply"]
    text = "".join(m["content"]["text"] for m in r["outputs"] if m["msg_type"] == "stream")
    return json.loads(text)


def test_kernel_rerun_replaces_the_cells_turn_and_live_detection(kernel, server):
    setup = (
        "%load_ext nbchat\n"
        "%config NbChat.backend = 'v2'\n"
        f"%config NbChat.base_url = '{server.url}'\n"
        "%config NbChat.api_key = 'k-test'\n"
        "%config NbChat.model = 'command-a-03-2025'\n"  # no GET /v1/models to the scripted server
    )
    assert execute(kernel, setup)["reply"]["status"] == "ok"
    execute(kernel, "chat = None; del chat")
    server.push(reply("a1"), reply("b1"), reply("a2"))
    # headless request (allow_stdin false, as nbclient sends): runs in the cell, static output
    r = execute(kernel, "%%chat\nQuestion A", cell_id="cell-A")
    assert r["reply"]["status"] == "ok"
    kinds = [m["msg_type"] for m in r["outputs"]]
    assert "display_data" in kinds and "comm_open" not in kinds
    data = next(m["content"]["data"] for m in r["outputs"] if m["msg_type"] == "display_data")
    assert {"text/plain", "text/markdown", "text/html"} <= set(data)
    assert execute(kernel, "%%chat\nQuestion B", cell_id="cell-B")["reply"]["status"] == "ok"
    # re-running cell A replaces its turn in place; its request holds only the history before it
    assert execute(kernel, "%%chat\nQuestion A again", cell_id="cell-A")["reply"]["status"] == "ok"
    assert server.requests[-1].json["messages"] == [{"role": "user", "content": "Question A again"}]
    assert value(kernel, "[t.prompt for t in chat.turns]") == ["Question A again", "Question B"]
    assert value(kernel, "[t.text for t in chat.turns]") == ["a2", "b1"]
    assert value(kernel, "[t.cell['cell_id'] for t in chat.turns]") == ["cell-A", "cell-B"]

    # an interactive front end (allow_stdin true, as JupyterLab sends): returns at once,
    # the live widget is opened, the reply streams in the background
    server.push(reply(*[f"t{i} " for i in range(15)], delay=0.2))
    r = execute(kernel, "%%chat\nStream it", cell_id="cell-C", allow_stdin=True)
    assert r["reply"]["status"] == "ok"
    assert r["seconds"] < 2.5  # the stream takes >= 3 s: the cell did not wait for it
    assert value(kernel, "chat.turns[-1].status") == "running"  # still streaming meanwhile
    assert "comm_open" in [m["msg_type"] for m in r["outputs"]]
    assert value(kernel, "chat.wait(10).status") == "complete"
    assert value(kernel, "chat.turns[-1].text").split() == [f"t{i}" for i in range(15)]
    assert value(kernel, "len(chat.turns)") == 3


# -- the real embedded model -------------------------------------------------------------------------
@pytest.mark.engine
def test_embedded_model_headless(ip):
    ip.run_line_magic("config", "NbChat.backend = 'local'")
    ip.run_line_magic("config", "NbChat.model = ''")
    res, cap = run(ip, "%%chat --max-tokens 8 -t 0 --seed 1\nSay hello.")
    res.raise_error()
    turn = ip.user_ns["chat"].turns[-1]
    assert turn.finish_reason in ("COMPLETE", "MAX_TOKENS") and turn.text.strip()
    assert turn.params["model"] == "smollm2-135m"
    [out] = cap.outputs
    assert {"text/plain", "text/markdown", "text/html"} <= set(out.data)


def test_models_command_lists_local_model(ip):
    res, cap = run(ip, "%chat models --backend local")
    res.raise_error()
    assert "smollm2-135m" in cap.stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([str(Path(__file__)), "-q"]))


def test_safety_mode_with_documents_is_refused_before_sending(ip, server):
    """Cohere: safety_mode is not configurable with documents/tools. %%chat refuses it (dry run
    or not) naming the flag, with the sentence the panel shows when it disables the box."""
    from nbchat.protocol.request import SAFETY_MODE_CONFLICT

    ip.user_ns["docs"] = ["The sky is green."]
    for line in (
        "--documents docs --safety-mode STRICT",
        "--dry-run --documents docs --safety-mode OFF",
    ):
        res, _ = run(ip, f"%%chat {line}\nWhat colour is the sky?")
        err = res.error_in_exec
        assert isinstance(err, UsageError), err
        assert "--safety-mode" in str(err) and SAFETY_MODE_CONFLICT in str(err)
    assert server.requests == [] and "chat" not in ip.user_ns
