"""Newline-delimited JSON framing of the v2 stream: one event object per line.

What `nbchat serve` answers to ``Accept: application/json`` with ``stream: true`` (litellm's
Cohere client asks for it): the same event objects, in the same order, as the SSE framing,
without ``event:``/``data:`` prefixes and without a ``[DONE]`` line; the stream ends at
``message-end`` and EOF. (`sse.SSEDecoder` reads this framing too: it takes a bare JSON line
as an event.)
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from ..errors import StreamError

__all__ = ["encode_line", "NDJSONDecoder", "MEDIA_TYPE"]

MEDIA_TYPE = "application/x-ndjson"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def encode_line(event: dict[str, Any]) -> bytes:
    """One event as a compact JSON line."""
    return _dumps(event).encode("utf-8") + b"\n"


class NDJSONDecoder:
    """Feed bytes (split anywhere), get complete events; blank lines are skipped."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        try:
            text = self._pending + self._utf8.decode(chunk)
        except UnicodeDecodeError as exc:
            raise StreamError(f"invalid UTF-8 in stream ({exc.reason})", line=None) from None
        *lines, self._pending = text.split("\n")
        return [_parse(line) for line in lines if line.strip()]

    def close(self) -> list[dict[str, Any]]:
        """End of input: the last line may lack its newline."""
        try:
            rest = self._pending + self._utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise StreamError(
                f"stream ended inside a UTF-8 character ({exc.reason})", line=None
            ) from None
        self._pending = ""
        return [_parse(rest)] if rest.strip() else []


def _parse(line: str) -> dict[str, Any]:
    try:
        obj = _decode(line.rstrip("\r"))
    except ValueError as exc:
        raise StreamError(f"invalid JSON line ({exc}): {line[:200]!r}", line=line) from None
    if type(obj) is not dict:
        raise StreamError(f"JSON line is not an object: {line[:200]!r}", line=line)
    return obj
