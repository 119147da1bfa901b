"""The panel's **Edit and resend**: pick an earlier user turn, edit its prompt, send it again.

`EditControls` is a turn picker, an Edit button and a Cancel edit button. Edit puts the chosen
turn's prompt into the prompt box and puts the panel in edit mode (``panel.editing`` is the
turn's index); Send then resends it through `resend.start_edit`: the request holds the history
before that turn and the edited prompt, and the later turns leave the conversation and the
transcript (kept on the new turn: ``alternatives`` and ``dropped``).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

__all__ = ["EditControls", "turn_label"]


def turn_label(index: int, turn: Any, width: int = 40) -> str:
    """``"2: first words of the prompt…"`` (the user's text, one line)."""
    from ..protocol.messages import display_text

    text = " ".join(display_text(turn.input[-1]).split()) if turn.input else ""
    return f"{index + 1}: {text[:width]}{'…' if len(text) > width else ''}"


class EditControls:
    """The widgets and the edit mode of one panel (``panel.edit_controls``)."""

    def __init__(self, panel: Any) -> None:
        self.panel = panel
        self.picker = w.Dropdown(
            options=[],
            description="turn",
            style={"description_width": "40px"},
            layout=w.Layout(width="260px"),
        )
        self.picker.add_class("nbchat-panel-edit-turn")
        self.edit_button = w.Button(
            description="Edit",
            icon="pencil",
            tooltip="Put this turn's prompt in the box; Send resends it (later turns are "
            "dropped from the request, kept in the new turn's record)",
        )
        self.edit_button.add_class("nbchat-panel-edit")
        self.cancel_button = w.Button(
            description="Cancel edit", icon="times", layout=w.Layout(display="none")
        )
        self.cancel_button.add_class("nbchat-panel-edit-cancel")
        self.edit_button.on_click(lambda _b: self.begin(self.picker.value))
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.widgets = [self.picker, self.edit_button, self.cancel_button]
        self.refresh()

    def refresh(self) -> None:
        """The picker lists the conversation's turns, newest selected."""
        turns = self.panel.conversation.turns
        options = [(turn_label(i, t), i) for i, t in enumerate(turns) if t.input]
        self.picker.options = options
        self.picker.value = options[-1][1] if options else None
        self.edit_button.disabled = not options

    def begin(self, index: int | None) -> None:
        """Edit mode for turn `index`: its prompt in the box, Send resends it."""
        from ..protocol.messages import display_text

        turns = self.panel.conversation.turns
        if index is None or not -len(turns) <= index < len(turns):
            self.panel.status.value = "<small>No turn to edit yet.</small>"
            return
        index %= len(turns)
        turn = turns[index]
        self.panel.prompt.value = display_text(turn.input[-1]) if turn.input else ""
        self.panel.editing = index
        later = len(turns) - index - 1
        self.panel.status.value = (
            f"<small>Editing turn {index + 1}: Send resends it"
            + (
                f"; the {later} later turn{'' if later == 1 else 's'} leave the request "
                "(kept in the new turn's <code>dropped</code>)"
                if later
                else ""
            )
            + ".</small>"
        )
        self.cancel_button.layout.display = None
        self.panel.send_button.description = "Resend"

    def cancel(self) -> None:
        """Leave edit mode (the prompt box is cleared)."""
        if self.panel.editing is not None:
            self.panel.prompt.value = ""
        self.end()
        self.panel.status.value = ""

    def end(self) -> None:
        self.panel.editing = None
        self.cancel_button.layout.display = "none"
        self.panel.send_button.description = "Send"
