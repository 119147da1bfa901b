"""The history store with real SQLite files: round trips, search, flags, file modes, failures,
two processes writing at once, and a process SIGKILLed mid-stream.

Turns are produced by the real runner over `ReplayBackend` (recorded Cohere streams), then
recorded with `nbchat.history.record` exactly as the turn-completion hook does.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from nbchat import history
from nbchat.backends.base import Cancel
from nbchat.conversation import Conversation
from nbchat.errors import APIError, ValidationError
from nbchat.protocol.sse import decode_all

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures" / "cohere-wire"
if not (FIXTURES / "lc_stream_plain.sse").is_file():
    FIXTURES = ROOT.parent / "shared" / "fixtures" / "cohere-wire"
MODEL = {"model": "command-r"}


def fixture_events(name: str) -> list[dict[str, Any]]:
    return decode_all((FIXTURES / f"{name}.sse").read_bytes())


class ReplayBackend:
    """A Backend yielding recorded Cohere streams (one per request, the last repeats); it can
    block after `block_after` events until cancelled, or raise after `raise_after[0]`."""

    name = "replay"

    def __init__(
        self,
        *streams: list[dict[str, Any]],
        block_after: int | None = None,
        raise_after: tuple[int, BaseException] | None = None,
    ) -> None:
        self.streams, self.block_after, self.raise_after = streams, block_after, raise_after
        self.requests: list[dict[str, Any]] = []
        self.blocked = threading.Event()

    def models(self) -> list[str]:
        return ["replay"]

    def stream(self, request: dict[str, Any], cancel: Cancel | None = None) -> Any:
        self.requests.append(json.loads(json.dumps(request)))
        events = self.streams[min(len(self.requests), len(self.streams)) - 1]
        for i, event in enumerate(events):
            if self.raise_after is not None and i == self.raise_after[0]:
                raise self.raise_after[1]
            if i == self.block_after:
                self.blocked.set()
                assert cancel is not None
                cancel.wait(60)
                raise APIError("connection closed (cancelled)")
            yield dict(event)


def magic_function(input: int) -> dict[str, str]:
    """Applies a magic function to an input (the tool of the recorded agent streams).

    Args:
        input: Number to apply the magic function to.
    """
    return {"output": str(input + 2)}


def rich_conversation() -> Conversation:
    """system + a plain turn + a tool-using turn with citations + a cancelled + an error turn."""
    conv = Conversation(system="You are a helpful assistant")
    conv.send("hi", backend=ReplayBackend(fixture_events("lc_stream_plain")), **MODEL)
    tools = ReplayBackend(
        fixture_events("lc_h20241115_agent_stream_call01"),
        fixture_events("lc_h20241115_agent_stream_call02"),
    )
    cell = {"cell_id": "cell-7", "execution_count": 7}
    conv.send("magic_function(3)?", backend=tools, tools=[magic_function], cell=cell, **MODEL)
    blocked = ReplayBackend(fixture_events("lc_h20241008_stream_plain"), block_after=8)
    conv.send("long story", backend=blocked, wait=False, **MODEL)
    assert blocked.blocked.wait(5)
    conv.cancel()
    broken = ReplayBackend(
        fixture_events("lc_stream_plain"), raise_after=(6, APIError("boom", status_code=503))
    )
    with pytest.raises(APIError):
        conv.send("again", backend=broken, **MODEL)
    return conv


def record_all(conv: Conversation, store: history.Store, notebook: str | None = None) -> None:
    for t in conv.turns:
        assert store.record(conv, t, notebook=notebook)
    assert store.flush(10)


def comparable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=repr))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


# -- where ------------------------------------------------------------------------------------------
def test_paths_from_setting_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NBCHAT_HISTORY", raising=False)
    default = history.default_path()
    assert default.parts[-2:] == ("nbchat", "history.sqlite3")
    assert history.resolve_path(None) == default and history.resolve_path(True) == default
    for off in (False, "0", "false", "OFF", "no"):
        assert history.resolve_path(off) is None, off
    assert history.resolve_path(str(tmp_path / "h.db")) == tmp_path / "h.db"
    assert history.resolve_path("~/x.db") == Path.home() / "x.db"
    monkeypatch.setenv("NBCHAT_HISTORY", "off")
    assert history.resolve_path(None) is None and history.get_store() is None
    with pytest.raises(history.HistoryOff):
        history.conversations()
    monkeypatch.setenv("NBCHAT_HISTORY", str(tmp_path / "env.db"))
    assert history.get_store().path == tmp_path / "env.db"
    assert history.get_store() is history.get_store(str(tmp_path / "env.db"))  # one per path


def test_reading_a_missing_store_is_empty_and_creates_nothing(db: Path) -> None:
    assert history.conversations(db) == [] and history.search("x", db) == []
    assert history.turn_rows(db) == [] and not db.exists() and not db.parent.exists()
    with pytest.raises(ValidationError, match="conversation id"):
        history.load("abcd", db)


# -- round trip -------------------------------------------------------------------------------------
def test_every_turn_round_trips_with_flags_and_continues(db: Path) -> None:
    conv = rich_conversation()  # plain, tool-using with citations, cancelled, error
    statuses = [t.status for t in conv.turns]
    assert statuses == ["complete", "complete", "cancelled", "error"]
    store = history.get_store(db)
    record_all(conv, store, notebook="work/analysis.ipynb")
    assert store.warning is None

    [c] = history.conversations(db)
    assert c["turns"] == 4 and c["title"] == "hi" and c["notebook"] == "work/analysis.ipynb"
    assert c["model"] == "command-r" and c["backend"] == "replay"
    rows = history.turn_rows(db, conversation=c["id"])
    assert [r["seq"] for r in rows] == [0, 1, 2, 3]
    assert [(r["status"], r["cancelled"], r["partial"]) for r in rows] == [
        ("complete", 0, 0),
        ("complete", 0, 0),
        ("cancelled", 1, 1),
        ("error", 0, 1),
    ]
    assert rows[3]["error"] and rows[3]["finish_reason"] == "ERROR"
    assert rows[1]["cell_id"] == "cell-7" and rows[1]["execution_count"] == 7
    assert rows[0]["input_tokens"] > 0 and rows[0]["total"] > 0 and rows[0]["ttft"] >= 0
    assert rows[0]["reply"] == conv.turns[0].text

    restored = history.load(c["id"][:6], db)  # a unique prefix works
    assert restored.system == conv.system
    assert restored.messages == conv.messages  # SDK-ready history: complete turns only
    for a, b in zip(restored.turns, conv.turns, strict=True):
        assert comparable(a.to_dict()) == comparable(b.to_dict())
    assert restored[1].tool_calls and restored[1].citations == conv[1].citations

    # it continues where it stopped, into the same stored conversation
    backend = ReplayBackend(fixture_events("lc_stream_plain"))
    turn = restored.send("and now?", backend=backend, **MODEL)
    assert backend.requests[0]["messages"][:-1] == conv.messages
    assert store.record(restored, turn) and store.flush()
    [c2] = history.conversations(db)
    assert c2["id"] == c["id"] and c2["turns"] == 5 and c2["last_used"] >= c["last_used"]


def test_rerun_cell_replaces_its_stored_turn(db: Path) -> None:
    store = history.get_store(db)
    conv = Conversation()
    cells = [{"cell_id": "a", "execution_count": 1}, {"cell_id": "b", "execution_count": 2}]
    for i, cell in enumerate(cells):
        backend = ReplayBackend(fixture_events("lc_stream_plain"))
        conv.send(f"question {i}", backend=backend, cell=cell, **MODEL)
    record_all(conv, store)
    cid = history.conversation_id(conv)
    restored = history.load(cid, db)
    # re-running cell "a" of the restored conversation replaces turn 0, in memory and on disk
    backend = ReplayBackend(fixture_events("va_stream_text"))
    turn = restored.send("question 0, asked again", backend=backend, cell={"cell_id": "a"}, **MODEL)
    assert restored.turns[0] is turn and len(restored) == 2
    assert backend.requests[0]["messages"] == [{"role": "user", "content": turn.prompt}]
    store.record(restored, turn)
    store.flush()
    rows = history.turn_rows(db, conversation=cid)
    assert [(r["seq"], r["prompt"]) for r in rows] == [
        (0, "question 0, asked again"),
        (1, "question 1"),
    ]
    assert history.conversations(db)[0]["turns"] == 2
    assert history.load(cid, db).messages == restored.messages


def test_search_prompts_replies_and_thinking(db: Path) -> None:
    store = history.get_store(db)
    conv = Conversation(
        [
            {"role": "user", "content": "Which gemstone is violet?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Recall the quartz family first."},
                    {"type": "text", "text": "Amethyst is the violet one."},
                ],
            },
            {"role": "user", "content": 'weird "quotes" AND OR NEAR( syntax*'},
            {"role": "assistant", "content": "fine"},
        ]
    )
    other = Conversation([{"role": "user", "content": "unrelated question about tides"}])
    record_all(conv, store)
    record_all(other, store)
    hits = history.search("quartz", db)  # thinking
    assert [h["prompt"] for h in hits] == ["Which gemstone is violet?"]
    assert "[quartz]" in hits[0]["snippet"]
    assert [h["seq"] for h in history.search("amethyst violet", db)] == [0]  # every word, any case
    assert history.search("amethyst tides", db) == []
    assert [h["conversation"] for h in history.search("tid*", db)] == [
        history.conversation_id(other)
    ]
    assert len(history.search('"quotes" AND NEAR(', db)) == 1  # FTS syntax taken literally
    with pytest.raises(ValidationError, match="search"):
        history.search("   ", db)


def test_dataframes(db: Path) -> None:
    pd = pytest.importorskip("pandas")
    conv = rich_conversation()
    record_all(conv, history.get_store(db))
    df = history.to_dataframe(db)
    assert list(df.columns) == list(history.TURN_COLUMNS) and len(df) == 4
    assert pd.api.types.is_datetime64_any_dtype(df["finished_at"])
    assert list(df["status"]) == ["complete", "complete", "cancelled", "error"]
    convs = history.conversations_dataframe(db)
    assert list(convs.columns) == list(history.CONVERSATION_COLUMNS) and convs["turns"][0] == 4
    hits = history.search_dataframe("again", db)
    assert list(hits.columns) == list(history.SEARCH_COLUMNS) and list(hits["seq"]) == [3]


def test_this_process_and_per_notebook_listing(db: Path) -> None:
    store = history.get_store(db)
    a, b = (
        Conversation([{"role": "user", "content": "in a"}]),
        Conversation([{"role": "user", "content": "in b"}]),
    )
    record_all(a, store, notebook="a.ipynb")
    record_all(b, store, notebook="b.ipynb")
    assert {c["title"] for c in history.conversations(db, session=history.SESSION)} == {
        "in a",
        "in b",
    }
    assert history.conversations(db, session="another-process") == []
    assert history.last_conversation(db, notebook="a.ipynb") == history.conversation_id(a)
    assert history.last_conversation(db) == history.conversation_id(b)


# -- the file ---------------------------------------------------------------------------------------
def test_file_is_private_wal_and_intact(db: Path) -> None:
    record_all(rich_conversation(), history.get_store(db))
    assert db.parent.stat().st_mode & 0o777 == 0o700
    for f in db.parent.iterdir():  # the db and its -wal / -shm
        assert f.stat().st_mode & 0o777 == 0o600, f
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO turns_fts(turns_fts) VALUES ('integrity-check')")


# -- a store that cannot be written -----------------------------------------------------------------
def _bad_store(kind: str, tmp_path: Path) -> tuple[Path, Any]:
    if kind == "not a directory":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "history.sqlite3", None
    if kind == "corrupt":
        path = tmp_path / "corrupt.sqlite3"
        path.write_bytes(b"this is not a database, " * 100)
        return path, None
    path = tmp_path / "locked.sqlite3"  # another process holds the write lock
    history.get_store(path).open()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return path, holder


@pytest.mark.parametrize("kind", ["not a directory", "corrupt", "locked"])
def test_unwritable_store_warns_once_and_turns_go_on(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbchat.history import schema

    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 200)
    path, holder = _bad_store(kind, tmp_path)
    store = history.Store(path)  # a fresh store (not the cached one that opened it)
    conv = Conversation()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            backend = ReplayBackend(fixture_events("lc_stream_plain"))
            turn = conv.send(f"q{i}", backend=backend, **MODEL)
            assert turn.status == "complete"
            store.record(conv, turn)
            assert store.flush(10)
    if holder is not None:
        holder.rollback()
        holder.close()
    mine = [w for w in caught if issubclass(w.category, history.HistoryWarning)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    assert str(path) in str(mine[0].message) and store.warning
    assert not store.record(conv, conv.last)  # broken: later turns are dropped quietly
    assert len(conv) == 3 and all(t.complete for t in conv)


# -- several processes ------------------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{tests!r}, {here!r}]
    from test_history import ReplayBackend, fixture_events
    from nbchat import history
    from nbchat.conversation import Conversation

    store = history.get_store({db!r})
    conv = Conversation(system="child {name}")
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()  # go
    for i in range({n}):
        block = {block_last} and i == {n} - 1
        backend = ReplayBackend(fixture_events("lc_stream_plain"), block_after=3 if block else None)
        handle = conv.send(f"{name} turn {{i}}", backend=backend, wait=not block, model="command-r")
        if block:
            backend.blocked.wait(10)
            sys.stdout.write("streaming\\n"); sys.stdout.flush()
            conv.wait(60)
        store.record(conv, conv.last)
        sys.stdout.write(conv.last.id + "\\n"); sys.stdout.flush()
    store.flush()
    """
)


def _child(db: Path, name: str, n: int, block_last: bool = False) -> subprocess.Popen[str]:
    here = str(Path(__file__).resolve().parent)
    code = CHILD.format(
        tests=str(TESTS), here=here, db=str(db), name=name, n=n, block_last=block_last
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_two_processes_write_fifty_turns_each_at_once(db: Path) -> None:
    procs = [_child(db, name, 50) for name in ("left", "right")]
    for p in procs:  # both start together
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    ids = []
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        ids.append(out.split())
    assert [len(i) for i in ids] == [50, 50]
    convs = history.conversations(db)
    assert sorted(c["turns"] for c in convs) == [50, 50]
    rows = history.turn_rows(db)
    assert len(rows) == 100 and {r["turn_id"] for r in rows} == set(ids[0] + ids[1])
    for c in convs:  # each in order, complete, continuing
        conv = history.load(c["id"], db)
        assert [t.prompt for t in conv] == [f"{conv.system[6:]} turn {i}" for i in range(50)]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigkill_while_a_reply_streams_keeps_every_finished_turn(db: Path) -> None:
    proc = _child(db, "killed", 12, block_last=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    finished = []
    for line in proc.stdout:
        if line == "streaming\n":
            break
        finished.append(line.strip())
    assert len(finished) == 11
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO turns_fts(turns_fts) VALUES ('integrity-check')")
    assert [r["turn_id"] for r in history.turn_rows(db)] == finished
    [c] = history.conversations(db)
    assert history.load(c["id"], db).messages[-1]["role"] == "assistant"


def test_a_locked_store_never_stalls_a_turn(db: Path) -> None:
    """Another process holds the write lock: record() gives up after FAST_BUSY_MS and queues
    the turn; the writer thread commits it once the lock is released."""
    store = history.get_store(db)
    store.open()
    conv = Conversation([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert store.record(conv, conv.last)  # returns while the store is locked
        assert not store.flush(0.3)  # the writer is still waiting for the lock
        assert store._thread is not None and store._thread is not threading.current_thread()
    finally:
        holder.rollback()
        holder.close()
    assert store.flush(10) and store.warning is None
    assert [r["prompt"] for r in history.turn_rows(db)] == ["x"]


# -- the command line -------------------------------------------------------------------------------
def test_cli_lists_searches_and_shows(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nbchat.cli import main

    assert main(["history", "--db", str(db)]) == 0
    assert "no stored conversations" in capsys.readouterr().out
    conv = rich_conversation()
    record_all(conv, history.get_store(db), notebook="nb.ipynb")
    cid = history.conversation_id(conv)
    assert main(["history", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "last_used", "turns", "model", "notebook", "title"]
    assert out[1].startswith(cid) and "nb.ipynb" in out[1] and out[1].endswith("hi")
    assert main(["history", "--db", str(db), "--search", "again", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [(h["conversation"], h["seq"]) for h in hits] == [(cid, 3)]
    assert main(["history", "--db", str(db), cid[:5]]) == 0
    assert "[user] magic_function(3)?" in capsys.readouterr().out
    assert main(["history", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["turns"] == 4
    assert main(["history", "--db", str(db), "nope"]) == 1  # one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("nbchat: error:") and "conversation id" in err


def test_nbchat_ask_records_its_turn(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from v2server import V2Server, error_reply, events_body, sse, text_events

    from nbchat.cli import main

    monkeypatch.setenv("NBCHAT_HISTORY", str(db))
    with V2Server() as srv:
        srv.push(sse(events_body(text_events(["Blue", " sky"]))), error_reply(400, "refused here"))
        base = ["ask", "--backend", "v2", "--base-url", srv.url, "-m", "command-r", "-q"]
        assert main([*base, "--system", "be brief", "why blue?"]) == 0
        assert main([*base, "will fail"]) == 1
    assert capsys.readouterr().out == "Blue sky\n"
    rows = history.turn_rows(db)
    assert [(r["prompt"], r["reply"], r["status"]) for r in rows] == [
        ("why blue?", "Blue sky", "complete"),
        ("will fail", "", "error"),
    ]
    assert rows[0]["model"] == "command-r" and rows[0]["backend"] == "v2"
    assert (
        rows[0]["output_tokens"]
        and rows[0]["ttft"] is not None
        and "refused here" in rows[1]["error"]
    )
    first = history.load(rows[0]["conversation"], db)
    assert first.system == "be brief" and first.messages[-1]["role"] == "assistant"


def test_conversation_load_takes_a_file_or_a_history_id(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBCHAT_HISTORY", str(db))
    conv = Conversation(system="s")
    conv.send("hello", backend=ReplayBackend(fixture_events("lc_stream_plain")), **MODEL)
    cid = history.conversation_id(conv)  # recorded by the runner's hook
    restored = Conversation.load(cid)
    assert restored.messages == conv.messages and history.conversation_id(restored) == cid
    assert Conversation.load(cid[:5]).messages == conv.messages
    path = tmp_path / "saved.json"
    conv.save(path)
    assert Conversation.load(path).messages == conv.messages
    assert Conversation.load(str(path)).messages == conv.messages
    monkeypatch.chdir(tmp_path)
    assert Conversation.load("saved.json").messages == conv.messages  # relative file name
    with pytest.raises(FileNotFoundError):
        Conversation.load("missing.json")
    with pytest.raises(ValidationError, match="conversation id"):
        Conversation.load("nosuchid")
    assert not history.is_history_id("a/b") and history.is_history_id(cid)
