"""Server-sent events for the v2 stream: an incremental decoder and the server's encoder.

The decoder works on bytes and only decodes complete lines, so a chunk boundary anywhere
(inside a line, inside a CRLF, inside a multi-byte UTF-8 character) is harmless. It follows
the WHATWG rules that matter for v2: ``data:`` lines (one optional space after the colon) are
joined with ``\\n`` and dispatched at a blank line; ``event:`` is optional (the JSON ``type``
wins); ``:`` comments, ``id:`` and ``retry:`` are ignored; ``data: [DONE]`` or plain EOF ends
the stream. Lenient like Cohere's SDK: a bare JSON line (no ``data:``) is taken as an event.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import StreamError

if TYPE_CHECKING:  # pragma: no cover - annotations only (keeps the import cheap)
    from .types import Event

__all__ = ["SSEDecoder", "encode_event", "DONE", "decode_all"]

DONE = b"data: [DONE]\n\n"

_decode = json.JSONDecoder().decode  # str in: skips json.loads' bytes sniffing
_utf8_decoder = codecs.getincrementaldecoder("utf-8-sig")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Frame one event exactly as Cohere does: ``event: <type>\\ndata: <compact json>\\n\\n``."""
    return b"event: %s\ndata: %s\n\n" % (
        str(event.get("type", "message")).encode(),
        _dumps(event).encode("utf-8"),
    )


class SSEDecoder:
    """Feed bytes, get complete events (dicts). `done` turns true at ``[DONE]``."""

    __slots__ = ("_utf8", "_pending", "_data", "_event", "done")

    def __init__(self) -> None:
        # Incremental UTF-8: a character split across chunks is completed by the next chunk;
        # "-sig" drops a leading BOM as the WHATWG parser does. Lines are then str, and
        # json decoding a str is about twice as fast as json.loads(bytes).
        self._utf8 = _utf8_decoder("strict")
        self._pending: list[str] = []  # the current, incomplete line
        self._data: list[str] = []
        self._event: str | None = None
        self.done = False

    def feed(self, chunk: bytes) -> list[Event]:
        """All complete events in `chunk` (plus what earlier chunks left pending)."""
        return list(self.iter_feed(chunk))

    def iter_feed(self, chunk: bytes) -> Iterator[Event]:
        """Like `feed`, but yields each event as soon as it is parsed.

        Faster for big chunks: the consumer drops each event before the next is built, so
        thousands of fresh dicts never live at once (which would trigger GC passes).
        Consume it fully; lines after an abandoned iteration are lost.
        """
        if self.done or not chunk:
            return
        try:
            text = self._utf8.decode(chunk)
        except UnicodeDecodeError as exc:
            raise _bad_utf8(exc, chunk) from None
        if "\n" not in text:
            # Keep pieces in a list: a long line arriving in tiny chunks stays linear.
            if text:
                self._pending.append(text)
            return
        if self._pending:
            self._pending.append(text)
            text = "".join(self._pending)
        if "\r" in text:  # CRLF -> LF in one pass (a CR kept pending meets its LF later)
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        last = lines.pop()
        self._pending = [last] if last else []
        data = self._data
        event = self._event
        # Hot loop, inlined (no method call per line): a v2 event is three lines
        # (event:, data:, blank); anything rarer goes through _line().
        for line in lines:
            if line[:5] == "data:":
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif not line:
                if data:
                    raw = data[0] if len(data) == 1 else "\n".join(data)
                    data.clear()
                    if raw == "[DONE]":
                        self.done = True
                        event = None
                        break
                    self._event = None
                    yield _parse(raw, event)
                event = None
            elif line[:6] == "event:":
                event = line[6:].strip()
            else:
                out: list[Event] = []
                self._event = event
                self._line(line, out)
                data = self._data
                event = self._event
                yield from out
                if self.done:
                    break
        self._event = event

    def close(self) -> list[Event]:
        """End of input: dispatch what is pending (a last event without its blank line)."""
        out: list[Event] = []
        if self.done:
            return out
        try:
            tail = self._utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise StreamError(
                f"stream ended inside a UTF-8 character ({exc.reason})", line=None
            ) from None
        rest = "".join(self._pending) + tail
        self._pending = []
        if rest:
            for line in rest.replace("\r\n", "\n").split("\n"):
                if self.done:
                    break
                self._line(line, out)
        if self._data and not self.done:
            self._dispatch(out)
        return out

    def _line(self, line: str, out: list[Event]) -> None:
        if line[-1:] == "\r":  # a lone CR left over (CRLF is handled in bulk)
            line = line[:-1]
        if not line:
            if self._data:
                self._dispatch(out)
            self._event = None
            return
        if line[:5] == "data:":
            self._data.append(line[6:] if line[5:6] == " " else line[5:])
            return
        first = line[:1]
        if first == ":":
            return  # comment / keep-alive
        if first == "{":
            # bare JSON line: some proxies strip the SSE framing
            if self._data:
                self._dispatch(out)
            self._data.append(line)
            self._dispatch(out)
            return
        if line[:6] == "event:":
            self._event = line[6:].strip()
            return
        name = line.split(":", 1)[0]
        if name in ("id", "retry", "event", "data"):
            return
        raise StreamError(f"malformed SSE line: {_show(line)}", line=line)

    def _dispatch(self, out: list[Event]) -> None:
        raw = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        self._data = []
        event, self._event = self._event, None
        if raw == "[DONE]":
            self.done = True
            return
        out.append(_parse(raw, event))


def _parse(raw: str, event: str | None) -> Event:
    try:
        obj = _decode(raw)
    except ValueError as exc:
        raise StreamError(f"invalid JSON in SSE data ({exc}): {_show(raw)}", line=raw) from None
    if type(obj) is not dict:
        raise StreamError(f"SSE data is not a JSON object: {_show(raw)}", line=raw)
    if event and "type" not in obj:
        obj["type"] = event
    return obj  # type: ignore[return-value]  # a JSON object; consumers check "type"


def _bad_utf8(exc: UnicodeDecodeError, chunk: bytes) -> StreamError:
    # Quote the line around the bad byte (within this chunk) so the error is actionable.
    start = chunk.rfind(b"\n", 0, exc.start) + 1
    end = chunk.find(b"\n", exc.start)
    line = chunk[start : end if end >= 0 else len(chunk)]
    return StreamError(f"invalid UTF-8 in stream ({exc.reason}): {_show(line)}", line=line)


def _show(line: str | bytes) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return repr(text if len(text) <= 200 else text[:200] + "...")


def decode_all(body: bytes, chunk_size: int | None = None) -> list[Event]:
    """Decode a whole SSE body (convenience for tests and fixtures)."""
    dec = SSEDecoder()
    events: list[Event] = []
    if chunk_size:
        for i in range(0, len(body), chunk_size):
            events += dec.feed(body[i : i + chunk_size])
    else:
        events += dec.feed(body)
    events += dec.close()
    return events
