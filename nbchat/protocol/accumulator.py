"""Fold v2 stream events into the final response, as the non-stream endpoint would return it.

The result matches what the official SDK assembles (checked against every recorded capture):
text per content block in index order, thinking blocks, tool_plan, tool calls joined by index
(``""``/``"null"`` arguments become ``"{}"``), citations in arrival order, finish_reason,
usage, logprobs and an in-stream error. Unknown events and fields are ignored, never fatal.
"""

from __future__ import annotations

import copy
from typing import Any

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
        self.started = False
        self.ended = False

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> None:
        self.events += 1
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
            idx = event.get("index", 0)
            block = self._blocks.get(idx)
            if block is None:
                block = self._blocks[idx] = [None, []]
            if piece is None:
                piece = content.get("thinking")
                if piece is not None and block[0] is None:
                    block[0] = "thinking"
            if piece:
                block[1].append(piece)
            if "logprobs" in event:
                lp = event["logprobs"]
                if lp is not None:
                    self.logprobs.append(lp)
        elif t == "message-start":
            self.started = True
            self.id = event.get("id", self.id)
        elif t == "content-start":
            content = _message(event).get("content") or {}
            idx = event.get("index", 0)
            block = self._blocks.setdefault(idx, [None, []])
            block[0] = content.get("type") or block[0]
            initial = content.get("text") or content.get("thinking")
            if initial:
                block[1].append(initial)
        elif t == "tool-plan-delta":
            piece = _message(event).get("tool_plan")
            if piece:
                self._plan.append(piece)
        elif t == "tool-call-start":
            tc = _message(event).get("tool_calls") or {}
            fn = tc.get("function") or {}
            self._calls[event.get("index", len(self._calls))] = {
                "id": tc.get("id"),
                "type": tc.get("type") or "function",
                "name": fn.get("name"),
                "arguments": [fn.get("arguments") or ""],
            }
        elif t == "tool-call-delta":
            tc = _message(event).get("tool_calls") or {}
            piece = (tc.get("function") or {}).get("arguments")
            call = self._calls.setdefault(
                event.get("index", 0),
                {"id": None, "type": "function", "name": None, "arguments": []},
            )
            if piece:
                call["arguments"].append(piece)
        elif t == "citation-start":
            cit = _message(event).get("citations")
            if isinstance(cit, dict):
                self.citations.append(cit)
        elif t == "message-end":
            self.ended = True
            delta = event.get("delta") or {}
            self.finish_reason = delta.get("finish_reason")
            self.usage = delta.get("usage")
            self.error = delta.get("error")
            self.error_type = delta.get("error_type")
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
    def message(self) -> dict[str, Any]:
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
        return msg

    @property
    def response(self) -> dict[str, Any]:
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
        return resp


def _message(event: dict[str, Any]) -> dict[str, Any]:
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return {}
    msg = delta.get("message")
    return msg if isinstance(msg, dict) else {}
