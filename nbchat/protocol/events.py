"""Build v2 stream events in the exact wire shape and order (for servers and local engines).

`StreamBuilder` keeps the indices and the open block/tool call so callers only say *what*
happened (a text piece, a tool call, a citation); the dicts it returns are byte-for-byte the
shapes Cohere sends (see ``cohere-v2-wire.md`` §3), ready for `sse.encode_event`.

Grammar (``check_order`` verifies it)::

    message-start
      [content-start(thinking) content-delta* content-end]
      ( tool-plan-delta* (tool-call-start tool-call-delta* tool-call-end)+
      | (content-start content-delta* content-end)+ )
      (citation-start citation-end)* anywhere between start and end
    message-end
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .request import FINISH_REASONS

if TYPE_CHECKING:  # pragma: no cover - annotations only (keeps the import cheap)
    from .types import Event, Usage

__all__ = ["StreamBuilder", "usage_dict", "new_id", "check_order"]


def new_id() -> str:
    """A generation id in Cohere's format (a random UUID string)."""
    import uuid  # lazy: keeps `import nbchat.protocol` cheap

    return str(uuid.uuid4())


def usage_dict(input_tokens: int, output_tokens: int) -> Usage:
    """The v2 ``usage`` object; a local engine bills exactly the tokens it used."""
    return {
        "billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        "tokens": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


class StreamBuilder:
    """Stateful emitter of wire-exact v2 stream events.

    Misuse that would break the grammar (a tool call while a content block is open, an event
    after `end`) raises `RuntimeError`: it is a bug in the caller, not in the data.
    """

    def __init__(self, id: str | None = None) -> None:
        self.id = id or new_id()
        self._started = False
        self._ended = False
        self._content_index = -1  # index of the last content block opened
        self._open_kind: str | None = None  # "text" / "thinking" while a block is open
        self._call_index = -1
        self._call_open = False
        self._citation_index = -1

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Event:
        if self._started:
            raise RuntimeError("message-start was already emitted")
        self._started = True
        return {
            "id": self.id,
            "type": "message-start",
            "delta": {
                "message": {
                    "role": "assistant",
                    "content": [],
                    "tool_plan": "",
                    "tool_calls": [],
                    "citations": [],
                }
            },
        }

    def _check(self) -> None:
        if not self._started:
            raise RuntimeError("call start() first")
        if self._ended:
            raise RuntimeError("the message already ended")

    # -- content blocks --------------------------------------------------------------------------
    def _open(self, kind: str) -> list[Event]:
        self._check()
        if self._call_open:
            raise RuntimeError("a tool call is open: call tool_call_end() first")
        if self._open_kind == kind:
            return []
        out = self.close_content()
        self._content_index += 1
        self._open_kind = kind
        out.append(
            {
                "type": "content-start",
                "index": self._content_index,
                "delta": {"message": {"content": {"type": kind, kind: ""}}},
            }
        )
        return out

    def text(self, piece: str, logprobs: dict[str, Any] | None = None) -> list[Event]:
        """A text piece; opens a text block first when none is open."""
        out = self._open("text") if self._open_kind != "text" else []
        ev: dict[str, Any] = {
            "type": "content-delta",
            "index": self._content_index,
            "delta": {"message": {"content": {"text": piece}}},
        }
        if logprobs is not None:
            ev["logprobs"] = logprobs
        out.append(ev)  # type: ignore[arg-type]
        return out

    def thinking(self, piece: str) -> list[Event]:
        """A reasoning piece; opens a thinking block first when none is open."""
        out = self._open("thinking") if self._open_kind != "thinking" else []
        out.append(
            {
                "type": "content-delta",
                "index": self._content_index,
                "delta": {"message": {"content": {"thinking": piece}}},
            }
        )
        return out

    def close_content(self) -> list[Event]:
        """content-end for the open block, if any."""
        if self._open_kind is None:
            return []
        self._open_kind = None
        return [{"type": "content-end", "index": self._content_index}]

    # -- tool calls --------------------------------------------------------------------------------
    def tool_plan(self, piece: str) -> Event:
        self._check()
        if self._open_kind is not None:
            raise RuntimeError("a content block is open: call close_content() first")
        if self._call_index >= 0:
            raise RuntimeError("tool-plan-delta must come before the tool calls")
        return {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}

    def tool_call_start(self, id: str, name: str, arguments: str = "") -> Event:
        self._check()
        if self._open_kind is not None:
            raise RuntimeError("a content block is open: call close_content() first")
        if self._call_open:
            raise RuntimeError("a tool call is open: call tool_call_end() first")
        self._call_index += 1
        self._call_open = True
        return {
            "type": "tool-call-start",
            "index": self._call_index,
            "delta": {
                "message": {
                    "tool_calls": {
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                }
            },
        }

    def tool_call_delta(self, arguments: str) -> Event:
        self._check()
        if not self._call_open:
            raise RuntimeError("no tool call is open: call tool_call_start() first")
        return {
            "type": "tool-call-delta",
            "index": self._call_index,
            "delta": {"message": {"tool_calls": {"function": {"arguments": arguments}}}},
        }

    def tool_call_end(self) -> Event:
        self._check()
        if not self._call_open:
            raise RuntimeError("no tool call is open")
        self._call_open = False
        return {"type": "tool-call-end", "index": self._call_index}

    # -- citations ---------------------------------------------------------------------------------
    def citation(self, citation: dict[str, Any]) -> list[Event]:
        """citation-start + citation-end; citation indices count independently of content."""
        self._check()
        self._citation_index += 1
        i = self._citation_index
        return [
            {"type": "citation-start", "index": i, "delta": {"message": {"citations": citation}}},
            {"type": "citation-end", "index": i},
        ]

    # -- end ---------------------------------------------------------------------------------------
    def end(
        self,
        finish_reason: str,
        usage: Usage | dict[str, Any] | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> list[Event]:
        """Close what is open, then message-end.

        Usage is always present: `usage_dict(0, 0)` when not given, except for ERROR where
        Cohere sends ``{}``.
        """
        self._check()
        if finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {', '.join(FINISH_REASONS)}")
        out = self.close_content()
        if self._call_open:
            out.append(self.tool_call_end())
        if usage is None:
            usage = {} if finish_reason == "ERROR" else usage_dict(0, 0)
        delta: dict[str, Any] = {"finish_reason": finish_reason, "usage": usage}
        if error is not None:
            delta["error"] = error
        if error_type is not None:
            delta["error_type"] = error_type
        out.append({"type": "message-end", "delta": delta})
        self._ended = True
        return out

    @property
    def ended(self) -> bool:
        return self._ended


def check_order(events: Iterable[Mapping[str, Any]]) -> None:
    """Raise ValueError unless the events follow the v2 stream grammar (indices included).

    Lenient where Cohere is: citation pairs may appear anywhere between message-start and
    message-end, and an ERROR message-end may cut any phase. Unknown event types are skipped.
    """
    state = "before"
    block: int | None = None  # open content index
    call: int | None = None  # open tool call index
    n_blocks = n_calls = n_cits = 0
    pending_cit: int | None = None
    for pos, ev in enumerate(events):
        t = ev.get("type")

        def bad(why: str, t: Any = t, pos: int = pos) -> ValueError:
            return ValueError(f"event {pos} ({t}): {why}")

        if pending_cit is not None and (t != "citation-end" or ev.get("index") != pending_cit):
            raise bad(f"citation-end {pending_cit} must follow its citation-start")
        if t == "message-start":
            if state != "before":
                raise bad("message-start must be first and only once")
            state = "open"
            continue
        if state != "open":
            raise bad("outside message-start .. message-end")
        idx = ev.get("index")
        if t == "content-start":
            if block is not None or call is not None:
                raise bad("a content block or tool call is still open")
            if idx != n_blocks:
                raise bad(f"index {idx}, expected {n_blocks}")
            block, n_blocks = idx, n_blocks + 1
        elif t in ("content-delta", "content-end"):
            if block is None or idx != block:
                raise bad(f"index {idx} does not match the open block {block}")
            if t == "content-end":
                block = None
        elif t == "tool-plan-delta":
            if block is not None or n_calls:
                raise bad("tool-plan-delta must come before tool calls, outside content blocks")
        elif t == "tool-call-start":
            if block is not None or call is not None:
                raise bad("a content block or tool call is still open")
            if idx != n_calls:
                raise bad(f"index {idx}, expected {n_calls}")
            call, n_calls = idx, n_calls + 1
        elif t in ("tool-call-delta", "tool-call-end"):
            if call is None or idx != call:
                raise bad(f"index {idx} does not match the open tool call {call}")
            if t == "tool-call-end":
                call = None
        elif t == "citation-start":
            if idx != n_cits:
                raise bad(f"index {idx}, expected {n_cits}")
            pending_cit, n_cits = idx, n_cits + 1
        elif t == "citation-end":
            if pending_cit is None:
                raise bad("citation-end without citation-start")
            pending_cit = None
        elif t == "message-end":
            delta = ev.get("delta") or {}
            if delta.get("finish_reason") not in FINISH_REASONS:
                raise bad(f"finish_reason {delta.get('finish_reason')!r}")
            if delta.get("finish_reason") != "ERROR":
                if block is not None or call is not None:
                    raise bad("a content block or tool call is still open")
                if not isinstance(delta.get("usage"), dict) or "tokens" not in delta["usage"]:
                    raise bad("usage with tokens is required")
            state = "ended"
    if pending_cit is not None:
        raise ValueError("stream ended inside a citation")
    if state != "ended":
        raise ValueError("no message-end" if state == "open" else "no message-start")
