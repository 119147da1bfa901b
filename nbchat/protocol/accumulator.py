"""Fold v2 stream events into the final response, as the non-stream endpoint would return it.

The result matches what the official SDK assembles (checked against every recorded capture):
text per content block in index order, thinking blocks, tool_plan, tool calls joined by index
(``""``/``"null"`` arguments become ``"{}"``), citations in arrival order, finish_reason,
usage, logprobs and an in-stream error. Unknown events and fields are ignored, never fatal.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pragma: no cover - annotations only (keeps the import cheap)
    from .types import AssistantMessage, Response

__all__ = ["Accumulator"]


class Accumulator:
    """Feed events one by one; read `.response` (a plain v2 response dict) at any time."""

    def __init__(self) -> None:
        self.id: str | None = None
        self._blocks: dict[int, list[Any]] = {}  # index -> [type, [pieces]]
        self._plan: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.citations: list[dict[str, Any]] = []
        self.logprobs: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self.error_type: str | None = None
        self.events = 0
        self.malformed = 0
        self.started = False
        self.ended = False

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, event: Mapping[str, Any]) -> None:
        """Fold one event. A malformed event (wrong types from a broken server) is counted in
        `.malformed` and skipped: what was accumulated so far stays readable."""
        self.events += 1
        try:
            self._feed(event)
        except (TypeError, AttributeError, KeyError, ValueError):
            self.malformed += 1

    def _feed(self, event: Mapping[str, Any]) -> None:
        t = event.get("type")
        if t == "content-delta":  # hot path first
            try:  # the wire shape, without helper calls
                content = event["delta"]["message"]["content"]
                piece = content.get("text")
            except (KeyError, TypeError, AttributeError):
                content = _message(event).get("content")
                if not isinstance(content, dict):
                    content = {}
                piece = content.get("text")
            idx = _index(event)
            block = self._blocks.get(idx)
            if block is None:
                block = self._blocks[idx] = [None, []]
            if piece is None:
                piece = content.get("thinking")
                if piece is not None and block[0] is None:
                    block[0] = "thinking"
            if piece and piece.__class__ is str:
                block[1].append(piece)
            if "logprobs" in event:
                lp = event["logprobs"]
                if isinstance(lp, dict):
                    self.logprobs.append(lp)
        elif t == "message-start":
            self.started = True
            if isinstance(event.get("id"), str):
                self.id = event["id"]
        elif t == "content-start":
            content = _dict(_message(event).get("content"))
            block = self._blocks.setdefault(_index(event), [None, []])
            kind = content.get("type")
            if isinstance(kind, str):
                block[0] = kind
            initial = content.get("text") or content.get("thinking")
            if initial and isinstance(initial, str):
                block[1].append(initial)
        elif t == "tool-plan-delta":
            piece = _message(event).get("tool_plan")
            if piece and isinstance(piece, str):
                self._plan.append(piece)
        elif t == "tool-call-start":
            tc = _dict(_message(event).get("tool_calls"))
            fn = _dict(tc.get("function"))
            args = fn.get("arguments")
            self._calls[_index(event, len(self._calls))] = {
                "id": tc.get("id") if isinstance(tc.get("id"), str) else None,
                "type": tc.get("type") if isinstance(tc.get("type"), str) else "function",
                "name": fn.get("name") if isinstance(fn.get("name"), str) else None,
                "arguments": [args if isinstance(args, str) else ""],
            }
        elif t == "tool-call-delta":
            tc = _dict(_message(event).get("tool_calls"))
            piece = _dict(tc.get("function")).get("arguments")
            call = self._calls.setdefault(
                _index(event),
                {"id": None, "type": "function", "name": None, "arguments": []},
            )
            if piece and isinstance(piece, str):
                call["arguments"].append(piece)
        elif t == "citation-start":
            cit = _message(event).get("citations")
            if isinstance(cit, dict):
                self.citations.append(cit)
        elif t == "message-end":
            self.ended = True
            delta = _dict(event.get("delta"))
            fr, usage = delta.get("finish_reason"), delta.get("usage")
            err, err_type = delta.get("error"), delta.get("error_type")
            self.finish_reason = fr if isinstance(fr, str) else None
            self.usage = usage if isinstance(usage, dict) else None
            self.error = err if isinstance(err, str) or err is None else str(err)
            self.error_type = err_type if isinstance(err_type, str) else None
        # content-end, tool-call-end, citation-end and unknown events carry nothing to keep

    # -- reading -----------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(
            "".join(b[1]) for _, b in sorted(self._blocks.items()) if b[0] in ("text", None)
        )

    @property
    def thinking(self) -> str:
        return "".join("".join(b[1]) for _, b in sorted(self._blocks.items()) if b[0] == "thinking")

    @property
    def tool_plan(self) -> str:
        return "".join(self._plan)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        out = []
        for _, c in sorted(self._calls.items()):
            args = "".join(c["arguments"])
            if args.strip() in ("", "null"):
                args = "{}"
            out.append(
                {
                    "id": c["id"],
                    "type": c["type"],
                    "function": {"name": c["name"], "arguments": args},
                }
            )
        return out

    @property
    def message(self) -> AssistantMessage:
        """The assistant message, in the shape `messages=` accepts (empty collections omitted)."""
        msg: dict[str, Any] = {"role": "assistant"}
        content = []
        for _, (kind, pieces) in sorted(self._blocks.items()):
            if kind == "thinking":
                content.append({"type": "thinking", "thinking": "".join(pieces)})
            else:
                content.append({"type": "text", "text": "".join(pieces)})
        if content:
            msg["content"] = content
        if self._plan:
            msg["tool_plan"] = self.tool_plan
        if self._calls:
            msg["tool_calls"] = self.tool_calls
        if self.citations:
            msg["citations"] = copy.deepcopy(self.citations)
        return cast("AssistantMessage", msg)

    @property
    def response(self) -> Response:
        """The non-stream v2 response: id, finish_reason, message, usage (+ logprobs, error)."""
        resp: dict[str, Any] = {
            "id": self.id,
            "finish_reason": self.finish_reason,
            "message": self.message,
        }
        if self.usage is not None:
            resp["usage"] = copy.deepcopy(self.usage)
        if self.logprobs:
            resp["logprobs"] = copy.deepcopy(self.logprobs)
        if self.error is not None:
            resp["error"] = self.error
            if self.error_type is not None:
                resp["error_type"] = self.error_type
        return cast("Response", resp)


def _message(event: Mapping[str, Any]) -> dict[str, Any]:
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return {}
    msg = delta.get("message")
    return msg if isinstance(msg, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _index(event: Mapping[str, Any], default: int = 0) -> int:
    idx = event.get("index", default)
    return idx if idx.__class__ is int else default
