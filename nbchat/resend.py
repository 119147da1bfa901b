"""Edit and resend: send an edited version of an earlier user turn in its place.

`edit_turn(conv, index, prompt)` replaces turn `index` with a new turn for `prompt`: the request
holds the history before that turn and the edited prompt, nothing that came after. Nothing is
lost: a `Conversation.fork` taken first keeps every turn as it was (ids included; a running
turn would be a cancelled snapshot, but editing is refused while one runs), and the new turn
records the replaced turn in ``alternatives`` (as `Conversation.regenerate` does) and the later
turns, in order, in ``dropped``.
"""

from __future__ import annotations

from typing import Any

from .errors import ValidationError
from .turn import Turn

__all__ = ["edit_turn", "start_edit"]


def edit_turn(
    conv: Any,
    index: int,
    prompt: Any,
    backend: Any = None,
    *,
    wait: bool = True,
    listener: Any = None,
    tools: list[Any] | None = None,
    approve: Any = None,
    **params: Any,
) -> Turn:
    """Resend turn `index` (negative counts from the end) with `prompt` (text, content blocks
    or a user message) and the conversation's settings plus `params`; the turns from `index`
    on leave the conversation (kept on the new turn, see the module docstring). Returns the new
    turn (running when ``wait=False``)."""
    return start_edit(
        conv,
        index,
        prompt,
        backend,
        listener=listener,
        tools=tools,
        approve=approve,
        background=not wait,
        **params,
    ).turn


def start_edit(
    conv: Any,
    index: int,
    prompt: Any,
    backend: Any = None,
    *,
    listener: Any = None,
    tools: list[Any] | None = None,
    approve: Any = None,
    background: bool = True,
    **params: Any,
) -> Any:
    """`edit_turn`, returning the new turn's `TurnHandle` (what the panel attaches its view to);
    ``background=True`` returns at once."""
    from . import runner
    from .followup import resolve_backend

    if isinstance(prompt, str):
        prompt = prompt.strip()
    if not prompt:
        raise ValidationError("prompt", repr(prompt), "a non-empty message")
    backend = resolve_backend(conv, backend)
    with conv.lock:
        turns = list(conv.turns)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValidationError("index", repr(index), "a turn number (int)")
        if not -len(turns) <= index < len(turns):
            allowed = f"0 .. {len(turns) - 1}" if turns else "none (no turns yet)"
            raise ValidationError("index", str(index), allowed)
        if conv.running:
            raise ValidationError("edit", "a turn is running", "no running turn (Stop it first)")
        index %= len(turns)
        branch = conv.fork()  # every turn as it was, before anything changes
        old, later = branch.turns[index], branch.turns[index + 1 :]
        removed = turns[index:]
        for t in removed:
            conv.remove_turn(t)
    keep = _Record(conv, old, later, listener)
    try:
        handle = runner.start_turn(
            conv,
            backend,
            prompt,
            {**conv.params, **params},
            listener=keep,
            tools=tools,
            approve=approve,
            background=background,
        )
    except BaseException:
        if keep.new is None:
            with conv.lock:  # refused before anything started: put the turns back
                for t in removed:
                    conv.add_turn(t)
        raise
    keep.adopt(handle.turn)
    return handle


class _Record:
    """Listener of the resent turn: it records the replaced and dropped turns first."""

    def __init__(self, conv: Any, old: Turn, later: list[Turn], inner: Any) -> None:
        self.conv, self.old, self.later, self.inner = conv, old, later, inner
        self.new: Turn | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def adopt(self, new: Turn | None) -> None:
        with self.conv.lock:
            if new is not None and self.new is None and new.id != self.old.id:
                new.alternatives = [*self.old.alternatives, self.old]
                new.dropped = list(self.later)
                self.new = new

    def on_start(self) -> None:
        self.adopt(self.conv.last)
        hook = getattr(self.inner, "on_start", None)
        if callable(hook):
            hook()
