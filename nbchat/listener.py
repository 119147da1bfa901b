"""The two contracts of a running turn: what it tells its listener, what it needs from its
conversation. `nbchat.Conversation` is a `TurnHost`; `notebook.view.TurnView.listener()` and
the headless recorder are `Listener` s (every hook optional).
"""

from __future__ import annotations

from typing import Any, Protocol

from .compose import HistorySource
from .turn import Turn

__all__ = ["Listener", "TurnHost"]


class Listener(Protocol):
    """What a turn tells its listener, in the worker thread. Every hook is optional (a
    listener may define only some; they are looked up by name).

    Order: ``on_start()`` first; then ``on_event(event)`` per stream event,
    ``on_tool_calls(calls)`` and ``on_tool_result(call, message)`` as they happen; and
    ``on_done(turn)`` exactly once, last: no hook runs after it, even when a cancel finalises
    the turn while a hook is still running (on_done then waits for that hook to return and
    runs in its thread). A listener exception is logged, never fatal to the turn.
    """

    def on_start(self) -> None: ...

    def on_event(self, event: dict[str, Any]) -> None: ...

    def on_tool_calls(self, calls: list[dict[str, Any]]) -> None: ...

    def on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None: ...

    def on_done(self, turn: Turn) -> None: ...


class TurnHost(HistorySource, Protocol):
    """What the runner needs from a conversation (`nbchat.Conversation` provides it)."""

    @property
    def system(self) -> Any: ...

    @system.setter
    def system(self, value: Any) -> None: ...

    def add_turn(self, turn: Turn) -> Turn: ...

    def replace_turn(self, cell_key: Any, turn: Turn | None = None) -> int | None: ...

    def register(self, handle: Any) -> None:
        """Track a started turn's `runner.TurnHandle`."""

    def running_handles(self) -> list[Any]:
        """The handles of turns still running, oldest first."""
