"""A live ``%%chat`` routes its output to the cell that started it, on ipykernel 6 and 7.

Why: the worker thread streams into the view while other cells run. ipykernel keeps "the
current parent" (the request that output belongs to) per kernel in 6.x and per thread (with a
fall-back to the latest cell) in 7.x; messages sent from the worker with the wrong parent end
up attributed to whatever cell runs at that moment (jupyter-widgets/ipywidgets#2358,
ipython/ipykernel#1450). So a real kernel of each version runs, with a real slow v2 server
(tests/v2server.py, ~2 s per reply), these cells sent at once:

    cell A1 %%chat ...                      (must return at once)
    cell A2 %%chat ...                      (same conversation: queued behind A1, returns at once)
    cell B  time.sleep(1.0); print("B")    (runs while A1's reply streams)
    cell W  chat.wait()

and every iopub message of each turn (the widget's comm traffic, the final
update_display_data refreshing the static fallback) must carry the msg_id of the cell that
started it; B's and W's own output stay theirs. Found and fixed this way: from the worker,
comm messages went to B/W on both versions, update_display_data to W on 6 (see
nbchat.notebook.kernel.publish).

ipykernel 6 comes from a venv built once (``python -m venv --system-site-packages`` + pip,
~20-40 s, cached under ~/.cache/nbchat-tests/ipykernel6 or $NBCHAT_TEST_CACHE); the
installed ipykernel is the 7.x one. Both kernels import nbchat from this checkout
(PYTHONPATH), not from wherever an editable install points.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parents[1]
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat.notebook.view import apply_message  # noqa: E402

PIECES = [f"word{i} " for i in range(19)] + ["routing-end."]
REPLY = "".join(PIECES)
DELAY = 0.08  # between SSE events: ~2 s per reply, longer than cell B


# -- the ipykernel 6 environment ------------------------------------------------------------------
def _cache_dir() -> Path:
    base = os.environ.get("NBCHAT_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nbchat-tests"
    )
    return Path(base)


def _ipykernel_version(python: str) -> str | None:
    try:
        out = subprocess.run(
            [python, "-c", "import ipykernel; print(ipykernel.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@pytest.fixture(scope="session")
def ipykernel6_python() -> str:
    """A python whose ipykernel is 6.x (everything else from the system site-packages)."""
    venv = _cache_dir() / "ipykernel6"
    python = str(venv / "bin" / "python")
    marker = venv / ".nbchat-ready"
    version = _ipykernel_version(python) if marker.exists() else None
    if not (version and version.startswith("6.")):
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True
        )
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "ipykernel>=6.29,<7"],
            check=True,
            timeout=600,
        )
        version = _ipykernel_version(python)
        assert version and version.startswith("6."), f"ipykernel 6 venv has {version!r}"
        marker.write_text(version)
    return python


# -- a real kernel, driven through jupyter_client ----------------------------------------------------
@dataclass
class Msg:
    msg: dict[str, Any]

    @property
    def t(self) -> float:
        """When the kernel sent it (header date): the order of events in the kernel."""
        date = self.msg["header"]["date"]
        return date.timestamp() if hasattr(date, "timestamp") else 0.0

    @property
    def type(self) -> str:
        return self.msg["header"]["msg_type"]

    @property
    def parent(self) -> str | None:
        return (self.msg.get("parent_header") or {}).get("msg_id")

    @property
    def content(self) -> dict[str, Any]:
        return self.msg["content"]


@dataclass
class Kernel:
    km: Any
    kc: Any
    iopub: list[Msg] = field(default_factory=list)

    def execute(self, code: str) -> str:
        return self.kc.execute(code, allow_stdin=False, store_history=False)

    def reply(self, msg_id: str, timeout: float = 30) -> tuple[float, dict[str, Any]]:
        """The execute_reply for msg_id (arrival time, message)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no execute_reply for {msg_id} within {timeout} s"
            msg = self.kc.get_shell_msg(timeout=left)
            if msg["parent_header"].get("msg_id") == msg_id:
                return time.monotonic(), msg

    def collect(self, done: Any, timeout: float = 30) -> None:
        """Read iopub into self.iopub until done(self.iopub) is true."""
        deadline = time.monotonic() + timeout
        while not done(self.iopub):
            left = deadline - time.monotonic()
            assert left > 0, "iopub: timed out; got " + ", ".join(m.type for m in self.iopub)
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self.iopub.append(Msg(msg))

    def run(self, code: str, timeout: float = 60) -> list[Msg]:
        """Execute and wait for idle; the iopub messages of that request; errors fail."""
        msg_id = self.execute(code)
        _, reply = self.reply(msg_id, timeout)
        self.collect(lambda ms: _idle(ms, msg_id), timeout)
        mine = [m for m in self.iopub if m.parent == msg_id]
        assert reply["content"]["status"] == "ok", _error_text(mine) or reply["content"]
        return mine


def _idle(msgs: list[Msg], msg_id: str) -> bool:
    return any(
        m.type == "status" and m.parent == msg_id and m.content["execution_state"] == "idle"
        for m in msgs
    )


def _stdout(msgs: list[Msg]) -> str:
    return "".join(m.content["text"] for m in msgs if m.type == "stream")


def _error_text(msgs: list[Msg]) -> str:
    return "\n".join(
        "\n".join(m.content.get("traceback", [])) or m.content.get("text", "")
        for m in msgs
        if m.type in ("error", "stream")
    )


def _start_kernel(python: str, tmp: Path) -> Kernel:
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp / "kernels" / "nbchat-test"
    spec_dir.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "nbchat test",
                "language": "python",
                # this checkout's nbchat, a clean IPython profile, no Cohere key
                "env": {
                    "PYTHONPATH": pythonpath,
                    "IPYTHONDIR": str(tmp / "ipython"),
                    "CO_API_KEY": "",
                    "COHERE_API_KEY": "",
                },
            }
        )
    )
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])
    km = KernelManager(kernel_name="nbchat-test", kernel_spec_manager=ksm)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
    except Exception:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return Kernel(km, kc)


# -- the scenario ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    reply = sse(events_body(text_events(PIECES, id="gen-routing")), delay=DELAY)
    with V2Server(default=reply) as srv:
        yield srv


@pytest.mark.parametrize("major", [7, 6])
def test_live_chat_output_lands_in_its_cell(
    major: int, server: V2Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    python = request.getfixturevalue("ipykernel6_python") if major == 6 else sys.executable
    t_start = time.monotonic()
    k = _start_kernel(python, tmp_path)
    try:
        # set-up; the heavy imports happen here so the chat cells measure only the magic
        out = k.run(
            "%load_ext nbchat\n"
            "%config NbChat.backend = 'v2'\n"
            f"%config NbChat.base_url = {server.url!r}\n"
            "%config NbChat.api_key = 'k-test'\n"
            "%config NbChat.model = 'command-a-03-2025'\n"  # no model discovery GET
            "%config NbChat.live = 'always'\n"
            "import ipykernel, nbchat, nbchat.runner, nbchat.notebook.view, nbchat.backends.cohere\n"
            "print('VERSION', ipykernel.__version__)\n"
            "print('NBCHAT', nbchat.__file__)\n"
        )
        lines = dict(line.split(" ", 1) for line in _stdout(out).splitlines() if " " in line)
        assert lines["VERSION"].split(".")[0] == str(major), lines
        assert Path(lines["NBCHAT"]).resolve().is_relative_to(REPO), lines
        n_before = len(k.iopub)

        # A1, A2 (queued behind A1 in the same conversation), B, W sent at once: each chat
        # cell must return while its reply streams; B runs while A1 streams; W waits for both
        sent = time.monotonic()
        id_a1 = k.execute("%%chat\nSay something for the routing test.")
        id_a2 = k.execute("%%chat\nAnd once more.")
        id_b = k.execute('import time; time.sleep(1.0); print("B")')
        id_w = k.execute("_turn = chat.wait(30)\nprint('W', _turn.finish_reason, len(chat))")
        returned = {}
        for msg_id in (id_a1, id_a2, id_b, id_w):
            t, reply = k.reply(msg_id)
            assert reply["content"]["status"] == "ok", reply["content"]
            returned[msg_id] = t

        def finished(ms: list[Msg]) -> bool:  # W idle and both fallbacks refreshed
            return _idle(ms, id_w) and sum(m.type == "update_display_data" for m in ms) >= 2

        k.collect(finished, timeout=20)
        msgs = k.iopub[n_before:]
    finally:
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=True)
    elapsed = time.monotonic() - t_start
    cells = {id_a1: "A1", id_a2: "A2", id_b: "B", id_w: "W"}

    # Each view's traffic must carry the parent of the cell that created it: a comm belongs
    # to the cell whose execution opened it, a display id to the cell that displayed it.
    owner: dict[str, str | None] = {}
    for m in msgs:
        if m.type == "comm_open":
            owner.setdefault(m.content["comm_id"], m.parent)
        elif m.type == "display_data" and m.content.get("transient", {}).get("display_id"):
            owner.setdefault(m.content["transient"]["display_id"], m.parent)
    turn = [
        m
        for m in msgs
        if m.type in ("comm_open", "comm_msg", "display_data", "update_display_data")
    ]

    def key(m: Msg) -> str:
        return m.content.get("comm_id") or m.content.get("transient", {}).get("display_id")

    wrong = Counter(
        f"{m.type} of {cells.get(owner.get(key(m)), '?')} -> {cells.get(m.parent, m.parent)}"
        for m in turn
        if m.parent != owner.get(key(m)) or m.parent not in (id_a1, id_a2)
    )
    assert not wrong, f"ipykernel {major}: output attributed to the wrong cell: {dict(wrong)}"

    # per chat cell: returned at once, streamed patches rebuild the whole reply, and the
    # displayed fallback was refreshed with the whole reply
    report = []
    for cell_id in (id_a1, id_a2):
        name = cells[cell_id]
        took = returned[cell_id] - sent
        assert took < 1.0, f"%%chat cell {name} took {took:.2f} s to return"
        mine = [m for m in turn if m.parent == cell_id]
        patches = [
            m for m in mine if m.type == "comm_msg" and m.content["data"].get("method") == "custom"
        ]
        assert len(patches) >= 3, f"{name}: expected a streamed reply, got {len(patches)} patches"
        state: dict[str, Any] = {}
        for p in patches:
            state = apply_message(state, p.content["data"]["content"])
        assert REPLY.strip() in "".join(state["blocks"]) + state["tail"], (name, state)
        assert state["meta"]["status"] == "done", (name, state["meta"])
        shown = [m for m in mine if m.type == "display_data"]
        updates = [m for m in mine if m.type == "update_display_data"]
        assert len(shown) == 1 and len(updates) == 1, (name, len(shown), len(updates))
        assert key(updates[0]) == key(shown[0])
        assert REPLY.strip() in updates[0].content["data"]["text/plain"]
        assert REPLY.strip() in updates[0].content["data"]["text/html"]
        report.append(f"{name} returned in {took * 1000:.0f} ms, {len(patches)} patches")

    # the worker really streamed while B ran, and A1's reply outlived B
    b_busy = next(
        m.t
        for m in msgs
        if m.type == "status" and m.parent == id_b and m.content["execution_state"] == "busy"
    )
    b_idle = next(m.t for m in msgs if _idle([m], id_b))
    a1_msgs = [m for m in turn if m.type == "comm_msg" and m.parent == id_a1]
    during_b = [m for m in a1_msgs if b_busy < m.t < b_idle]
    assert len(during_b) >= 3, f"{len(during_b)} streamed updates while cell B was running"
    assert a1_msgs[-1].t > b_idle, "A1's reply ended before cell B finished: B did not overlap it"

    # B's and W's own output belong to B and W
    assert _stdout([m for m in msgs if m.parent == id_b]) == "B\n"
    assert _stdout([m for m in msgs if m.parent == id_w]) == "W COMPLETE 2\n"
    print(
        f"ipykernel {lines['VERSION']}: {'; '.join(report)}; {len(during_b)} A1 patches "
        f"during B; {len(turn)} turn messages, each in its own cell; kernel session "
        f"{elapsed:.1f} s"
    )
