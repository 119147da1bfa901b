"""Reading and building v2 messages: the one home of message-text extraction.

`message_text` is the text a model wrote (text blocks only); `display_text` is what a person
reads (tool-result documents included, as JSON). `as_message` turns user input into a
message; `add_usage` sums two ``usage`` objects. Pure: stdlib only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover - annotations only (keeps the import cheap)
    from .types import Message, Usage

__all__ = [
    "message_text",
    "display_text",
    "thinking_text",
    "as_message",
    "add_usage",
    "output_tokens",
]


def _blocks_text(message: Mapping[str, Any], documents: bool) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type", "text")
        if kind in (None, "text"):
            text = block.get("text")
            if isinstance(text, str):
                parts.append(text)
        elif documents and kind == "document":
            data = (block.get("document") or {}).get("data")
            parts.append(json.dumps(data, ensure_ascii=False))
    return "".join(parts)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message: its string content, or its text blocks joined (thinking excluded).

    Blocks are joined with "" like the accumulator joins response text blocks.
    """
    return _blocks_text(message, documents=False)


def display_text(message: Mapping[str, Any]) -> str:
    """`message_text`, plus each document block's data as JSON (how tool results read)."""
    return _blocks_text(message, documents=True)


def thinking_text(message: Mapping[str, Any]) -> str | None:
    """The message's thinking blocks joined, or None when it has none."""
    content = message.get("content")
    if not isinstance(content, list):
        return None
    parts = [
        str(b.get("thinking") or "")
        for b in content
        if isinstance(b, dict) and b.get("type") == "thinking"
    ]
    return "".join(parts) if parts else None


def as_message(content: Any, role: str = "user") -> Message:
    """A message from a string, a list of content blocks or a message dict (deep-copied)."""
    if isinstance(content, dict) and "role" in content:
        return copy.deepcopy(content)  # type: ignore[return-value]
    if isinstance(content, (str, list)):
        return {"role": role, "content": copy.deepcopy(content)}  # type: ignore[return-value,misc]
    raise ValidationError(
        "message", content, "a string, a list of content blocks or a message dict"
    )


def add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    """Sum two usage dicts field by field (nested dicts summed, numbers added)."""
    if not more:
        return total
    out: dict[str, Any] = copy.deepcopy(dict(total)) if total else {}
    for key, value in more.items():
        if isinstance(value, dict):
            prev = out.get(key)
            out[key] = add_usage(prev if isinstance(prev, dict) else None, value)  # type: ignore[arg-type]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            prev = out.get(key)
            out[key] = (prev if isinstance(prev, (int, float)) else 0) + value
        else:
            out[key] = value
    return out  # type: ignore[return-value]


def output_tokens(usage: Usage | dict[str, Any] | None) -> float | None:
    """Generated tokens: usage.tokens.output_tokens, else billed_units.output_tokens."""
    if not usage:
        return None
    for part in ("tokens", "billed_units"):
        tokens: Any = usage.get(part) or {}
        v = tokens.get("output_tokens") if isinstance(tokens, dict) else None
        if isinstance(v, (int, float)):
            return v
    return None
