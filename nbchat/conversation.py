"""Conversation state kept in the kernel: ordered turns and the plain v2 message list.

A `Conversation` is a list of `Turn` objects (see `nbchat.turn`). A turn is one exchange
started by one user message: the input message(s), and the output messages the model
produced — for a tool-using turn ``assistant(tool_calls) -> tool results -> ... -> assistant
answer`` — plus everything measured on the way (request parameters, response ids,
finish_reason, usage, timings, logprobs, citations, status, the cell that produced it).

`Conversation.messages` is a plain list of v2 message dicts that ``cohere.ClientV2().chat(
messages=...)`` accepts unchanged. It holds the system message (if set) and the messages of
**complete** turns only: a turn cut by cancel or error stays in `.turns` (flagged, with its
partial text), but is never resent as if it were complete.

Thread-safe: the runner's worker thread appends and updates turns while notebook cells read;
every access goes through one re-entrant lock (`Conversation.lock`).

What lives elsewhere: sending (`runner`, which `send` calls), building the request
(`compose`), JSON/JSONL/DataFrame/CSV (`export`, through the `conversation_io` mixin) and the text/markdown transcript
(`transcript`). The methods here are thin delegates to them.

The runner's side of the contract (`runner.TurnHost`): `lock`, `history`, `find_cell_turn`,
`add_turn`, `replace_turn`, `system`, `register` (a started turn's handle: anything with
``done``, ``cancel()``, ``wait()`` and ``turn``) and `running_handles`.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .conversation_io import ConversationIO
from .protocol.messages import add_usage
from .turn import STATUSES, Turn
from .turn import cell_key as _key_of

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend

__all__ = ["Conversation", "Turn", "STATUSES"]


class Conversation(ConversationIO):
    """An ordered list of turns and the v2 ``messages`` list they add up to.

    ``Conversation(messages=None, *, system=None, backend=None, **params)``: `messages` may
    seed the history from a plain v2 message list (a leading system message becomes
    `system`; each user message starts a turn). `backend` and `params` are the defaults that
    `send` uses.

    `.messages` is SDK-ready and holds **complete turns only**: a turn stopped by `cancel()`
    or cut by an error stays in `.turns` flagged (``status``, ``cancelled``,
    ``finish_reason``), with its partial text, but is not resent. Thread-safe: one RLock
    guards every read and write, so a worker thread can stream into a turn while a cell
    reads `.messages` or `.to_dataframe()`.
    """

    def __init__(
        self,
        messages: list[dict[str, Any]] | None = None,
        *,
        system: str | None = None,
        backend: Backend | str | None = None,
        **params: Any,
    ) -> None:
        self._lock = threading.RLock()
        self._turns: list[Turn] = []
        self._system: str | list[dict[str, Any]] | None = system
        self._handles: list[Any] = []
        self.backend = backend
        self.params: dict[str, Any] = dict(params)
        if messages:
            self.extend_messages(messages)

    @property
    def lock(self) -> threading.RLock:
        """The re-entrant lock that guards every turn of this conversation. Hold it to read
        several things consistently (the runner composes and adds a turn under it)."""
        return self._lock

    # -- turns ---------------------------------------------------------------------------------
    @property
    def turns(self) -> list[Turn]:
        """The turns in order (a new list; the Turn objects themselves are live)."""
        with self._lock:
            return list(self._turns)

    def __len__(self) -> int:
        with self._lock:
            return len(self._turns)

    def __getitem__(self, index: int) -> Turn:
        with self._lock:
            return self._turns[index]

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    @property
    def last(self) -> Turn | None:
        with self._lock:
            return self._turns[-1] if self._turns else None

    @property
    def text(self) -> str:
        """The last turn's answer (empty if there is none)."""
        last = self.last
        return last.text if last else ""

    @property
    def system(self) -> str | list[dict[str, Any]] | None:
        """The system prompt, sent first in `.messages`; None for none. Kept by `reset()`."""
        with self._lock:
            return self._system

    @system.setter
    def system(self, value: str | list[dict[str, Any]] | None) -> None:
        with self._lock:
            self._system = value or None

    @property
    def running(self) -> bool:
        with self._lock:
            return any(t.status == "running" for t in self._turns)

    def add_turn(self, turn: Turn) -> Turn:
        """Append a turn (it shares the conversation's lock from now on)."""
        with self._lock:
            turn.share_lock(self._lock)
            self._turns.append(turn)
            return turn

    def find_cell_turn(self, cell_key: Any) -> int | None:
        """Index of the turn produced by the cell `cell_key` (a cell id or a cell dict)."""
        key = _key_of(cell_key)
        if key is None:
            return None
        with self._lock:
            for i, t in enumerate(self._turns):
                if t.cell_key == key:
                    return i
        return None

    def replace_turn(self, cell_key: Any, turn: Turn | None = None) -> int | None:
        """Re-running a cell: put `turn` where the turn of that cell was, in place.

        Returns the index the new turn takes (None when the cell had no turn: then `turn`,
        if given, is appended). The request for the new turn uses only the history before
        that index (see `history`); later turns stay where they are. Without `turn`, the
        cell's old turn is just removed. The runner does this for you when `start_turn` gets
        a ``cell`` with a ``cell_id``.
        """
        with self._lock:
            idx = self.find_cell_turn(cell_key)
            if idx is None:
                if turn is not None:
                    self.add_turn(turn)
                return None
            if turn is None:
                del self._turns[idx]
            else:
                turn.share_lock(self._lock)
                self._turns[idx] = turn
            return idx

    def remove_turn(self, turn: Turn | int) -> None:
        with self._lock:
            if isinstance(turn, int):
                del self._turns[turn]
            elif turn in self._turns:
                self._turns.remove(turn)

    def history(self, before: Turn | int | None = None) -> list[dict[str, Any]]:
        """`.messages` up to (not including) a turn or index: what a request for it sends."""
        with self._lock:
            if isinstance(before, Turn):
                end = self._turns.index(before) if before in self._turns else len(self._turns)
            elif before is None:
                end = len(self._turns)
            else:
                end = before
            out: list[dict[str, Any]] = []
            if self._system:
                out.append({"role": "system", "content": copy.deepcopy(self._system)})
            for t in self._turns[:end]:
                if t.status == "complete":
                    out.extend(copy.deepcopy(t.input))
                    out.extend(copy.deepcopy(t.output))
            return out

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Plain v2 messages for ``cohere.ClientV2().chat(messages=...)``: the system message
        (if set) and the messages of complete turns. Cancelled, failed and running turns are
        left out (see `.turns`). A deep copy: editing it does not change the conversation."""
        return self.history()

    def extend_messages(self, messages: list[dict[str, Any]]) -> None:
        """Append plain v2 messages as complete turns (each user message starts a turn;
        assistant/tool messages are that turn's output; a leading system message sets
        `system` when none is set)."""
        with self._lock:
            current: Turn | None = None
            for i, m in enumerate(messages):
                if not isinstance(m, dict) or "role" not in m:
                    from .errors import ValidationError

                    raise ValidationError(f"messages[{i}]", m, "a v2 message dict with a role")
                m = copy.deepcopy(m)
                role = m["role"]
                if role == "system" and current is None and not self._turns and not self._system:
                    self._system = m.get("content")
                elif role == "user" or current is None:
                    # A history that starts with a non-user message gets a turn without input.
                    user = role == "user"
                    current = self.add_turn(Turn([m] if user else [], [] if user else [m]))
                else:
                    current.output.append(m)
                if current is not None and m.get("role") == "assistant":
                    current.citations.extend(copy.deepcopy(m.get("citations") or []))

    @property
    def usage(self) -> dict[str, Any]:
        """Usage summed over every turn (billed_units and tokens)."""
        with self._lock:
            total: dict[str, Any] | None = None
            for t in self._turns:
                total = add_usage(total, t.usage)
            return total or {}

    # -- running -------------------------------------------------------------------------------
    def register(self, handle: Any) -> None:
        """Track a started turn's handle (the runner calls this when it adds the turn)."""
        with self._lock:
            self._handles = [h for h in self._handles if not h.done]
            self._handles.append(handle)

    def running_handles(self) -> list[Any]:
        """The handles of turns still running, oldest first."""
        with self._lock:
            return [h for h in self._handles if not h.done]

    def wait(self, timeout: float | None = None) -> Turn | None:
        """Block until the running turn(s) finish; return the last turn. ``timeout`` in
        seconds (None: no limit); Ctrl-C / KeyboardInterrupt cancels the running turn."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for h in self.running_handles():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            h.wait(left)
        return self.last

    def cancel(self) -> None:
        """Stop every running turn (partial output kept, flagged cancelled, not resent)."""
        for h in self.running_handles():
            h.cancel()

    def send(
        self,
        prompt: Any,
        backend: Backend | str | None = None,
        wait: bool = True,
        *,
        listener: Any = None,
        tools: list[Any] | None = None,
        approve: Any = None,
        cell: dict[str, Any] | None = None,
        **params: Any,
    ) -> Turn:
        """Send `prompt` (text, content blocks or a user message) and return its Turn.

        `backend`: a Backend, a backend name, or None for the conversation's backend (else
        ``nbchat.backends.get_backend()``). ``wait=True`` runs the turn in this thread and
        raises its error (APIError, ...) after recording it; ``wait=False`` streams in a
        background thread and returns the running Turn at once (see `wait`, `cancel`).
        `params` are v2 request fields (model, temperature, documents, tools as dicts, ...)
        on top of the conversation's defaults; `tools` are Python functions the model may
        call (run after `approve(calls)`, or automatically when `approve` is None).
        ``images=[...]`` (matplotlib figures/axes, PIL images, numpy arrays, IPython Images,
        bytes, paths, URLs; see `nbchat.images`) are appended to the prompt as ``image_url``
        blocks, with ``image_detail`` (auto, low, high); ``thinking={"type": "enabled",
        "token_budget": N}`` asks a reasoning model to think first.
        """
        from . import runner

        backend = backend if backend is not None else self.backend
        if backend is None or isinstance(backend, str):
            from .backends import get_backend

            backend = get_backend(backend)
        merged = {**self.params, **params}
        handle = runner.start_turn(
            self,
            backend,
            prompt,
            merged,
            cell=cell,
            listener=listener,
            tools=tools,
            approve=approve,
            background=not wait,
        )
        return handle.turn

    def continue_(self, backend: Any = None, wait: bool = True, **kwargs: Any) -> Turn:
        """Continue the last reply where MAX_TOKENS or Stop cut it, appending to the SAME turn
        (one assistant message; usage summed). ``listener=`` and request fields as in `send`;
        see `nbchat.followup`."""
        from .followup import continue_turn

        return continue_turn(self, backend, wait=wait, **kwargs)

    def regenerate(self, backend: Any = None, wait: bool = True, **kwargs: Any) -> Turn:
        """Re-run the last turn with its own settings (``same=False``: the conversation's; request
        fields override), replacing it; the old turn is kept in ``new_turn.alternatives``."""
        from .followup import regenerate_turn

        return regenerate_turn(self, backend, wait=wait, **kwargs)

    def edit(
        self, index: int, prompt: Any, backend: Any = None, wait: bool = True, **kwargs: Any
    ) -> Turn:
        """Edit and resend: turn `index`'s prompt replaced by `prompt` and sent with only the
        history before it; that turn and the later ones leave the conversation and are kept on
        the new turn (``alternatives`` / ``dropped``). Request fields as in `send`; see
        `nbchat.resend`."""
        from .resend import edit_turn

        return edit_turn(self, index, prompt, backend, wait=wait, **kwargs)

    # -- copies / reset ------------------------------------------------------------------------
    def fork(self, at: int | None = None) -> Conversation:
        """An independent deep copy (optionally only the first `at` turns). Running turns are
        copied as cancelled snapshots; the original keeps streaming on its own."""
        with self._lock:
            new = Conversation(
                system=copy.deepcopy(self._system),
                backend=self.backend,
                **copy.deepcopy(self.params),
            )
            for t in self._turns[:at]:
                new.add_turn(Turn.from_dict(t.to_dict()))
            return new

    def reset(self) -> None:
        """Forget every turn (running ones are cancelled first); keep the system prompt."""
        self.cancel()
        with self._lock:
            self._turns.clear()

    # -- display -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return self._render(markdown=False)

    def _repr_markdown_(self) -> str:
        return self._render(markdown=True)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {
            "text/plain": self._render(markdown=False),
            "text/markdown": self._render(markdown=True),
        }

    def _render(self, markdown: bool) -> str:
        from .transcript import render

        with self._lock:
            turns = list(self._turns)
            system = self._system
        return render(turns, system, self.usage, markdown=markdown)
