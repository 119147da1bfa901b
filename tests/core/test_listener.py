"""runner.Listener ordering: on_start first, on_done exactly once and last, even when a cancel
finalises the turn while a hook is still running in the worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from nbchat.backends.base import Cancel
from nbchat.conversation import Conversation
from nbchat.protocol.events import StreamBuilder
from nbchat.runner import Listener, start_turn


class Words:
    """A real Backend: streams `n` text pieces (ignoring cancel, like a busy C call)."""

    name = "words"

    def __init__(self, n: int) -> None:
        self.n = n

    def models(self) -> list[str]:
        return ["w"]

    def stream(self, request: dict[str, Any], cancel: Cancel | None = None) -> Iterator[dict]:
        b = StreamBuilder()
        yield b.start()
        for i in range(self.n):
            yield from b.text(f"w{i} ")
        yield from b.end("COMPLETE")


class Log:
    def __init__(self, block_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.block_at = block_at
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.events = 0

    def _add(self, name: str) -> None:
        with self.lock:
            self.calls.append(name)

    def on_start(self) -> None:
        self._add("on_start")

    def on_event(self, event: dict[str, Any]) -> None:
        self._add("on_event")
        self.events += 1
        if self.events == self.block_at:
            self.blocked.set()
            self.release.wait(10)

    def on_tool_calls(self, calls: list[dict[str, Any]]) -> None:
        self._add("on_tool_calls")

    def on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None:
        self._add("on_tool_result")

    def on_done(self, turn: Any) -> None:
        self._add("on_done")
        self.done.set()


def test_a_log_is_a_listener() -> None:
    listener: Listener = Log()  # structurally a Listener (checked by mypy on this file)
    assert callable(listener.on_done)


def test_cancel_during_a_hook_defers_on_done_until_the_hook_returns() -> None:
    log = Log(block_at=5)
    handle = start_turn(Conversation(), Words(50), "x", {"model": "w"}, listener=log)
    assert log.blocked.wait(10)
    turn = handle.cancel()  # the worker is stuck in on_event: the canceller finalises
    assert handle.done and turn.status == "cancelled"
    assert "on_done" not in log.calls  # not while on_event still runs
    log.release.set()
    assert log.done.wait(10)
    handle._thread.join(10)
    assert log.calls[0] == "on_start" and log.calls[-1] == "on_done"
    assert log.calls.count("on_done") == 1 and log.calls.count("on_event") == 5


def test_no_hook_after_on_done_under_racing_cancels() -> None:
    for i in range(40):
        log = Log()
        handle = start_turn(Conversation(), Words(200), "x", {"model": "w"}, listener=log)
        time.sleep((i % 8) * 0.0005)
        handle.cancel()
        assert log.done.wait(10)
        handle._thread.join(10)
        time.sleep(0.001)
        with log.lock:
            calls = list(log.calls)
        assert calls.count("on_done") == 1 and calls[-1] == "on_done", calls[-3:]
        assert calls.count("on_start") <= 1 and "on_start" not in calls[1:]
