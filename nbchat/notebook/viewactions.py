"""The Continue and Regenerate buttons of a live turn view: what a click does in the kernel.

Both act on the conversation's LAST turn and stream into the SAME view (in the cell that
started the turn): Continue appends to the text shown (the continuation's stream feeds the
view's state as if the reply had not stopped), Regenerate clears the view and shows the new
reply (the old one stays in ``turn.alternatives``). The buttons are offered when the turn
ends: Continue after MAX_TOKENS or Stop, Regenerate on the last turn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ViewActions"]


class ViewActions:
    """Set as ``view.actions``; `listener` wraps the view's listener of each run."""

    def __init__(self, view: Any, conv: Any, backend: Any) -> None:
        self.view, self.conv, self.backend = view, conv, backend
        self.turn: Any = None

    def listener(self, inner: Any, skip_start: bool = False) -> _Listener:
        return _Listener(self, inner, skip_start)

    def offer(self, turn: Any) -> None:
        """At the end of a run: which buttons the view shows (set before its last flush)."""
        from ..followup import can_continue

        self.turn = turn
        last = self.conv.last is turn
        offered = []
        if last and can_continue(turn):
            offered.append("continue")
        if last and turn.done:
            offered.append("regenerate")
        with self.view._lock:
            self.view._st.set_meta(actions=offered)

    def run(self, kind: str) -> None:
        """A click (on the kernel's main thread, from the front end's comm message)."""
        from ..errors import NbChatError
        from .turnstate import TurnState

        view = self.view
        if self.turn is None or self.conv.last is not self.turn or view._running:
            with view._lock:  # not the last finished turn (any more): the buttons go
                view._st.set_meta(actions=[])
            view._flush()
            return
        parent = view._parent
        with view._lock:
            if kind == "regenerate":  # a blank view, sequence numbers going on
                seq = view._st.seq
                view._st = TurnState()
                view._st.seq = seq
            view._done = view._stop_requested = False
            view._t_stop = None
            view._st.error = None
            view._st.t_first = None  # time to first token of this run
            view._st.set_meta(status="waiting", actions=[], error=None)
        if kind == "regenerate":
            view._send_patch({"type": "snap", "state": view.snapshot()})
        inner = view.listener()
        inner.parent = view._parent = parent  # the view's messages stay in its own cell
        listener = self.listener(inner, skip_start=kind == "continue")
        try:
            if kind == "continue":
                self.conv.continue_(self.backend, wait=False, listener=listener)
            else:
                self.conv.regenerate(self.backend, wait=False, listener=listener)
        except NbChatError as exc:
            view.show_error(exc)
            return
        handles = self.conv.running_handles()
        if handles:
            view.attach(handles[-1])


class _Listener:
    """Passes every hook on; offers the buttons at the end. `skip_start`: a continuation's
    first message-start is dropped, so its text extends the reply already shown."""

    def __init__(self, actions: ViewActions, inner: Any, skip_start: bool) -> None:
        self.actions, self.inner, self.skip = actions, inner, skip_start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_event(self, event: dict[str, Any]) -> None:
        if self.skip and event.get("type") == "message-start":
            self.skip = False
            return
        self.inner.on_event(event)

    def on_done(self, turn: Any) -> None:
        try:
            self.actions.offer(turn)
        finally:
            self.inner.on_done(turn)
