"""Acting on the last turn again: Continue (a reply cut by MAX_TOKENS or Stop) and Regenerate.

`continue_turn` asks the model to go on from where the reply stopped and appends what it
writes to the SAME turn: its last assistant message grows (one assistant message in
`Conversation.messages`), usage and response ids add up, the finish reason and status become
the continuation's. The continuation runs as a turn of a scratch conversation holding the
history, the cut turn and a short "continue" message (Cohere's v2 API takes no assistant
prefill); when it is done it is folded into the real turn (and the history store records the
folded turn, under the real turn's id).

`regenerate_turn` re-runs the last turn's user message with the same settings (or others),
replacing the turn in place; the replaced turn goes into ``new_turn.alternatives``.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ValidationError
from .protocol.messages import add_usage, display_text
from .turn import Turn

__all__ = ["continue_turn", "regenerate_turn", "CONTINUE_PROMPT", "can_continue"]

CONTINUE_PROMPT = (
    "Continue exactly where your previous reply stopped. Do not repeat anything already "
    "written and add no preamble; if it stopped inside a code block, continue inside it."
)


def can_continue(turn: Turn | None) -> bool:
    """A finished reply that MAX_TOKENS or a Stop cut, with some text to continue from."""
    if turn is None or not turn.done or not turn.text:
        return False
    return turn.finish_reason == "MAX_TOKENS" or turn.status == "cancelled"


def continue_turn(
    conv: Any,
    backend: Any,
    *,
    wait: bool = True,
    listener: Any = None,
    **params: Any,
) -> Turn:
    """Continue `conv`'s last turn in place (see the module docstring); returns that turn."""
    from . import runner

    backend = resolve_backend(conv, backend)
    with conv.lock:
        turn = conv.last
        if not can_continue(turn):
            state = (
                "no turn" if turn is None else f"{turn.status}, finish_reason {turn.finish_reason}"
            )
            raise ValidationError(
                "continue",
                state,
                "a last turn that ended with MAX_TOKENS or was stopped, with some text",
            )
        history = conv.history(turn) + copy.deepcopy(turn.input + turn.output)
        fields = {k: v for k, v in turn.params.items() if k not in ("tools", "tool_choice")}
    scratch = type(conv)(history)  # a scratch conversation of the same class (no import cycle)
    _share_history_id(conv, scratch)
    fold = _Fold(conv, turn, listener)
    handle = runner.start_turn(
        scratch,
        backend,
        CONTINUE_PROMPT,
        {**fields, **params},
        listener=fold,
        background=not wait,
    )
    conv.register(handle)  # conv.wait() / conv.cancel() reach the continuation
    return turn


class _Fold:
    """Listener of the continuation: passes every hook on, then folds the reply into `turn`."""

    def __init__(self, conv: Any, turn: Turn, inner: Any) -> None:
        self.conv, self.turn, self.inner = conv, turn, inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_done(self, done: Turn) -> None:
        with self.conv.lock:
            t = self.turn
            more = [m for m in done.output if m.get("role") == "assistant"]
            if more:
                last = _last_assistant(t.output)
                if last is None:
                    t.output.append(copy.deepcopy(more[-1]))
                else:
                    _append_message(last, more[-1])
            t.usage = add_usage(t.usage, done.usage)
            t.response_ids.extend(done.response_ids)
            t.finish_reason = done.finish_reason
            t.status = "complete" if done.status == "complete" else done.status
            t.error = done.error
            total = (t.timings.get("total") or 0) + (done.timings.get("total") or 0)
            t.timings["total"] = round(total, 6)
            t.timings["continued"] = int(t.timings.get("continued") or 0) + 1
            # the scratch turn is recorded after this hook: make it the folded turn
            done.id, done.cell, done.params = t.id, copy.deepcopy(t.cell), dict(t.params)
            done.input, done.output = copy.deepcopy(t.input), copy.deepcopy(t.output)
            done.usage, done.response_ids = copy.deepcopy(t.usage), list(t.response_ids)
        hook = getattr(self.inner, "on_done", None)
        if callable(hook):
            hook(t)


def _last_assistant(output: list[dict[str, Any]]) -> dict[str, Any] | None:
    for m in reversed(output):
        if m.get("role") == "assistant":
            return m
    return None


def _append_message(msg: dict[str, Any], more: dict[str, Any]) -> None:
    """`more`'s text appended to `msg`'s (citation offsets shifted); its other blocks added."""
    shift = len(display_text(msg))
    extra = more.get("content")
    content = msg.get("content")
    if isinstance(content, str) and isinstance(extra, str):
        msg["content"] = content + extra
    else:
        blocks = _blocks(content)
        for b in _blocks(extra):
            if b.get("type") == "text" and blocks and blocks[-1].get("type") == "text":
                blocks[-1] = {**blocks[-1], "text": blocks[-1].get("text", "") + b.get("text", "")}
            else:
                blocks.append(b)
        msg["content"] = blocks
    for c in more.get("citations") or []:
        c = copy.deepcopy(c)
        for k in ("start", "end"):
            if isinstance(c.get(k), int):
                c[k] += shift
        msg.setdefault("citations", []).append(c)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return copy.deepcopy(list(content or []))


def resolve_backend(conv: Any, backend: Any) -> Any:
    """`backend`, else the conversation's; a name (or None) through ``get_backend``."""
    backend = backend if backend is not None else conv.backend
    if backend is None or isinstance(backend, str):
        from .backends import get_backend

        backend = get_backend(backend)
    return backend


def _share_history_id(conv: Any, scratch: Any) -> None:
    from .history.store import conversation_id, set_conversation_id

    set_conversation_id(scratch, conversation_id(conv))


def regenerate_turn(
    conv: Any,
    backend: Any,
    *,
    same: bool = True,
    wait: bool = True,
    listener: Any = None,
    tools: list[Any] | None = None,
    approve: Any = None,
    **params: Any,
) -> Turn:
    """Re-run the last turn's user message, replacing the turn (the old one goes into
    ``alternatives``). ``same=True``: the old turn's request settings, then `params`;
    ``same=False``: the conversation's settings, then `params`."""
    from . import runner

    backend = resolve_backend(conv, backend)
    with conv.lock:
        old = conv.last
        if old is None or not old.done or not old.input:
            state = "no turn" if old is None else old.status
            raise ValidationError("regenerate", state, "a finished last turn")
        base = dict(old.params) if same else {**conv.params, "model": old.params.get("model")}
        user = copy.deepcopy(old.input[-1])
        keyed = old.cell_key is not None
        if not keyed:
            conv.remove_turn(old)  # a keyed turn is replaced in place by the runner
    keep = _Alternatives(conv, old, listener)
    try:
        handle = runner.start_turn(
            conv,
            backend,
            user,
            {**base, **params},
            cell=old.cell,
            listener=keep,
            tools=tools,
            approve=approve,
            background=not wait,
        )
    except BaseException:
        if not keyed and keep.new is None:
            conv.add_turn(old)  # refused before anything started: put it back
        raise
    keep.adopt(handle.turn)
    return handle.turn


class _Alternatives:
    """Listener of the regenerated turn: it records the replaced turn first."""

    def __init__(self, conv: Any, old: Turn, inner: Any) -> None:
        self.conv, self.old, self.inner, self.new = conv, old, inner, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def adopt(self, new: Turn | None) -> None:
        with self.conv.lock:
            if new is not None and new is not self.old and self.new is None:
                new.alternatives = [*self.old.alternatives, self.old]
                self.new = new

    def on_start(self) -> None:
        self.adopt(self.conv.last)
        hook = getattr(self.inner, "on_start", None)
        if callable(hook):
            hook()
