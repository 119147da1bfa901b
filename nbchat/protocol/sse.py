"""Server-sent events for the v2 stream: an incremental decoder and the server's encoder.

The decoder works on bytes and only decodes complete lines, so a chunk boundary anywhere
(inside a line, inside a CRLF, inside a multi-byte UTF-8 character) is harmless. It follows
the WHATWG rules that matter for v2: ``data:`` lines (one optional space after the colon) are
joined with ``\\n`` and dispatched at a blank line; ``event:`` is optional (the JSON ``type``
wins); ``:`` comments, ``id:`` and ``retry:`` are ignored; ``data: [DONE]`` or plain EOF ends
the stream. Lenient like Cohere's SDK: a bare JSON line (no ``data:``) is taken as an event.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import StreamError

__all__ = ["SSEDecoder", "encode_event", "DONE", "decode_all"]

DONE = b"data: [DONE]\n\n"

_loads = json.loads
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_event(event: dict[str, Any]) -> bytes:
    """Frame one event exactly as Cohere does: ``event: <type>\\ndata: <compact json>\\n\\n``."""
    return b"event: %s\ndata: %s\n\n" % (
        str(event.get("type", "message")).encode(),
        _dumps(event).encode("utf-8"),
    )


class SSEDecoder:
    """Feed bytes, get complete events (dicts). `done` turns true at ``[DONE]``."""

    __slots__ = ("_buf", "_data", "_event", "done")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if self.done or not chunk:
            return []
        buf = self._buf + chunk if self._buf else chunk
        if b"\n" not in buf:
            self._buf = buf
            return []
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[dict[str, Any]] = []
        for line in lines:
            self._line(line, out)
            if self.done:
                break
        return out

    def close(self) -> list[dict[str, Any]]:
        """End of input: dispatch what is pending (a last event without its blank line)."""
        out: list[dict[str, Any]] = []
        if not self.done:
            if self._buf:
                line, self._buf = self._buf, b""
                self._line(line, out)
            if self._data and not self.done:
                self._dispatch(out)
        return out

    def _line(self, line: bytes, out: list[dict[str, Any]]) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line:
            if self._data:
                self._dispatch(out)
            self._event = None
            return
        if line[:5] == b"data:":
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._data.append(value)
            return
        first = line[:1]
        if first == b":":
            return  # comment / keep-alive
        if first == b"{":
            # bare JSON line: some proxies strip the SSE framing
            if self._data:
                self._dispatch(out)
            self._data.append(line)
            self._dispatch(out)
            return
        if line[:6] == b"event:":
            self._event = line[6:].strip()
            return
        name = line.split(b":", 1)[0]
        if name in (b"id", b"retry", b"event", b"data"):
            return
        raise StreamError(f"malformed SSE line: {_show(line)}", line=line)

    def _dispatch(self, out: list[dict[str, Any]]) -> None:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        event_name, self._event = self._event, None
        if data == b"[DONE]":
            self.done = True
            return
        try:
            obj = _loads(data)
        except ValueError as exc:
            raise StreamError(f"invalid JSON in SSE data ({exc}): {_show(data)}", line=data) from None
        if not isinstance(obj, dict):
            raise StreamError(f"SSE data is not a JSON object: {_show(data)}", line=data)
        if "type" not in obj and event_name:
            obj["type"] = event_name.decode("utf-8", "replace")
        out.append(obj)


def _show(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return repr(text if len(text) <= 200 else text[:200] + "...")


def decode_all(body: bytes, chunk_size: int | None = None) -> list[dict[str, Any]]:
    """Decode a whole SSE body (convenience for tests and fixtures)."""
    dec = SSEDecoder()
    events: list[dict[str, Any]] = []
    if chunk_size:
        for i in range(0, len(body), chunk_size):
            events += dec.feed(body[i : i + chunk_size])
    else:
        events += dec.feed(body)
    events += dec.close()
    return events
