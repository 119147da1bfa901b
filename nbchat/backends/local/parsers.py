"""Streaming parsers of the engine's output: text (stop sequences, logprobs, FAST citations)
and tool calls (plan + calls under the tool grammar)."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from ...protocol.events import StreamBuilder
from .. import prompting


class TextOut:
    """Text/JSON replies: stop sequences, held-back text, logprobs grouping, FAST citations."""

    def __init__(self, builder: StreamBuilder, stops: list[str], logprobs: bool, tracker):
        self.b = builder
        self.stops = [s for s in stops if s]
        self.logprobs = logprobs
        self.tracker = tracker  # CitationTracker in FAST mode, else None
        self.full = ""  # all text decoded so far (may include a held-back tail)
        self.sent = 0  # len of the part already emitted
        self.ids: list[int] = []
        self.lps: list[float] = []
        self.stopped = False

    def feed(self, text: str, token: int | None, lp: float | None) -> list[dict[str, Any]]:
        if token is not None:
            self.ids.append(token)
            if lp is not None:
                self.lps.append(lp)
        self.full += text
        for s in self.stops:
            at = self.full.find(s, max(0, self.sent - len(s) + 1))
            if at >= 0:
                self.stopped = True
                self.full = self.full[:at]
                return self._emit(len(self.full)) if at > self.sent else []
        hold = 0
        for s in self.stops:  # keep back a tail that could still become a stop sequence
            for n in range(min(len(s) - 1, len(self.full) - self.sent), 0, -1):
                if self.full.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        return self._emit(len(self.full) - hold)

    def flush(self) -> list[dict[str, Any]]:
        return self._emit(len(self.full))

    def _emit(self, end: int) -> list[dict[str, Any]]:
        if end <= self.sent:
            return []
        piece = self.full[self.sent : end]
        self.sent = end
        lp = None
        if self.logprobs:
            lp = {"token_ids": self.ids, "text": piece, "logprobs": self.lps}
        self.ids, self.lps = [], []
        out = self.b.text(piece, lp)
        if self.tracker is not None:
            for c in self.tracker.feed(piece):
                out += self.b.citation(c)
        return out


_CALL_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


class CallOut:
    """Tool-call replies: ``Plan: ...\\n<tool_call>{...}</tool_call>`` -> plan and call events.

    The plan streams as tool-plan-delta events. A call is emitted (tool-call-start, one
    tool-call-delta with the whole arguments, tool-call-end) only once its arguments are a
    complete JSON value: a call cut by max_tokens is never emitted, so no client receives
    arguments that do not parse. `calls` counts the complete calls.
    """

    def __init__(self, builder: StreamBuilder):
        self.b = builder
        self.buf = ""
        self.state = "prefix"
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.calls = 0
        self.name = ""
        self.args = ""  # the current call's arguments so far

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.buf += text
        out: list[dict[str, Any]] = []
        progressed = True
        while progressed and self.buf:
            progressed = False
            st = self.state
            if st == "prefix":
                p = prompting.PLAN_PREFIX
                if self.buf.startswith(p):
                    self.buf, self.state, progressed = self.buf[len(p) :], "plan", True
                elif not p.startswith(self.buf):  # should not happen under the grammar
                    self.state, progressed = "between", True
            elif st == "plan":
                nl = self.buf.find("\n")
                piece = self.buf if nl < 0 else self.buf[:nl]
                if piece:
                    out.append(self.b.tool_plan(piece))
                self.buf = "" if nl < 0 else self.buf[nl + 1 :]
                if nl >= 0:
                    self.state, progressed = "between", True
            elif st == "between":
                at = self.buf.find(prompting.TOOL_CALL_OPEN)
                if at >= 0:
                    self.buf = self.buf[at + len(prompting.TOOL_CALL_OPEN) :]
                    self.state, progressed = "head", True
            elif st == "head":
                m = _CALL_HEAD.match(self.buf)
                if m:
                    self.name = json.loads(f'"{m.group(1)}"')
                    self.args = ""
                    self.buf = self.buf[m.end() :]
                    self.state, self.depth, progressed = "args", 0, True
            elif st == "args":
                if self.depth == 0:  # whitespace before the value is not part of the arguments
                    self.buf = self.buf.lstrip()
                n = self._scan_args()
                self.args += self.buf[:n]
                self.buf = self.buf[n:]
                if self.state == "tail":  # complete: the call goes out in one piece
                    call_id = f"{self.name}_{secrets.token_hex(6)}"
                    out.append(self.b.tool_call_start(call_id, self.name, ""))
                    out.append(self.b.tool_call_delta(self.args))
                    out.append(self.b.tool_call_end())
                    self.calls += 1
                    progressed = True
            elif st == "tail":
                at = self.buf.find(prompting.TOOL_CALL_CLOSE)
                if at >= 0:
                    self.buf = self.buf[at + len(prompting.TOOL_CALL_CLOSE) :]
                    self.state, progressed = "between", True
        return out

    def _scan_args(self) -> int:
        """Consume argument characters; returns how many belong to the arguments value."""
        for i, ch in enumerate(self.buf):
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif ch == "\\":
                    self.esc = True
                elif ch == '"':
                    self.in_str = False
            elif ch == '"':
                self.in_str = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.state = "tail"
                    return i + 1
        return len(self.buf)
