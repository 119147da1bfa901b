"""The live view of one turn: an anywidget fed by small incremental patches.

Why patches: setting a trait (or ``Output.append_stdout``) per token re-sends the whole reply
every time, O(n^2) bytes. Here the worker thread only records events; a flush (at most every
``FLUSH_INTERVAL`` s, from the event itself or from a small timer thread) renders just the
growing *tail* of the markdown and sends the difference from what the front end already has:

    {"s": seq, "o": [ops], "n": tokens, "m": {meta}, "pl": str, "th": str, "lp": [...]}

(no "type" key: patches are the common case, keep them small; "e" ends, "snap" replaces all)

ops, applied in order by js/view.js (and by `apply_message` below, used by the tests):
    ["k", u]        move the first u UTF-16 units of the tail into a new finished block
    ["b", html]     append a finished block
    ["t", u, add]   keep the first u UTF-16 units of the tail, append `add`
    ["t", u, add, e]  same, then re-append the tail's last e units (its closing tags)
    ["r", i, html]  replace finished block i (a citation arrived for it)

Finished blocks never change again except through "r", so each tick costs O(new text).
A view that appears late (page reload mid-stream) says "hello" and gets one snapshot; at the
end the kernel-side `state` trait holds the final state (for reloads and saved widget state).
"""

from __future__ import annotations

import bisect
import math
import os
import pathlib
import threading
import time
from typing import Any

import anywidget
import traitlets

from .kernel import parent_message, publish, set_thread_parent
from .render import (
    citation_title,
    clean_text,
    insert_marks,
    md_parser,
    render_source,
    static_bundle,
    sup_html,
)

__all__ = ["TurnView", "StreamDoc", "apply_message", "FLUSH_INTERVAL"]

FLUSH_INTERVAL = 0.06  # ~16 updates per second at most
APPROVAL_TIMEOUT = 600.0


def _asset(name: str) -> pathlib.Path:
    """js/ in a source checkout (editable install), else the copy packed into nbchat/static/."""
    here = pathlib.Path(__file__).resolve().parent.parent
    for p in (here.parent / "js" / name, here / "static" / name):
        if p.is_file():
            return p
    raise FileNotFoundError(f"nbchat front-end file {name} not found (looked in js/ and static/)")


def _u16(s: str) -> int:
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
            self._ops.append(["k", _u16(self.tail_html)])
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
                    self._ops.append(["k", _u16(done_html)])
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
                ["t", _u16(old[:keep]), new[keep : len(new) - end], _u16(old[len(old) - end :])]
            )
        else:
            self._ops.append(["t", _u16(old[:keep]), new[keep:]])


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
            keep_end = cut16(tail, _u16(tail) - op[3])[1] if len(op) > 3 else ""
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


class _Listener:
    """What runner.start_turn(listener=...) calls, from the worker thread."""

    def __init__(self, view: TurnView) -> None:
        self.view = view
        self.parent = parent_message()  # constructed on the main thread, inside the cell
        view._parent = self.parent  # every later message of the view names this cell

    def on_start(self) -> None:
        set_thread_parent(self.parent)
        self.view._on_start(self.parent)

    def on_event(self, event: dict[str, Any]) -> None:
        self.view._on_event(event)

    def on_tool_calls(self, calls: list[dict[str, Any]]) -> None:
        self.view._on_tool_calls(calls)

    def on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None:
        self.view._on_tool_result(call, message)

    def on_done(self, turn: Any) -> None:
        self.view._on_done(turn)


def _prob(lp: dict[str, Any]) -> float:
    vals = lp.get("logprobs") or []
    try:
        return round(math.exp(sum(float(v) for v in vals)), 3) if vals else 1.0
    except (TypeError, ValueError, OverflowError):
        return 1.0


def _args_text(args: Any, limit: int = 2000) -> str:
    s = args if isinstance(args, str) else str(args)
    return clean_text(s if len(s) <= limit else s[: limit - 3] + "...")


class TurnView(anywidget.AnyWidget):
    """Live view of one chat turn. Create on the main thread; feed it via `.listener()`."""

    _esm = _asset("view.js")
    _css = _asset("view.css")

    prompt = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    params = traitlets.Dict().tag(sync=True)
    # Final state for late views / reloads / saved widget state. Set once at the end *without*
    # echoing it to live views (they rebuilt the same state from the patches, see js/view.js).
    state = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        prompt: str,
        *,
        params: dict[str, Any] | None = None,
        title: str | None = None,
        refresh_fallback: bool = True,
        **kwargs: Any,
    ) -> None:
        shown = {k: v for k, v in (params or {}).items() if isinstance(v, (str, int, float, bool))}
        super().__init__(prompt=clean_text(prompt), params=shown, title=title or "", **kwargs)
        self.refresh_fallback = refresh_fallback
        self._lock = threading.RLock()
        self._doc = StreamDoc()
        self._seq = 0
        self._meta: dict[str, Any] = {"status": "waiting"}
        self._meta_dirty: set[str] = set()
        self._plan: list[str] = []
        self._plan_sent = 0
        self._think: list[str] = []
        self._think_sent = 0
        self._lp: list[list[Any]] = []
        self._lp_sent = 0
        self._thinking_blocks: set[int] = set()
        self._calls: list[dict[str, Any]] = []
        self._tokens = 0
        self._tokens_sent = -1
        self._t0: float | None = None
        self._t_first: float | None = None
        self._t_stats = 0.0
        self._t_count = 0.0
        self._last_flush = 0.0
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._error: str | None = None
        self._citations: list[dict[str, Any]] = []
        self._handle: Any = None
        self._stop_requested = False
        self._t_stop: float | None = None
        self._approval: list[Any] | None = None  # [threading.Event, decision]
        self._timer: threading.Thread | None = None
        self._running = False
        self._done = False
        self._display_handle: Any = None
        self._parent: Any = None  # the starting cell's request (set by listener())
        self.bytes_sent = 0  # custom-message payload bytes (for the bench and tests)
        self.messages_sent = 0
        self.on_msg(self._on_frontend_msg)

    def __repr__(self) -> str:  # cheap: no trait serialisation
        return f"<nbchat.TurnView {self.prompt[:40]!r} {self._meta.get('status')}>"

    # -- public API (main thread) ----------------------------------------------------------------
    def listener(self) -> _Listener:
        """The listener for runner.start_turn; captures the current cell's parent header."""
        return _Listener(self)

    def attach(self, handle: Any) -> None:
        """Let the Stop button cancel this turn (handle.cancel())."""
        self._handle = handle
        if self._stop_requested:
            handle.cancel()

    def display(self) -> Any:
        """Show the live view (with a text fallback in the same bundle)."""
        from IPython.display import display

        self._display_handle = display(self, display_id=True)
        return self._display_handle

    def stop(self) -> None:
        """What the Stop button does: cancel the attached turn; the partial reply stays."""
        with self._lock:
            self._stop_requested = True
            self._t_stop = time.monotonic()
            if self._approval is not None:
                self._approval[1] = False
                self._approval[0].set()
            if not self._done:
                self._set_meta(status="stopping")
        if self._handle is not None:
            self._handle.cancel()
        self._flush()

    def approve(self, calls: list[dict[str, Any]], timeout: float = APPROVAL_TIMEOUT) -> bool:
        """Block the worker until Approve/Deny is clicked (Stop or the timeout -> deny)."""
        event = threading.Event()
        with self._lock:
            if self._stop_requested:
                return False
            self._approval = [event, False]
            shown = [
                {
                    "name": clean_text(str((c.get("function") or {}).get("name") or "?")),
                    "args": _args_text((c.get("function") or {}).get("arguments") or "{}"),
                }
                for c in calls
            ]
            self._set_meta(status="approval", approval=shown)
        self._flush()
        event.wait(timeout)
        with self._lock:
            ok = bool(self._approval[1]) and event.is_set()
            self._approval = None
            for c in self._calls:
                c.setdefault("approved", ok)
            self._set_meta(approval=None, calls=self._calls_meta())
            if not self._stop_requested:
                self._set_meta(status="streaming")
        self._flush()
        return ok

    def show_error(self, error: BaseException | str) -> None:
        """Show an error (redacted) in the view, e.g. one raised before the stream started."""
        from ..errors import redact

        with self._lock:
            self._error = redact(str(error)) or type(error).__name__
            self._set_meta(error=self._error, status="error")
        self._flush()

    def snapshot(self) -> dict[str, Any]:
        """The complete front-end state (what a view that appears now needs)."""
        with self._lock:
            return {
                "s": self._seq,
                "blocks": [b[2] for b in self._doc.blocks],
                "tail": self._doc.tail_html,
                "meta": dict(self._meta),
                "plan": "".join(self._plan[: self._plan_sent]),
                "think": "".join(self._think[: self._think_sent]),
                "lp": list(self._lp[: self._lp_sent]),
                "n": max(self._tokens_sent, 0),
            }

    @property
    def text(self) -> str:
        d = self._doc
        return "".join(b[1] for b in d.blocks) + d.tail_raw

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)
        data = dict(data or {})
        fallback = static_bundle(self._as_turn())
        data["text/plain"] = fallback["text/plain"]
        if self._done:
            # nbconvert / GitHub use this when there is no widget state; sanitised HTML
            # outranks markdown, so raw HTML in a reply is never rendered by a converter
            data["text/html"] = fallback["text/html"]
        return (data, meta) if meta is not None else data

    # -- worker side -----------------------------------------------------------------------------
    def _on_start(self, parent: Any = None) -> None:
        with self._lock:
            self._t0 = time.monotonic()
            self._running = True
            self._set_meta(status="streaming")
        self._timer = threading.Thread(
            target=self._tick, args=(parent,), name="nbchat-view-flush", daemon=True
        )
        self._timer.start()
        self._flush()

    def _tick(self, parent: Any) -> None:
        set_thread_parent(parent)
        while True:
            time.sleep(FLUSH_INTERVAL)
            if not self._running:
                return
            if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
                self._flush()

    def _on_event(self, event: dict[str, Any]) -> None:
        t = event.get("type")
        msg = (event.get("delta") or {}).get("message") or {}
        with self._lock:
            if self._t0 is None:
                self._t0 = time.monotonic()
            if t == "content-delta":
                content = msg.get("content") or {}
                self._first()
                self._tokens += 1
                if event.get("index", 0) in self._thinking_blocks or "thinking" in content:
                    self._think.append(clean_text(content.get("thinking") or ""))
                else:
                    piece = content.get("text") or ""
                    self._doc.append(piece)
                    lp = event.get("logprobs")
                    if isinstance(lp, dict):
                        self._lp.append([clean_text(str(lp.get("text", piece))), _prob(lp)])
            elif t == "content-start":
                content = msg.get("content") or {}
                if content.get("type") == "thinking":
                    self._thinking_blocks.add(event.get("index", 0))
                elif content.get("text"):
                    self._doc.append(content["text"])
            elif t == "message-start":
                if self._doc.length or self._calls:
                    self._doc.new_segment()
                self._thinking_blocks = set()
            elif t == "tool-plan-delta":
                self._first()
                self._tokens += 1
                self._plan.append(clean_text(msg.get("tool_plan") or ""))
            elif t == "tool-call-start":
                self._first()
                tc = msg.get("tool_calls") or {}
                fn = tc.get("function") or {}
                self._calls.append(
                    {
                        "id": tc.get("id"),
                        "name": clean_text(str(fn.get("name") or "?")),
                        "args": fn.get("arguments") or "",
                    }
                )
                self._set_meta(calls=self._calls_meta())
            elif t == "tool-call-delta":
                self._tokens += 1
                piece = ((msg.get("tool_calls") or {}).get("function") or {}).get("arguments")
                if piece and self._calls:
                    self._calls[-1]["args"] += piece
                    self._meta_dirty.add("calls")
            elif t == "citation-start":
                cit = msg.get("citations")
                if isinstance(cit, dict):
                    self._citations.append(cit)
                    self._doc.add_citation(cit)
            elif t == "message-end":
                delta = event.get("delta") or {}
                self._finish = delta.get("finish_reason")
                self._usage = delta.get("usage") or self._usage
                if delta.get("error"):
                    from ..errors import redact

                    self._error = redact(str(delta["error"]))
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self._flush()

    def _first(self) -> None:
        if self._t_first is None:
            self._t_first = time.monotonic()

    def _on_tool_calls(self, calls: list[dict[str, Any]]) -> None:
        with self._lock:
            known = {c.get("id") for c in self._calls}
            for c in calls:
                if c.get("id") not in known or c.get("id") is None and not self._calls:
                    fn = c.get("function") or {}
                    self._calls.append(
                        {
                            "id": c.get("id"),
                            "name": clean_text(str(fn.get("name") or "?")),
                            "args": fn.get("arguments") or "{}",
                        }
                    )
            self._set_meta(calls=self._calls_meta())
        self._flush()

    def _on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for block in content:
                if isinstance(block, dict):
                    doc = block.get("document")
                    parts.append(
                        str(doc.get("data", doc))
                        if isinstance(doc, dict)
                        else str(block.get("text", block))
                    )
            content = "\n".join(parts)
        with self._lock:
            for c in self._calls:
                if c.get("id") == call.get("id") and "result" not in c:
                    c["result"] = _args_text(content or "", 500)
                    break
            self._set_meta(calls=self._calls_meta())
        self._flush()

    def _on_done(self, turn: Any) -> None:
        from ..errors import redact

        with self._lock:
            if turn is not None:
                get = (
                    (lambda k: turn.get(k))
                    if isinstance(turn, dict)
                    else (lambda k: getattr(turn, k, None))
                )
                self._finish = get("finish_reason") or self._finish
                self._usage = get("usage") or self._usage
                cancelled = bool(get("cancelled")) or self._stop_requested
                err = get("error")
                if err and not self._error and not cancelled:  # a stop is not an error
                    self._error = redact(str(err))
            else:
                cancelled = self._stop_requested
            status = (
                "stopped"
                if cancelled
                else ("error" if self._error or self._finish == "ERROR" else "done")
            )
            stats = self._stats(final=True)
            if cancelled and self._t_stop is not None:
                stats["stop_ms"] = round((time.monotonic() - self._t_stop) * 1000)
            self._set_meta(status=status, stats=stats, error=self._error, approval=None)
            self._running = False
            self._done = True
        self._flush(final=True)
        if self.refresh_fallback and self._display_handle is not None:
            try:  # saved notebooks then show the whole reply without widget state
                self._refresh_display()
            except Exception:
                pass

    def _refresh_display(self) -> None:
        """Update the displayed bundle (its fallback now holds the whole reply) in place."""
        from IPython import get_ipython

        handle = self._display_handle
        formatter = getattr(get_ipython(), "display_formatter", None)
        if formatter is not None and self._parent:
            data, md = formatter.format(self)
            content = {"data": data, "metadata": md, "transient": {"display_id": handle.display_id}}
            if publish(self._parent, "update_display_data", content, b"display_data"):
                return
        handle.update(self)

    # -- flushing --------------------------------------------------------------------------------
    def _set_meta(self, **kv: Any) -> None:
        for k, v in kv.items():
            if self._meta.get(k) != v or k not in self._meta:
                self._meta[k] = v
                self._meta_dirty.add(k)

    def _calls_meta(self) -> list[dict[str, Any]]:
        return [
            {k: (_args_text(v) if k == "args" else v) for k, v in c.items() if k != "id"}
            for c in self._calls
        ]

    def _stats(self, final: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        t0 = self._t0 or now
        out_tokens = self._tokens
        stats: dict[str, Any] = {"tokens": out_tokens}
        usage = self._usage or {}
        toks = usage.get("tokens") or usage.get("billed_units") or {}
        if final and toks.get("output_tokens") is not None:
            stats["tokens"] = out_tokens = int(toks["output_tokens"])
            if toks.get("input_tokens") is not None:
                stats["input_tokens"] = int(toks["input_tokens"])
        if self._t_first is not None:
            stats["ttft"] = round(self._t_first - t0, 3)
            gen = now - self._t_first
            if gen > 0 and out_tokens > 1:
                stats["tps"] = round((out_tokens - 1) / gen, 1)
        stats["elapsed"] = round(now - t0, 2)
        if final and self._finish:
            stats["finish"] = self._finish
        return stats

    def _flush(self, final: bool = False) -> None:
        with self._lock:
            self._last_flush = now = time.monotonic()
            if self._meta_dirty.intersection({"calls"}):
                self._meta["calls"] = self._calls_meta()
            if not final and self._t_first and not self._t_stats:
                # time to first token once; the front end derives tokens/s from "n" live
                self._t_stats = now
                self._set_meta(stats=self._stats())
            ops = self._doc.take_ops()
            msg: dict[str, Any] = {"type": "e"} if final else {}
            if ops:
                msg["o"] = ops
            if self._meta_dirty:
                msg["m"] = {k: self._meta.get(k) for k in sorted(self._meta_dirty)}
                self._meta_dirty.clear()
            if len(self._plan) > self._plan_sent:
                msg["pl"] = "".join(self._plan[self._plan_sent :])
                self._plan_sent = len(self._plan)
            if len(self._think) > self._think_sent:
                msg["th"] = "".join(self._think[self._think_sent :])
                self._think_sent = len(self._think)
            if len(self._lp) > self._lp_sent:
                msg["lp"] = self._lp[self._lp_sent :]
                self._lp_sent = len(self._lp)
            if self._tokens != self._tokens_sent and (
                final or (msg and now - self._t_count >= 0.5)
            ):  # the live token count: twice a second is plenty
                self._t_count = now
                msg["n"] = self._tokens_sent = self._tokens
            if not msg:
                return
            self._seq += 1
            msg["s"] = self._seq
            if final:
                # the front end checks its rebuilt HTML against this and asks for a resync
                msg["len"] = _u16(self._doc.html())
                msg["nb"] = len(self._doc.blocks)
            self._send_patch(msg)
            if final:
                snap = self.snapshot()
                with self._lock_property(state=snap):  # kernel-side only; no echo
                    self.state = snap

    def _send_patch(self, msg: dict[str, Any]) -> None:
        if os.environ.get("NBCHAT_VIEW_COUNT", "1") != "0":
            import json

            self.bytes_sent += len(
                json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()
            )
            self.messages_sent += 1
        comm = self.comm
        if comm is not None and publish(
            self._parent,
            "comm_msg",  # what Widget.send would send, but attributed to the starting cell
            {"comm_id": comm.comm_id, "data": {"method": "custom", "content": msg}},
            getattr(comm, "topic", None),
        ):
            return
        self.send(msg)

    # -- front end -> kernel ---------------------------------------------------------------------
    def _on_frontend_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "stop":
            self.stop()
        elif kind == "approve":
            with self._lock:
                if self._approval is not None:
                    self._approval[1] = bool(content.get("ok"))
                    self._approval[0].set()
        elif kind in ("hello", "resync"):
            with self._lock:
                behind = kind == "resync" or int(content.get("s") or 0) < self._seq
                if behind and self._seq > 0:
                    self._send_patch({"type": "snap", "state": self.snapshot()})

    def _as_turn(self) -> dict[str, Any]:
        calls = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {"name": c["name"], "arguments": c["args"]},
            }
            for c in self._calls
        ]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": [{"type": "text", "text": self.text}],
        }
        if calls:
            message["tool_calls"] = calls
        if self._plan:
            message["tool_plan"] = "".join(self._plan)
        if self._citations:
            message["citations"] = self._citations
        return {
            "prompt": self.prompt,
            "messages": [message],
            "response": {"message": message, "finish_reason": self._finish, "usage": self._usage},
            "cancelled": self._meta.get("status") == "stopped",
            "error": self._error,
            "params": self.params,
        }
