"""One exchange of a conversation: the user's message(s) and everything the model answered.

A `Turn` is state only. The runner fills it while a reply streams (under `Turn.lock`, which
is the conversation's lock once the turn is added) and sets `Turn.live` to the accumulator of
the round streaming now, so `text` and `to_dict` show the partial reply.
"""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any

from .protocol.messages import display_text

__all__ = ["Turn", "STATUSES", "cell_key", "format_number"]

STATUSES = ("running", "complete", "cancelled", "error")


class Turn:
    """One exchange: the user's input message(s) and everything the model answered.

    Fields: ``id``, ``params`` (the request without ``messages``), ``input`` (the user
    message(s)), ``output`` (assistant and tool messages, in order), ``response_ids`` (one per
    request round), ``finish_reason`` (of the last round), ``usage`` (summed over rounds),
    ``timings`` (``ttft`` s to the first token, ``total`` s, ``tokens_per_second``,
    ``started_at`` epoch seconds), ``logprobs``, ``citations``, ``status`` (``running``,
    ``complete``, ``cancelled``, ``error``), ``error`` (redacted text), ``cell``
    (``{"execution_count", "cell_id"}`` when known), ``backend`` (its name) and
    ``alternatives`` (the earlier replies `Conversation.regenerate` replaced, as Turns; for a
    compared turn, the variants not kept), ``dropped`` (the later turns an edit of this turn's
    prompt took out of the conversation, see `nbchat.resend`) and ``comparison`` (a `compared.Comparison` of
    every variant of a ``--compare`` turn, else None).

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
        "alternatives",
        "dropped",
        "omitted",
        "comparison",
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
        omitted: int = 0,
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
        # earlier replies this turn replaced (Conversation.regenerate), oldest first
        self.alternatives: list[Turn] = []
        # the turns after this one that an edit-and-resend took out of the request, in order
        self.dropped: list[Turn] = []
        self.omitted = int(omitted or 0)  # earlier turns left out of the request (context.py)
        self.comparison: Any = None  # a compared.Comparison when the turn compared variants
        self.exception: BaseException | None = None  # the error object (not serialised)
        self._live: Any = None  # the runner's Accumulator while a round streams
        self._lock: Any = threading.RLock()  # replaced by the conversation's lock when added

    # -- shared with the conversation and the runner ------------------------------------------
    @property
    def lock(self) -> Any:
        """The re-entrant lock guarding this turn (its conversation's lock once added)."""
        return self._lock

    def share_lock(self, lock: Any) -> None:
        """Guard this turn with `lock` from now on (`Conversation.add_turn` does this)."""
        self._lock = lock

    @property
    def live(self) -> Any:
        """The accumulator of the round streaming now (None between rounds and when done).

        Set by the runner under `lock`; anything with ``.text`` and ``.message`` will do."""
        return self._live

    @live.setter
    def live(self, acc: Any) -> None:
        self._live = acc

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
            return "\n".join(display_text(m) for m in self.input)

    @property
    def text(self) -> str:
        """The answer: text of the last assistant message, or the text streamed so far."""
        with self._lock:
            live = self._live
            if live is not None and self.status == "running":
                return live.text
            for m in reversed(self.output):
                if m.get("role") == "assistant":
                    return display_text(m)
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
        return cell_key(self.cell)

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
            if self.omitted:
                d["omitted"] = self.omitted
            if self.status == "running" and self._live is not None:
                # A snapshot of a running turn carries the partial message.
                d["output"] = self.output + [self._live.message]
            if self.alternatives:
                d["alternatives"] = [a.to_dict() for a in self.alternatives]
            if self.dropped:
                d["dropped"] = [t.to_dict() for t in self.dropped]
            if self.comparison is not None:
                d["comparison"] = self.comparison.to_dict()
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
        turn = cls(
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
            omitted=d.get("omitted") or 0,
        )
        turn.alternatives = [cls.from_dict(a) for a in d.get("alternatives") or []]
        turn.dropped = [cls.from_dict(t) for t in d.get("dropped") or []]
        if d.get("comparison"):
            from .compared import Comparison

            turn.comparison = Comparison.from_reply(turn, d["comparison"])
        return turn

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
                f"{format_number(tok.get('input_tokens'))} in / {format_number(tok.get('output_tokens'))} out tokens"
            )
        if self.timings.get("tokens_per_second"):
            parts.append(f"{self.timings['tokens_per_second']:.1f} tok/s")
        if self.timings.get("ttft") is not None:
            parts.append(f"TTFT {self.timings['ttft']:.2f} s")  # as the live view says it
        if self.omitted:
            parts.append(omitted_note(self.omitted))
        if self.error:
            parts.append(f"error: {self.error}")
        return " · ".join(parts)

    @property
    def json(self) -> Any:
        """The reply parsed as JSON (``--json`` / ``response_format``); a clear error when
        it is not valid JSON, e.g. cut off by max_tokens."""
        import json as _json

        text = self.text.strip()
        if text.startswith("```"):  # a fenced reply: its content
            text = text.split("\n", 1)[-1].rsplit("```", 1)[0]
        try:
            return _json.loads(text)
        except ValueError as exc:
            why = (
                " (the reply was cut off by max_tokens: raise --max-tokens)"
                if self.finish_reason == "MAX_TOKENS"
                else ""
            )
            raise ValueError(f"the reply is not valid JSON{why}: {exc}") from None

    def __repr__(self) -> str:
        text = self.text
        if len(text) > 60:
            text = text[:57] + "..."
        return f"Turn(id={self.id!r}, status={self.status!r}, finish_reason={self.finish_reason!r}, text={text!r})"


def omitted_note(n: int) -> str:
    """ "N earlier turns not sent": what the views say when context.py left turns out."""
    return f"{n} earlier turn{'s' if n != 1 else ''} not sent"


def format_number(v: Any) -> str:
    """A token count as text: whole floats without ".0", None as "?"."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "?" if v is None else str(v)


def cell_key(cell: Any) -> str | None:
    """The stable identity of a cell: its cell id (execution counts change on every run)."""
    if cell is None:
        return None
    if isinstance(cell, str):
        return cell or None
    if isinstance(cell, dict):
        cid = cell.get("cell_id")
        return str(cid) if cid else None
    return None
