"""Kernel → Interrupt (jupyter_client interrupt_kernel, SIGINT) stops a streaming reply like
Stop; %chat stop says what it stopped. A real ipykernel, a real v2 HTTP server streaming
slowly, the real v2 client.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

WORDS = 400


@pytest.fixture
def slow_server():
    srv = V2Server(
        default=sse(events_body(text_events([f"w{i} " for i in range(WORDS)])), delay=0.02)
    )
    yield srv
    srv.close()


@pytest.fixture
def kernel():
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    root = str(HERE.parent)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def run(kc: Any, code: str, timeout: float = 60) -> str:
    """Execute `code`; its stdout (errors raise)."""
    msg_id = kc.execute(code)
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            raise AssertionError(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)
    raise TimeoutError(code)


def setup(kc: Any, url: str) -> None:
    run(
        kc,
        "%load_ext nbchat\n%config NbChat.api_key = 'k'\n"
        f"%config NbChat.base_url = {url!r}\n%config NbChat.live = 'always'",
    )


def started(srv: V2Server, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(srv.requests) < n:
        assert time.monotonic() < deadline, "the request never reached the server"
        time.sleep(0.05)
    time.sleep(0.5)  # some of the reply has streamed


STATE = (
    "import json\nfor h in {v}.running_handles(): h.wait(10)\n"
    "t = {v}.turns[-1]\nprint(json.dumps([t.status, t.text, t.error]))"
)


def test_kernel_interrupt_stops_a_streaming_reply(kernel, slow_server) -> None:
    km, kc = kernel
    setup(kc, slow_server.url)
    run(kc, "%%chat -n slow --backend v2\nCount for a long time.")  # returns at once
    started(slow_server, 1)
    km.interrupt_kernel()
    status, text, error = json.loads(run(kc, STATE.format(v="slow")))
    assert status == "cancelled", (status, error)
    assert text.startswith("w0 ") and f"w{WORDS - 1}" not in text  # partial reply kept
    # the kernel still works, and an interrupt with nothing streaming changes nothing
    km.interrupt_kernel()
    time.sleep(0.3)
    assert run(kc, "print(1 + 1)").strip() == "2"
    # a new turn in the same conversation streams normally afterwards (and is resent nothing)
    run(kc, "%%chat -n slow --backend v2 --wait\nAgain.")
    status2, text2, _ = json.loads(run(kc, STATE.format(v="slow")))
    assert status2 == "complete" and f"w{WORDS - 1}" in text2


def test_chat_stop_says_what_it_stopped(kernel, slow_server) -> None:
    km, kc = kernel
    setup(kc, slow_server.url)
    run(kc, "%%chat -n c --backend v2\nCount slowly.")
    started(slow_server, 1)
    said = run(kc, "%chat stop -n c")
    assert said.startswith("stopped the reply to 'Count slowly.' in c after "), said
    assert "partial reply kept" in said
    status, text, _ = json.loads(run(kc, STATE.format(v="c")))
    assert status == "cancelled" and text
    assert run(kc, "%chat stop -n c").strip() == "nothing to stop: no reply is streaming in c"
