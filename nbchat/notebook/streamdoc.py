"""The diff engine of the live view: a growing markdown reply as small incremental patches.

Why patches: setting a trait (or ``Output.append_stdout``) per token re-sends the whole reply
every time, O(n^2) bytes. `StreamDoc` renders just the growing *tail* of the markdown and
emits the difference from what the front end already has:

    {"s": seq, "o": [ops], "n": tokens, "m": {meta}, "pl": str, "th": str, "lp": [...]}

(no "type" key: patches are the common case, keep them small; "e" ends, "snap" replaces all)

ops, applied in order by js/view.js (and by `apply_message` below, used by the tests):
    ["k", u]        move the first u UTF-16 units of the tail into a new finished block
    ["b", html]     append a finished block
    ["t", u, add]   keep the first u UTF-16 units of the tail, append `add`
    ["t", u, add, e]  same, then re-append the tail's last e units (its closing tags)
    ["r", i, html]  replace finished block i (a citation arrived for it)

Finished blocks never change again except through "r", so each tick costs O(new text).
"""

from __future__ import annotations

import bisect
from typing import Any

from .render import citation_title, clean_text, insert_marks, md_parser, render_source, sup_html

__all__ = ["StreamDoc", "apply_message", "u16"]


def u16(s: str) -> int:
    """Length in UTF-16 code units, the unit JavaScript strings are sliced in."""
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF) if not s.isascii() else len(s)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # binary search on slice equality: C-speed compares
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class StreamDoc:
    """A growing markdown reply, split into finished blocks and one re-rendered tail."""

    def __init__(self) -> None:
        self.blocks: list[list[Any]] = []  # [raw_start, raw_text, html]
        self.tail_start = 0
        self.tail_raw = ""
        self.tail_html = ""
        self.marks: list[tuple[int, int]] = []  # (raw offset, citation id), sorted
        self.sups: dict[int, str] = {}
        self.seg_base = 0  # raw offset where the current model step's text starts
        self._ops: list[list[Any]] = []
        self._tail_dirty = False

    @property
    def length(self) -> int:
        return self.tail_start + len(self.tail_raw)

    def html(self) -> str:
        return "".join(b[2] for b in self.blocks) + self.tail_html

    def append(self, piece: str) -> None:
        if piece:
            self.tail_raw += clean_text(piece)
            self._tail_dirty = True

    def add_citation(self, citation: dict[str, Any]) -> None:
        end = citation.get("end")
        if not isinstance(end, int) or end < 0 or len(self.sups) >= 0x1800:
            return
        cid = len(self.sups)
        self.sups[cid] = sup_html(cid + 1, citation_title(citation))
        off = self.seg_base + end
        bisect.insort(self.marks, (off, cid))
        if off >= self.tail_start:
            self._tail_dirty = True
            return
        for i, (start, raw, _html) in enumerate(self.blocks):
            if start <= off < start + len(raw):
                new = self._render(start, raw, start + len(raw))
                if new != self.blocks[i][2]:
                    self.blocks[i][2] = new
                    self._ops.append(["r", i, new])
                return

    def new_segment(self) -> None:
        """A new model step (after tool results): close the current text as finished."""
        self.take_ops()  # render what is pending first, so the op order stays right
        if self.tail_raw:
            self.blocks.append([self.tail_start, self.tail_raw, self.tail_html])
            self._ops.append(["k", u16(self.tail_html)])
            self.tail_start += len(self.tail_raw)
            self.tail_raw, self.tail_html = "", ""
        self.seg_base = self.tail_start

    def _marks_in(self, start: int, end: int, closed: bool) -> list[tuple[int, int]]:
        lo = bisect.bisect_left(self.marks, (start, -1))
        out = []
        for off, cid in self.marks[lo:]:
            if off > end or (off == end and not closed):
                break
            out.append((off, cid))
        return out

    def _render(self, start: int, raw: str, end: int, closed: bool = False) -> str:
        src = insert_marks(raw, self._marks_in(start, end, closed), start)
        return render_source(src, self.sups)

    def take_ops(self) -> list[list[Any]]:
        """Render the tail if it changed; return the ops since the last call."""
        if self._tail_dirty:
            self._tail_dirty = False
            self._render_tail()
        ops, self._ops = self._ops, []
        return ops

    def _render_tail(self) -> None:
        raw, start = self.tail_raw, self.tail_start
        marks = self._marks_in(start, start + len(raw), True)
        src = insert_marks(raw, marks, start)
        tops = [
            t.map[0] for t in md_parser().parse(src) if t.level == 0 and t.map and t.nesting >= 0
        ]
        new = render_source(src, self.sups)
        if len(tops) >= 2 and tops[-1] > 0:
            # Everything before the last top-level block is finished: a later line can only
            # extend the last block (or start a new one), never reach back across it.
            line, pos = 0, 0
            while line < tops[-1]:
                nl = src.find("\n", pos)
                if nl < 0:
                    break
                pos, line = nl + 1, line + 1
            if line == tops[-1]:
                n_marks = sum(1 for ch in src[:pos] if 0xE000 <= ord(ch) <= 0xF8FF)
                raw_cut = pos - n_marks
                done_html = render_source(src[:pos], self.sups)
                rest_html = render_source(src[pos:], self.sups)
                if new == done_html + rest_html:  # the usual case: diff, then split in place
                    self._diff(self.tail_html, new)
                    self._ops.append(["k", u16(done_html)])
                else:  # rendering is not concatenative here: send the block itself
                    self._ops.append(["b", done_html])
                    self._diff(self.tail_html, rest_html)
                self.blocks.append([start, raw[:raw_cut], done_html])
                self.tail_start = start + raw_cut
                self.tail_raw = raw[raw_cut:]
                self.tail_html = rest_html
                return
        self._diff(self.tail_html, new)
        self.tail_html = new

    def _diff(self, old: str, new: str) -> None:
        if new == old:
            return
        keep = _common_prefix(old, new)
        # closing tags after the growing text ("</p>", "</code></pre>") stay put: keep a
        # common suffix too, so a tick costs only the new text
        room = min(len(old), len(new)) - keep
        end = 0
        while end < min(room, 64) and old[-1 - end] == new[-1 - end]:
            end += 1
        if end:
            self._ops.append(
                ["t", u16(old[:keep]), new[keep : len(new) - end], u16(old[len(old) - end :])]
            )
        else:
            self._ops.append(["t", u16(old[:keep]), new[keep:]])


def apply_message(state: dict[str, Any], msg: dict[str, Any]) -> dict[str, Any]:
    """Apply one front-end message to a state dict exactly as js/view.js does (for tests)."""

    def cut16(s: str, units: int) -> tuple[str, str]:
        b = s.encode("utf-16-le")
        return b[: 2 * units].decode("utf-16-le"), b[2 * units :].decode("utf-16-le")

    if msg.get("type") == "snap":
        return dict(msg["state"])
    state.setdefault("blocks", [])
    state.setdefault("tail", "")
    for op in msg.get("o", []):
        if op[0] == "k":
            head, rest = cut16(state["tail"], op[1])
            state["blocks"].append(head)
            state["tail"] = rest
        elif op[0] == "b":
            state["blocks"].append(op[1])
        elif op[0] == "t":
            tail = state["tail"]
            keep_end = cut16(tail, u16(tail) - op[3])[1] if len(op) > 3 else ""
            state["tail"] = cut16(tail, op[1])[0] + op[2] + keep_end
        elif op[0] == "r":
            state["blocks"][op[1]] = op[2]
    state["plan"] = state.get("plan", "") + msg.get("pl", "")
    state["think"] = state.get("think", "") + msg.get("th", "")
    state["lp"] = state.get("lp", []) + msg.get("lp", [])
    state.setdefault("meta", {}).update(msg.get("m", {}))
    if "n" in msg:
        state["n"] = msg["n"]
    state["s"] = msg.get("s", state.get("s", 0))
    return state
