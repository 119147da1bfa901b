"""Conversation state kept in the kernel: ordered turns and the plain v2 message list.

A `Conversation` is a list of `Turn` objects. A turn is one exchange started by one user
message: the input message(s), and the output messages the model produced — for a tool-using
turn ``assistant(tool_calls) -> tool results -> ... -> assistant answer`` — plus everything
measured on the way (request parameters, response ids, finish_reason, usage, timings,
logprobs, citations, status, the cell that produced it).

`Conversation.messages` is a plain list of v2 message dicts that ``cohere.ClientV2().chat(
messages=...)`` accepts unchanged. It holds the system message (if set) and the messages of
**complete** turns only: a turn cut by cancel or error stays in `.turns` (flagged, with its
partial text), but is never resent as if it were complete.

Thread-safe: the runner's worker thread appends and updates turns while notebook cells read;
every access goes through one re-entrant lock.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend
    from .runner import TurnHandle

__all__ = ["Conversation", "Turn", "STATUSES"]

STATUSES = ("running", "complete", "cancelled", "error")
_FORMAT_VERSION = 1


def _text_of(message: dict[str, Any]) -> str:
    """Text of a message whose content is a string or a list of blocks (thinking excluded)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") in (None, "text"):
            parts.append(block.get("text") or "")
        elif block.get("type") == "document":  # tool results
            parts.append(json.dumps((block.get("document") or {}).get("data"), ensure_ascii=False))
    return "".join(parts)


def _as_message(content: Any, role: str = "user") -> dict[str, Any]:
    """A user message from a string, a list of content blocks or a message dict."""
    if isinstance(content, dict) and "role" in content:
        return copy.deepcopy(content)
    if isinstance(content, (str, list)):
        return {"role": role, "content": copy.deepcopy(content)}
    from .errors import ValidationError

    raise ValidationError(
        "message", content, "a string, a list of content blocks or a message dict"
    )


def _add_usage(total: dict[str, Any] | None, more: dict[str, Any] | None) -> dict[str, Any] | None:
    """Sum two usage dicts field by field (nested dicts summed, numbers added)."""
    if not more:
        return total
    out = copy.deepcopy(total) if total else {}
    for key, value in more.items():
        if isinstance(value, dict):
            out[key] = _add_usage(out.get(key) if isinstance(out.get(key), dict) else None, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            prev = out.get(key)
            out[key] = (prev if isinstance(prev, (int, float)) else 0) + value
        else:
            out[key] = value
    return out


class Turn:
    """One exchange: the user's input message(s) and everything the model answered.

    Fields: ``id``, ``params`` (the request without ``messages``), ``input`` (the user
    message(s)), ``output`` (assistant and tool messages, in order), ``response_ids`` (one per
    request round), ``finish_reason`` (of the last round), ``usage`` (summed over rounds),
    ``timings`` (``ttft`` s to the first token, ``total`` s, ``tokens_per_second``,
    ``started_at`` epoch seconds), ``logprobs``, ``citations``, ``status`` (``running``,
    ``complete``, ``cancelled``, ``error``), ``error`` (redacted text), ``cell``
    (``{"execution_count", "cell_id"}`` when known) and ``backend`` (its name).

    A cancelled or failed turn keeps its partial output (``cancelled`` is True, or
    ``finish_reason == "ERROR"`` / ``status == "error"``) but `Conversation.messages` leaves it
    out, so it is never resent as if complete. While a turn is running, `text` shows the text
    streamed so far.
    """

    __slots__ = (
        "id",
        "params",
        "input",
        "output",
        "response_ids",
        "finish_reason",
        "usage",
        "timings",
        "logprobs",
        "citations",
        "status",
        "error",
        "cell",
        "backend",
        "exception",
        "_live",
        "_lock",
    )

    def __init__(
        self,
        input: list[dict[str, Any]] | None = None,
        output: list[dict[str, Any]] | None = None,
        *,
        params: dict[str, Any] | None = None,
        status: str = "complete",
        id: str | None = None,
        response_ids: list[str] | None = None,
        finish_reason: str | None = None,
        usage: dict[str, Any] | None = None,
        timings: dict[str, Any] | None = None,
        logprobs: list[dict[str, Any]] | None = None,
        citations: list[dict[str, Any]] | None = None,
        error: str | None = None,
        cell: dict[str, Any] | None = None,
        backend: str | None = None,
    ) -> None:
        self.id = id or uuid.uuid4().hex[:12]
        self.params = dict(params or {})
        self.input = list(input or [])
        self.output = list(output or [])
        self.response_ids = list(response_ids or [])
        self.finish_reason = finish_reason
        self.usage = usage
        self.timings = dict(timings or {})
        self.logprobs = list(logprobs or [])
        self.citations = list(citations or [])
        self.status = status
        self.error = error
        self.cell = dict(cell) if cell else None
        self.backend = backend
        self.exception: BaseException | None = None  # the error object (not serialised)
        self._live: Any = None  # the runner's Accumulator while a round streams
        self._lock: Any = threading.RLock()  # replaced by the conversation's lock when added

    # -- derived -------------------------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def done(self) -> bool:
        return self.status != "running"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Input then output messages (deep copies)."""
        with self._lock:
            return copy.deepcopy(self.input + self.output)

    @property
    def prompt(self) -> str:
        with self._lock:
            return "\n".join(_text_of(m) for m in self.input)

    @property
    def text(self) -> str:
        """The answer: text of the last assistant message, or the text streamed so far."""
        with self._lock:
            live = self._live
            if live is not None and self.status == "running":
                return live.text
            for m in reversed(self.output):
                if m.get("role") == "assistant":
                    return _text_of(m)
            return ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """Every tool call of every round, in order."""
        with self._lock:
            return [
                copy.deepcopy(c)
                for m in self.output
                if m.get("role") == "assistant"
                for c in m.get("tool_calls") or []
            ]

    @property
    def cell_key(self) -> str | None:
        return _cell_key(self.cell)

    @property
    def model(self) -> str | None:
        return self.params.get("model")

    def raise_for_status(self) -> Turn:
        """Raise the turn's error (or `Cancelled`) if it did not complete; return self."""
        from .errors import Cancelled, NbChatError

        if self.status == "error":
            raise self.exception or NbChatError(self.error or "turn failed")
        if self.status == "cancelled":
            raise Cancelled(self.error or "cancelled")
        return self

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            d = {
                "id": self.id,
                "status": self.status,
                "params": self.params,
                "input": self.input,
                "output": self.output,
                "response_ids": self.response_ids,
                "finish_reason": self.finish_reason,
                "usage": self.usage,
                "timings": self.timings,
                "logprobs": self.logprobs,
                "citations": self.citations,
                "error": self.error,
                "cell": self.cell,
                "backend": self.backend,
            }
            if self.status == "running" and self._live is not None:
                # A snapshot of a running turn carries the partial message.
                d["output"] = self.output + [self._live.message]
            return copy.deepcopy(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        status = d.get("status") or "complete"
        error = d.get("error")
        if status == "running":  # a saved snapshot can never finish: flag it as cut
            status, error = "cancelled", error or "saved while running"
        if status not in STATUSES:
            from .errors import ValidationError

            raise ValidationError("turn.status", status, ", ".join(STATUSES))
        return cls(
            copy.deepcopy(d.get("input") or []),
            copy.deepcopy(d.get("output") or []),
            params=copy.deepcopy(d.get("params") or {}),
            status=status,
            id=d.get("id"),
            response_ids=d.get("response_ids"),
            finish_reason=d.get("finish_reason"),
            usage=copy.deepcopy(d.get("usage")),
            timings=d.get("timings"),
            logprobs=copy.deepcopy(d.get("logprobs")),
            citations=copy.deepcopy(d.get("citations")),
            error=error,
            cell=d.get("cell"),
            backend=d.get("backend"),
        )

    def copy(self) -> Turn:
        return Turn.from_dict(self.to_dict())

    # -- display -------------------------------------------------------------------------------
    def stats(self) -> str:
        """One line: status, finish reason, tokens, tokens/s, time to first token."""
        parts = [self.status if self.status != "complete" else (self.finish_reason or "complete")]
        if self.status == "complete" and self.finish_reason:
            parts = [self.finish_reason]
        tok = ((self.usage or {}).get("tokens") or {}) or (
            (self.usage or {}).get("billed_units") or {}
        )
        if tok:
            parts.append(
                f"{_num(tok.get('input_tokens'))} in / {_num(tok.get('output_tokens'))} out tokens"
            )
        if self.timings.get("tokens_per_second"):
            parts.append(f"{self.timings['tokens_per_second']:.1f} tok/s")
        if self.timings.get("ttft") is not None:
            parts.append(f"ttft {self.timings['ttft'] * 1000:.0f} ms")
        if self.error:
            parts.append(f"error: {self.error}")
        return " · ".join(parts)

    def __repr__(self) -> str:
        text = self.text
        if len(text) > 60:
            text = text[:57] + "..."
        return f"Turn(id={self.id!r}, status={self.status!r}, finish_reason={self.finish_reason!r}, text={text!r})"


def _num(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "?" if v is None else str(v)


def _cell_key(cell: Any) -> str | None:
    """The stable identity of a cell: its cell id (execution counts change on every run)."""
    if cell is None:
        return None
    if isinstance(cell, str):
        return cell or None
    if isinstance(cell, dict):
        cid = cell.get("cell_id")
        return str(cid) if cid else None
    return None


class Conversation:
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
        self._handles: list[TurnHandle] = []
        self.backend = backend
        self.params: dict[str, Any] = dict(params)
        if messages:
            self.extend_messages(messages)

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
            turn._lock = self._lock
            self._turns.append(turn)
            return turn

    def find_cell_turn(self, cell_key: Any) -> int | None:
        """Index of the turn produced by the cell `cell_key` (a cell id or a cell dict)."""
        key = _cell_key(cell_key)
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
                turn._lock = self._lock
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
                total = _add_usage(total, t.usage)
            return total or {}

    # -- running -------------------------------------------------------------------------------
    def _register(self, handle: TurnHandle) -> None:
        with self._lock:
            self._handles = [h for h in self._handles if not h.done]
            self._handles.append(handle)

    def _running_handles(self) -> list[TurnHandle]:
        with self._lock:
            return [h for h in self._handles if not h.done]

    def wait(self, timeout: float | None = None) -> Turn | None:
        """Block until the running turn(s) finish; return the last turn. ``timeout`` in
        seconds (None: no limit); Ctrl-C / KeyboardInterrupt cancels the running turn."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for h in self._running_handles():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            h.wait(left)
        return self.last

    def cancel(self) -> None:
        """Stop every running turn (partial output kept, flagged cancelled, not resent)."""
        for h in self._running_handles():
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

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "format": "nbchat.conversation",
                "version": _FORMAT_VERSION,
                "system": copy.deepcopy(self._system),
                "params": _jsonable(self.params),
                "turns": [t.to_dict() for t in self._turns],
            }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conversation:
        if isinstance(d, list):  # a plain message list
            return cls(d)
        conv = cls(system=d.get("system"), **(d.get("params") or {}))
        for t in d.get("turns") or []:
            conv.add_turn(Turn.from_dict(t))
        return conv

    def to_json(self, indent: int | None = None) -> str:
        """The whole conversation (turns with all their metadata) as JSON text."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, default=repr)

    @classmethod
    def from_json(cls, text: str) -> Conversation:
        """Inverse of `to_json` (a plain JSON list of v2 messages is accepted too)."""
        return cls.from_dict(json.loads(text))

    def save(self, path: Any) -> None:
        """Write `to_json()` to `path` (UTF-8)."""
        from pathlib import Path

        Path(path).write_text(self.to_json(indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Any) -> Conversation:
        from pathlib import Path

        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    # -- DataFrame -----------------------------------------------------------------------------
    COLUMNS = (
        "turn",
        "role",
        "text",
        "tool_plan",
        "tool_calls",
        "tool_call_id",
        "citations",
        "finish_reason",
        "input_tokens",
        "output_tokens",
        "ttft",
        "total",
        "tokens_per_second",
        "params",
        "status",
        "cell_id",
        "execution_count",
        "response_id",
        "turn_id",
        "message",
    )

    def to_dataframe(self) -> Any:
        """A pandas DataFrame with one row per message (the system message has turn -1).

        Columns: turn, role, text, tool_plan, tool_calls, tool_call_id, citations,
        finish_reason, input_tokens, output_tokens, ttft, total, tokens_per_second (s), params,
        status, cell_id, execution_count, response_id, turn_id and message (the v2 dict).
        Per-turn values repeat on each row of the turn. `from_dataframe` reads it back; an
        edited ``text`` cell replaces that message's text.
        """
        import pandas as pd  # lazy: pandas is an optional dependency

        rows: list[dict[str, Any]] = []
        with self._lock:
            if self._system:
                msg = {"role": "system", "content": copy.deepcopy(self._system)}
                rows.append(_row(-1, msg, None))
            for i, t in enumerate(self._turns):
                snap = t.to_dict()
                for m in snap["input"] + snap["output"]:
                    rows.append(_row(i, m, snap))
        return pd.DataFrame(rows, columns=list(self.COLUMNS))

    @classmethod
    def from_dataframe(cls, df: Any) -> Conversation:
        """Rebuild a conversation from `to_dataframe()` output (possibly edited, or read back
        from CSV: dict columns may be JSON strings). Without a ``message`` column, rows are
        built from role/text/tool_calls/tool_call_id/citations."""
        conv = cls()
        records = df.to_dict(orient="records")
        turns: dict[Any, Turn] = {}
        order: list[Any] = []
        for r in records:
            msg = _message_from_row(r)
            turn_no = _scalar(r.get("turn"))
            if msg["role"] == "system" and (turn_no is None or turn_no == -1):
                conv._system = msg.get("content")
                continue
            key = turn_no if turn_no is not None else len(order)
            t = turns.get(key)
            if t is None or (msg["role"] == "user" and turn_no is None):
                t = Turn(
                    params=_maybe_json(r.get("params")) or {},
                    status=_scalar(r.get("status")) or "complete",
                    id=_scalar(r.get("turn_id")),
                    finish_reason=_scalar(r.get("finish_reason")),
                    timings={
                        k: _scalar(r.get(k))
                        for k in ("ttft", "total", "tokens_per_second")
                        if _scalar(r.get(k)) is not None
                    },
                    cell={
                        "cell_id": _scalar(r.get("cell_id")),
                        "execution_count": _int(r.get("execution_count")),
                    }
                    if _scalar(r.get("cell_id")) is not None
                    or _scalar(r.get("execution_count")) is not None
                    else None,
                )
                inp, out = _scalar(r.get("input_tokens")), _scalar(r.get("output_tokens"))
                if inp is not None or out is not None:
                    t.usage = {"tokens": {"input_tokens": inp, "output_tokens": out}}
                if t.status == "running":
                    t.status, t.error = "cancelled", "saved while running"
                turns[key] = t
                order.append(key)
            rid = _scalar(r.get("response_id"))
            if rid and rid not in t.response_ids:
                t.response_ids.append(rid)
            if msg["role"] == "user" and not t.output:
                t.input.append(msg)
            else:
                t.output.append(msg)
                if msg["role"] == "assistant":
                    t.citations.extend(copy.deepcopy(msg.get("citations") or []))
        for key in order:
            conv.add_turn(turns[key])
        return conv

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
        with self._lock:
            turns = list(self._turns)
            system = self._system
        n = len(turns)
        head = f"Conversation: {n} turn{'s' if n != 1 else ''}"
        usage = self.usage
        tok = usage.get("tokens") or usage.get("billed_units") or {}
        if tok:
            head += f", {_num(tok.get('input_tokens'))} in / {_num(tok.get('output_tokens'))} out tokens"
        lines = [f"**{head}**" if markdown else head]
        if system:
            sys_text = system if isinstance(system, str) else _text_of({"content": system})
            lines.append(_block("system", sys_text, markdown))
        for i, t in enumerate(turns):
            snap = t.to_dict()
            for m in snap["input"] + snap["output"]:
                lines.append(_render_message(m, markdown))
            if snap["status"] != "complete" or markdown:
                note = f"turn {i}: {t.stats()}"
                lines.append(f"*{note}*" if markdown else f"  ({note})")
        if markdown:  # model text is untrusted: Jupyter renders raw HTML in markdown outputs
            from .untrusted import inert_markdown

            return inert_markdown("\n\n".join(lines))
        return "\n".join(lines)


def _block(label: str, text: str, markdown: bool) -> str:
    if markdown:
        return f"**{label}:** {text}" if "\n" not in text else f"**{label}:**\n\n{text}"
    return f"[{label}] {text}"


def _render_message(m: dict[str, Any], markdown: bool) -> str:
    role = m.get("role", "?")
    parts: list[str] = []
    if m.get("tool_plan"):
        parts.append(_block("plan", m["tool_plan"], markdown))
    text = _text_of(m) if role != "tool" else ""
    if text or role in ("user", "system"):
        parts.append(_block(role, text, markdown))
    for c in m.get("tool_calls") or []:
        fn = c.get("function") or {}
        call = f"{fn.get('name')}({fn.get('arguments')})"
        parts.append(_block("tool call", f"`{call}`" if markdown else call, markdown))
    if role == "tool":
        result = _text_of(m)
        if len(result) > 500:
            result = result[:497] + "..."
        parts.append(_block("tool result", f"`{result}`" if markdown else result, markdown))
    if not parts:
        parts.append(_block(role, "", markdown))
    return ("\n\n" if markdown else "\n").join(parts)


def _row(turn_no: int, m: dict[str, Any], snap: dict[str, Any] | None) -> dict[str, Any]:
    snap = snap or {}
    usage = snap.get("usage") or {}
    tok = usage.get("tokens") or usage.get("billed_units") or {}
    timings = snap.get("timings") or {}
    cell = snap.get("cell") or {}
    rids = snap.get("response_ids") or []
    return {
        "turn": turn_no,
        "role": m.get("role"),
        "text": _text_of(m),
        "tool_plan": m.get("tool_plan"),
        "tool_calls": m.get("tool_calls"),
        "tool_call_id": m.get("tool_call_id"),
        "citations": m.get("citations"),
        "finish_reason": snap.get("finish_reason"),
        "input_tokens": tok.get("input_tokens"),
        "output_tokens": tok.get("output_tokens"),
        "ttft": timings.get("ttft"),
        "total": timings.get("total"),
        "tokens_per_second": timings.get("tokens_per_second"),
        "params": snap.get("params") if snap else None,
        "status": snap.get("status", "complete") if snap else "complete",
        "cell_id": cell.get("cell_id"),
        "execution_count": cell.get("execution_count"),
        "response_id": rids[-1] if rids else None,
        "turn_id": snap.get("id"),
        "message": m,
    }


def _scalar(v: Any) -> Any:
    """None for NaN/NA/None; numpy scalars as Python values."""
    if v is None:
        return None
    try:
        if v != v:  # NaN
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            return v.item()
        except (AttributeError, ValueError):
            return v
    return v


def _int(v: Any) -> int | None:
    v = _scalar(v)
    return int(v) if v is not None else None


def _maybe_json(v: Any) -> Any:
    v = _scalar(v)
    if isinstance(v, str) and v[:1] in ("{", "["):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            pass
        try:  # pandas' to_csv writes dict cells as Python reprs; literal_eval evaluates no code
            import ast

            return ast.literal_eval(v)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return v
    return v


def _message_from_row(r: dict[str, Any]) -> dict[str, Any]:
    msg = _maybe_json(r.get("message"))
    text = _scalar(r.get("text"))
    if isinstance(msg, dict) and msg.get("role"):
        msg = copy.deepcopy(msg)
        # An edited text cell wins over the stored message (edit history in pandas).
        if (
            text is not None
            and msg["role"] in ("user", "system", "assistant")
            and text != _text_of(msg)
        ):
            if isinstance(msg.get("content"), list):
                others = [
                    b
                    for b in msg["content"]
                    if isinstance(b, dict) and b.get("type") not in (None, "text")
                ]
                msg["content"] = others + [{"type": "text", "text": text}]
            else:
                msg["content"] = text
        return msg
    role = _scalar(r.get("role")) or "user"
    msg = {"role": role}
    if role == "tool":
        msg["tool_call_id"] = _scalar(r.get("tool_call_id")) or ""
        data = _maybe_json(text)
        msg["content"] = [
            {
                "type": "document",
                "document": {"data": data if isinstance(data, dict) else {"result": text}},
            }
        ]
        return msg
    if text:
        msg["content"] = text if role != "assistant" else [{"type": "text", "text": text}]
    for key in ("tool_plan", "tool_calls", "citations"):
        v = _maybe_json(r.get(key))
        if v is not None and not (isinstance(v, (list, str)) and not v):
            msg[key] = v
    return msg


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))
