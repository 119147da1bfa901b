"""The notebook as context: @{Err}, %chat fix, --context, --code, through a real InteractiveShell
and a real v2 HTTP server (tests/v2server.py) that records every request body."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from v2server import V2Server, events_body, sse, text_events

from nbchat.notebook.actions import first_code_block
from nbchat.notebook.context import CAP, describe

CANARY = "canary-KEY-51c0de"
SECRET = "sk-live-0123456789abcdef"


def reply(*pieces: str) -> Any:
    return sse(events_body(text_events(list(pieces) or ["ok"])))


@pytest.fixture
def server():
    with V2Server() as srv:
        yield srv


@pytest.fixture
def ip(server, monkeypatch):
    monkeypatch.setenv("CO_API_KEY", CANARY)
    for name in ("last_value", "last_exc", "last_type", "last_traceback"):
        monkeypatch.delattr(sys, name, raising=False)  # no error left by earlier tests
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    shell.run_line_magic("config", "NbChat.backend = 'v2'")
    shell.run_line_magic("config", f"NbChat.base_url = '{server.url}'")
    shell.run_line_magic("config", "NbChat.model = 'command-a-03-2025'")
    yield shell
    shell.run_line_magic("unload_ext", "nbchat")
    InteractiveShell.clear_instance()


def run(ip: InteractiveShell, source: str) -> Any:
    with capture_output():
        return ip.run_cell(source, store_history=True)  # as a front end runs a cell


def user_text(server: V2Server) -> str:
    content = server.requests[-1].json["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


# -- @{Err} -----------------------------------------------------------------------------------------
def test_err_without_an_error_is_a_clear_error(ip, server):
    res = run(ip, "%%chat\nWhat went wrong? @{Err}")
    assert isinstance(res.error_in_exec, UsageError)
    assert "no exception has been raised" in str(res.error_in_exec)
    res = run(ip, "%chat fix")
    assert isinstance(res.error_in_exec, UsageError)
    assert str(res.error_in_exec).startswith("%chat fix: no exception")
    assert server.requests == []  # nothing sent


def test_err_and_err_n_are_the_formatted_exceptions(ip, server):
    failing = run(ip, "d = {}\nd['missing']")
    assert isinstance(failing.error_in_exec, KeyError)
    n = failing.execution_count
    run(ip, "1 / 0")
    server.push(reply("ok"), reply("ok"))
    run(ip, "%%chat\nExplain @{Err}").raise_error()
    last = user_text(server)
    assert last.startswith("Explain ZeroDivisionError: division by zero in cell [")
    assert "Traceback (most recent call last, trimmed)" in last and "1 / 0" in last
    assert "interactiveshell.py" not in last  # IPython's own frames are dropped
    run(ip, f"%%chat\nExplain @{{Err[{n}]}}").raise_error()
    assert "KeyError: 'missing'" in user_text(server) and "d['missing']" in user_text(server)
    res = run(ip, "%%chat\n@{Err[999]}")
    assert isinstance(res.error_in_exec, UsageError)
    assert f"cell [999] raised no exception; cells that did: {n}," in str(res.error_in_exec)


def test_err_long_traceback_is_trimmed(ip, server):
    run(ip, "def deep(k):\n    return 1 / 0 if k == 0 else deep(k - 1)\ndeep(30)")
    server.push(reply("ok"))
    run(ip, "%%chat\n@{Err}").raise_error()
    text = user_text(server)
    assert "frame(s) omitted" in text
    assert text.count("Cell In[") == 8  # 2 first + 6 last frames
    assert "Cell In[1], line 3\n    deep(30)" in text  # the cell's own line comes first
    assert "1 / 0 if k == 0" in text  # the line that raised is kept


def test_a_user_variable_named_err_wins(ip, server):
    ip.user_ns["Err"] = "mine"
    assert run(ip, "%%chat --dry-run\n@{Err}").error_in_exec is None


# -- %chat fix ---------------------------------------------------------------------------------------
def test_chat_fix_sends_the_cell_source_and_error_without_secrets(ip, server):
    source = (
        f'api_key = "{SECRET}"\nheaders = {{"Authorization": "Bearer {CANARY}"}}\nratio = 10 / 0'
    )
    assert isinstance(run(ip, source).error_in_exec, ZeroDivisionError)
    server.push(reply("Fixed:\n```python\nratio = 10 / 1\n```\nDivision by zero."))
    run(ip, "%chat fix --code").raise_error()
    body = server.requests[-1].text if hasattr(server.requests[-1], "text") else None
    raw = str(server.requests[-1].json)
    text = user_text(server)
    assert "ratio = 10 / 0" in text  # the failing cell's source
    assert "ZeroDivisionError: division by zero" in text
    assert SECRET not in raw and CANARY not in raw and (body is None or SECRET not in body)
    assert 'api_key = "***"' in text
    conv = ip.user_ns["chat"]
    assert conv.turns[-1].status == "complete"
    assert ip.rl_next_input == "ratio = 10 / 1"  # --code: the fix is offered as the next cell


def test_chat_fix_n_picks_that_cell(ip, server):
    first = run(ip, "int('x')")
    run(ip, "1 / 0")
    server.push(reply("ok"))
    run(ip, f"%chat fix {first.execution_count}").raise_error()
    assert "ValueError: invalid literal" in user_text(server) and "int('x')" in user_text(server)


# -- --context ----------------------------------------------------------------------------------------
def test_context_dataframe_is_compact_and_bounded(ip, server):
    n = 1_000_000
    ip.user_ns["df"] = pd.DataFrame(
        {"a": np.arange(n), "b": np.linspace(0, 1, n), "c": np.where(np.arange(n) % 2, "x", "y")}
    )
    server.push(reply("ok"))
    run(ip, "%%chat --context df\nWhat is in df?").raise_error()
    text = user_text(server)
    assert text.startswith("What is in df?\n\nContext `df` (pandas")
    assert "1000000 rows x 3 columns" in text and "a: int64" in text and "head(5)" in text
    assert "describe() over 10000 evenly spaced rows of 1000000" in text
    assert len(text) < len("What is in df?") + 2 + CAP


def test_context_cap_cuts_with_a_note():
    wide = pd.DataFrame(
        np.arange(20 * 400).reshape(20, 400),
        columns=[f"a_long_column_name_{i}" for i in range(400)],
    )
    text = describe("wide", wide)
    assert len(text) <= CAP
    assert "[cut to stay under 4000 characters: " in text and "characters" in text.splitlines()[-1]
    assert "first 20 of 400 columns" in text
    big = describe("xs", list(range(100_000)), cap=500)
    assert len(big) <= 500 and big.splitlines()[-1].startswith("[cut to stay under 500")
    arr = describe("arr", np.arange(12.0).reshape(3, 4))
    assert "(3, 4), dtype float64" in arr and "min 0.0, max 11.0" in arr


def test_context_missing_variable_names_the_flag(ip, server):
    res = run(ip, "%%chat --context nope\nhi")
    assert isinstance(res.error_in_exec, UsageError) and "--context" in str(res.error_in_exec)
    assert server.requests == []


# -- --code -------------------------------------------------------------------------------------------
def test_code_flag_puts_the_first_code_block_in_the_next_cell(ip, server):
    server.push(
        reply("Two ways:\n```python\nx = [i * i for i in range(3)]\n", "```\nor\n```\ny = 2\n```")
    )
    run(ip, "%%chat --code\nsquares").raise_error()
    assert ip.rl_next_input == "x = [i * i for i in range(3)]"


def test_first_code_block():
    assert first_code_block("no code") is None
    assert first_code_block("a\n~~~py\nq = 1\n\nr = 2\n~~~\n") == "q = 1\n\nr = 2"
    assert first_code_block("````\n```inner```\n````") == "```inner```"


def test_chat_fix_in_a_real_kernel(server):
    """A real ipykernel (jupyter_client): a cell raises ZeroDivisionError, the next runs %chat
    fix headless (allow_stdin false, as nbclient): the request holds that cell's source (as
    Cell In[n]), the exception type and message, and no secret."""
    import os

    from jupyter_client.manager import start_new_kernel
    from test_magics import execute

    env = {k: v for k, v in os.environ.items() if k not in ("CO_API_KEY", "COHERE_API_KEY")}
    env["CO_API_KEY"] = CANARY
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        setup = (
            "%load_ext nbchat\n%config NbChat.backend = 'v2'\n"
            f"%config NbChat.base_url = '{server.url}'\n%config NbChat.model = 'command-a-03-2025'"
        )
        assert execute(kc, setup)["reply"]["status"] == "ok"
        failing = execute(kc, f'token = "{SECRET}"\ntotal = 0\nmean = 10 / total')
        assert (
            failing["reply"]["status"] == "error"
            and failing["reply"]["ename"] == "ZeroDivisionError"
        )
        n = failing["reply"]["execution_count"]
        server.push(reply("```python\nmean = 10 / max(total, 1)\n```"))
        fixed = execute(kc, "%chat fix")
        assert fixed["reply"]["status"] == "ok", fixed["reply"]
        body = server.requests[-1].json
        text = body["messages"][-1]["content"]
        assert "mean = 10 / total" in text and f"The cell [{n}]:" in text
        assert "ZeroDivisionError: division by zero" in text and f"Cell In[{n}], line 3" in text
        assert SECRET not in str(body) and CANARY not in str(body)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
