"""Continue and Regenerate on the panel's turns, and the listener that keeps the panel current.

A panel turn's view gets the same buttons as a ``%%chat`` live view (`viewactions`): Continue
after MAX_TOKENS or Stop, Regenerate on the last turn, both streaming into that view. Here the
runs a click starts also reach the panel: its Stop button stops them, and the footer, the turn
picker and the saved transcript follow when they end.
"""

from __future__ import annotations

from typing import Any

from .viewactions import ViewActions

__all__ = ["PanelActions", "PanelListener"]


class PanelListener:
    """Forward runner callbacks to `inner` (the view's listener), then tell the panel."""

    def __init__(self, panel: Any, inner: Any) -> None:
        self.panel, self.inner = panel, inner

    def __getattr__(self, name: str) -> Any:  # hooks the panel has nothing to add to
        return getattr(self.inner, name)

    def on_done(self, turn: Any) -> None:
        self.inner.on_done(turn)
        self.panel._turn_done(turn)


class PanelActions(ViewActions):
    """`ViewActions` of a panel turn (set as ``view.actions``)."""

    def __init__(self, panel: Any, view: Any, backend: Any) -> None:
        super().__init__(view, panel.conversation, backend)
        self.panel = panel

    def listener(self, inner: Any, skip_start: bool = False) -> Any:
        return super().listener(PanelListener(self.panel, inner), skip_start)

    def run(self, kind: str) -> None:
        """A Continue / Regenerate click: run it, then let Stop reach the new run."""
        super().run(kind)
        handles = self.conv.running_handles()
        if handles:
            with self.panel._lock:
                self.panel._handle = handles[-1]
            self.panel.stop_button.disabled = handles[-1].done  # it may be over already
        self.panel.edit_controls.refresh()
