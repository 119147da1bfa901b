"""%chat history / resume / search and NbChat.history through a real IPython shell, with the
scripted v2 server (tests/v2server.py) answering over real sockets and a real SQLite store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat import history  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402

MODEL = "command-a-03-2025"


def reply(*pieces: str) -> Any:
    return sse(events_body(text_events(list(pieces))))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "h" / "history.sqlite3"


@pytest.fixture
def ip(db: Path) -> Iterator[Any]:
    with V2Server(default=reply("an", " answer")) as srv:
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "nbchat")
        for line in (
            "NbChat.backend = 'v2'",
            f"NbChat.base_url = '{srv.url}'",
            f"NbChat.model = '{MODEL}'",
            f"NbChat.history = '{db}'",
        ):
            shell.run_line_magic("config", line)
        shell.srv = srv
        try:
            yield shell
        finally:
            shell.run_line_magic("config", "NbChat.history = True")
            shell.run_line_magic("unload_ext", "nbchat")
            InteractiveShell.clear_instance()
            history.configure(None)


def run(ip: Any, source: str) -> tuple[Any, str]:
    with capture_output() as cap:
        res = ip.run_cell(source)
    text = cap.stdout + cap.stderr + "".join(o.data.get("text/plain", "") for o in cap.outputs)
    return res, text


def ok(ip: Any, source: str) -> tuple[Any, str]:
    res, text = run(ip, source)
    res.raise_error()
    return res, text


def test_every_turn_is_recorded_and_listed(ip: Any, db: Path) -> None:
    ok(ip, "%%chat\nwhat is a kernel?")
    ok(ip, "%%chat\nand a notebook?")
    ok(ip, "%%chat -n other\na separate conversation")
    _, text = ok(ip, "%chat history")
    assert "what is a kernel?" in text and "an answer" in text  # the transcript
    cid = history.conversation_id(ip.user_ns["chat"])
    assert f"stored as {cid}" in text and "this kernel stored 2 conversation(s)" in text
    res, _ = ok(ip, "%chat history --all")
    df = res.result
    assert list(df.columns) == list(history.CONVERSATION_COLUMNS)
    assert sorted(zip(df["title"], df["turns"], strict=True)) == [
        ("a separate conversation", 1),
        ("what is a kernel?", 2),
    ]
    res, _ = ok(ip, "%chat search notebook")
    assert list(res.result["prompt"]) == ["and a notebook?"]
    assert list(res.result["conversation"]) == [cid]
    res, _ = run(ip, "%chat search")
    assert isinstance(res.error_in_exec, UsageError) and "search" in str(res.error_in_exec)
    res, _ = run(ip, "%chat history --everything")
    assert isinstance(res.error_in_exec, UsageError) and "--all" in str(res.error_in_exec)


def test_resume_by_id_and_without(ip: Any, db: Path) -> None:
    ok(ip, "%%chat -n a\nfirst in a")
    ok(ip, "%%chat -n b\nfirst in b")
    a_id = history.conversation_id(ip.user_ns["a"])
    b_id = history.conversation_id(ip.user_ns["b"])
    _, text = ok(ip, f"%chat resume {a_id[:6]} -n again")
    assert f"resumed {a_id} into 'again'" in text and "'first in a'" in text
    again = ip.user_ns["again"]
    assert isinstance(again, Conversation) and again is not ip.user_ns["a"]
    assert again.messages == ip.user_ns["a"].messages
    ok(ip, "%%chat -n again\nsecond in a")
    sent = ip.srv.requests[-1].json["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["first in a", "second in a"]
    assert {c["id"]: c["turns"] for c in history.conversations(db)} == {a_id: 2, b_id: 1}
    # no id: the last conversation, never the one the variable already holds
    _, text = ok(ip, "%chat resume -n b")
    assert f"resumed {a_id} into 'b'" in text
    res, _ = run(ip, "%chat resume nope")
    assert isinstance(res.error_in_exec, UsageError) and "conversation id" in str(res.error_in_exec)


def test_history_setting_off_and_path(ip: Any, db: Path, tmp_path: Path) -> None:
    ok(ip, "%config NbChat.history = False")
    ok(ip, "%%chat\nnot recorded")
    assert not db.exists()
    res, _ = run(ip, "%chat history --all")
    assert isinstance(res.error_in_exec, UsageError) and "history is off" in str(res.error_in_exec)
    _, text = ok(ip, "%chat config")
    assert "NbChat.history" in text and "-> off" in text
    other = tmp_path / "elsewhere.sqlite3"
    ok(ip, f"%config NbChat.history = '{other}'")
    ok(ip, "%%chat\nrecorded elsewhere")
    [c] = history.conversations(other)
    assert c["title"] == "recorded elsewhere" and c["turns"] == 1
    assert c["id"] == history.conversation_id(ip.user_ns["chat"])
    _, text = ok(ip, "%chat config")
    assert str(other) in text
