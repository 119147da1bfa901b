"""The history store with real kernels (jupyter_client): a conversation survives a kernel
restart, two kernels write one store at once, a kernel SIGKILLed mid-reply loses nothing
finished. Replies come from the scripted v2 server (tests/v2server.py) over real sockets.
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat import history  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = "command-a-03-2025"


def reply(*pieces: str, **kw: Any) -> Any:
    return sse(events_body(text_events(list(pieces))), **kw)


class Kernel:
    """A real ipykernel started by jupyter_client, running cells with a front end's cellId."""

    def __init__(self, db: Path, tmp: Path, notebook: str = "work/analysis.ipynb") -> None:
        from jupyter_client import KernelManager

        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
            ),
            "NBCHAT_HISTORY": str(db),
            "JPY_SESSION_NAME": notebook,  # what Jupyter sets for a notebook's kernel
            "IPYTHONDIR": str(tmp / "ipython"),
            "CO_API_KEY": "",
            "COHERE_API_KEY": "",
        }
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def send(self, code: str, cell_id: str | None = None) -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        metadata = {"cellId": cell_id} if cell_id else {}
        msg = self.kc.session.msg("execute_request", content, metadata=metadata)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]  # type: ignore[no-any-return]

    def run(self, code: str, cell_id: str | None = None, timeout: float = 60) -> str:
        """Run a cell; return its stdout + text outputs; fail on an error."""
        msg_id = self.send(code, cell_id)
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"cell did not finish in {timeout} s: {code!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, c = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(c["text"])
            elif kind in ("execute_result", "display_data"):
                out.append(c["data"].get("text/plain", ""))
            elif kind == "error":
                raise AssertionError(f"{code!r} failed: {c['ename']}: {c['evalue']}")
            elif kind == "status" and c["execution_state"] == "idle":
                return "".join(out)

    def setup(self, url: str) -> None:
        self.run(
            "%load_ext nbchat\n"
            "%config NbChat.backend = 'v2'\n"
            f"%config NbChat.base_url = '{url}'\n"
            f"%config NbChat.model = '{MODEL}'\n"
        )

    def restart(self) -> None:
        self.km.restart_kernel(now=False)  # a shutdown_request first, as Jupyter's restart does
        self.kc.wait_for_ready(timeout=60)

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=True)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "history.sqlite3"


def user_and_answers(request: Any) -> list[tuple[str, str]]:
    out = []
    for m in request.json["messages"]:
        content = m.get("content")
        text = (
            content
            if isinstance(content, str)
            else "".join(b.get("text", "") for b in content or [])
        )
        out.append((m["role"], text))
    return out


def test_resume_after_a_kernel_restart_sends_the_earlier_turns(db: Path, tmp_path: Path) -> None:
    with V2Server(default=reply("default")) as srv:
        srv.push(reply("One", " answer."), reply("Two", " answer."), reply("Three", " answer."))
        k = Kernel(db, tmp_path)
        try:
            k.setup(srv.url)
            for i, q in enumerate(["first question", "second question", "third question"]):
                k.run(f"%%chat\n{q}", cell_id=f"cell-{i}")
            assert len(srv.requests) == 3
            k.restart()
            k.setup(srv.url)
            assert "NameError" in k.run(
                "try:\n    chat\nexcept NameError as e:\n    print('NameError')"
            )
            out = k.run("%chat resume")
            assert "resumed" in out and "3 turn(s)" in out and "work/analysis.ipynb" in out
            srv.push(reply("Four", " answer."))
            k.run("%%chat\nfourth question", cell_id="cell-3")
            assert user_and_answers(srv.requests[-1]) == [
                ("user", "first question"),
                ("assistant", "One answer."),
                ("user", "second question"),
                ("assistant", "Two answer."),
                ("user", "third question"),
                ("assistant", "Three answer."),
                ("user", "fourth question"),
            ]
            # re-running a restored turn's cell replaces that turn (history before it only)
            srv.push(reply("Two", " again."))
            k.run("%%chat\nsecond question, reworded", cell_id="cell-1")
            assert user_and_answers(srv.requests[-1]) == [
                ("user", "first question"),
                ("assistant", "One answer."),
                ("user", "second question, reworded"),
            ]
            out = k.run("print(len(chat), [t.prompt for t in chat])")
            assert out.startswith("4 ") and "'second question, reworded'" in out
            out = k.run("%chat search reworded")
            assert "second question, reworded" in out
        finally:
            k.close()
    [c] = history.conversations(db)
    assert c["turns"] == 4 and c["notebook"] == "work/analysis.ipynb"
    assert [r["prompt"] for r in history.turn_rows(db, conversation=c["id"])] == [
        "first question",
        "second question, reworded",
        "third question",
        "fourth question",
    ]


def test_two_kernels_write_fifty_turns_each_at_once(db: Path, tmp_path: Path) -> None:
    loop = (
        "for i in range(50):\n"
        "    get_ipython().run_cell_magic('chat', '', f'{tag} turn {i}')\n"
        "print('done', len(chat))"
    )
    with V2Server(default=reply("fine", " thanks")) as srv:
        kernels = [Kernel(db, tmp_path / name, notebook=f"{name}.ipynb") for name in "ab"]
        try:
            for name, k in zip("ab", kernels, strict=True):
                k.setup(srv.url)
                k.run(f"tag = {name!r}")
            ids = [k.send(loop) for k in kernels]  # both at once
            for k, msg_id in zip(kernels, ids, strict=True):
                reply_msg = k.kc.get_shell_msg(timeout=240)
                while reply_msg["parent_header"].get("msg_id") != msg_id:
                    reply_msg = k.kc.get_shell_msg(timeout=240)
                assert reply_msg["content"]["status"] == "ok", reply_msg["content"]
        finally:
            for k in kernels:
                k.close()
        assert len(srv.requests) == 100
    convs = history.conversations(db)
    assert sorted((c["notebook"], c["turns"]) for c in convs) == [("a.ipynb", 50), ("b.ipynb", 50)]
    for c in convs:
        tag = c["notebook"][0]
        rows = history.turn_rows(db, conversation=c["id"])
        assert [r["prompt"] for r in rows] == [f"{tag} turn {i}" for i in range(50)]
        assert all(r["status"] == "complete" and r["reply"] == "fine thanks" for r in rows)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_kernel_sigkilled_while_a_reply_streams(db: Path, tmp_path: Path) -> None:
    body = events_body(text_events(["Slow"] + [" word"] * 50))
    with V2Server(default=reply("quick", " one")) as srv:
        k = Kernel(db, tmp_path)
        try:
            k.setup(srv.url)
            for i in range(5):
                k.run(f"%%chat\nquestion {i}")
            srv.push(sse(body, stall_after=len(body) // 3))  # streams a third, then hangs
            k.send("%%chat\nthe question that never finishes")
            deadline = time.monotonic() + 30
            while len(srv.requests) < 6 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(srv.requests) == 6
            time.sleep(0.3)  # the reply is streaming (part of it sent, the rest stalled)
            k.km.signal_kernel(signal.SIGKILL)
            deadline = time.monotonic() + 30
            while k.km.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not k.km.is_alive()
        finally:
            k.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO turns_fts(turns_fts) VALUES ('integrity-check')")
    rows = history.turn_rows(db)
    assert [r["prompt"] for r in rows] == [f"question {i}" for i in range(5)]
    assert all(r["status"] == "complete" for r in rows)
    conv = history.load(rows[0]["conversation"], db)  # and it continues
    assert len(conv) == 5 and conv.messages[-1]["role"] == "assistant"
