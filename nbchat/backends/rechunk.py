"""Coalesce the HTTP chunks of a response body as they come off the socket (pure; no I/O).

A v2 stream sends one HTTP chunk per event, and h11 hands each chunk up through several
layers of httpcore and httpx: that costs more than decoding the event. `Rechunker` sits in
our network stream (`netio.SocketStream.read`) and rewrites, per socket read, all the
chunk-encoded payload in it into ONE chunk. The bytes h11 sees are still a valid HTTP/1.1
response -- same head, same payload, same terminator and trailers -- so h11 still frames
the body, sees where it ends, and the connection goes back to the pool. Nothing waits for
more data: a read's payload is passed on at once.

States: HEAD (scan the response head: status, Transfer-Encoding), CHUNKED (de-chunk, emit one
chunk per read), PASS (bytes go through untouched: a body that is not chunked, the last chunk
and its trailers, or anything unexpected -- then h11 judges the bytes as they are). A new
request (`request()` on its first write) starts a new HEAD.
"""

from __future__ import annotations

__all__ = ["Rechunker"]

HEAD, CHUNKED, PASS = 0, 1, 2
_MAX_HEAD = 1 << 16
_MAX_SIZE_LINE = 1024


class Rechunker:
    __slots__ = ("state", "head", "left", "skip", "line", "bodyless")

    def __init__(self) -> None:
        self.state = PASS  # until the first request is written
        self.head = b""  # head bytes seen so far (already passed on)
        self.left = 0  # payload bytes still due in the current chunk
        self.skip = 0  # CRLF bytes still due after a chunk's payload
        self.line = b""  # an incomplete chunk-size line (held back)
        self.bodyless = False  # the request was HEAD: its response has no body

    def request(self, data: bytes) -> None:
        """Bytes of a request are being written: its response starts with a head."""
        if self.state == PASS:  # the first write of a request (its head)
            self.state = HEAD
            self.head = b""
            self.bodyless = data[:5] == b"HEAD "

    def feed(self, data: bytes) -> bytes:
        """Bytes read from the socket -> the bytes to give h11 (may be b"": read again)."""
        out: list[bytes] = []
        while data:
            state = self.state
            if state == PASS:
                out.append(data)
                break
            if state == HEAD:
                data = self._head(data, out)
                continue
            data = self._chunked(data, out)
        return out[0] if len(out) == 1 else b"".join(out)

    def _head(self, data: bytes, out: list[bytes]) -> bytes:
        seen = len(self.head)
        buf = self.head + data
        end = buf.find(b"\r\n\r\n", max(0, seen - 3))
        if end < 0:
            out.append(data)
            self.head = buf
            if len(buf) > _MAX_HEAD:
                self.state = PASS  # h11 will refuse it; not our business
            return b""
        cut = end + 4 - seen
        out.append(data[:cut])
        self.head = b""
        self.state = self._body_state(buf[:end])
        return data[cut:]

    def _body_state(self, head: bytes) -> int:
        lines = head.split(b"\r\n")
        parts = lines[0].split(None, 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            return PASS
        if 100 <= status < 200 and status != 101:
            return HEAD  # 100 Continue & co: the real head follows
        if self.bodyless or status in (101, 204, 304):
            return PASS
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"transfer-encoding":
                if value.strip().lower().endswith(b"chunked"):
                    self.left = self.skip = 0
                    self.line = b""
                    return CHUNKED
        return PASS

    def _chunked(self, data: bytes, out: list[bytes]) -> bytes:
        """De-chunk as much of data as possible; emit its payload as one chunk."""
        if self.line:
            data = self.line + data
            self.line = b""
        payload: list[bytes] = []
        pos = 0
        end = len(data)
        left, skip = self.left, self.skip
        rest = b""
        while pos < end:
            if left:
                take = left if left <= end - pos else end - pos
                payload.append(data[pos : pos + take])
                pos += take
                left -= take
                if left:
                    break
                skip = 2
            if skip:
                take = skip if skip <= end - pos else end - pos
                pos += take
                skip -= take
                if skip:
                    break
            eol = data.find(b"\n", pos)
            if eol < 0:
                if end - pos > _MAX_SIZE_LINE:
                    rest = data[pos:]  # not chunk framing: let h11 see (and refuse) it
                    self.state = PASS
                else:
                    self.line = data[pos:]
                pos = end
                break
            try:
                size = int(data[pos:eol].split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            if size <= 0:  # the last chunk (size 0) or garbage: h11 takes it from here
                rest = data[pos:]
                self.state = PASS
                pos = end
                break
            pos = eol + 1
            left = size
        self.left, self.skip = left, skip
        if payload:
            body = payload[0] if len(payload) == 1 else b"".join(payload)
            out.append(b"%x\r\n%b\r\n" % (len(body), body))
        if rest:
            out.append(rest)
        return data[pos:] if pos < end else b""
