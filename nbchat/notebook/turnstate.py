"""What the live view shows of a running turn, and the patch messages that bring it there.

The events are folded by the protocol's `Accumulator` (one per model step: a tool-using turn
has several); this module only reads what it folded (text, thinking, tool plan, tool calls,
citations, logprobs, finish reason, usage, error) and sends the front end what is new since
the last patch, through the `StreamDoc` diff engine. No widget, no thread, no lock here: the
`TurnView` owns those and calls in under its lock.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..protocol.accumulator import Accumulator
from .render import citation_title, clean_text
from .streamdoc import StreamDoc, u16

__all__ = ["TurnState", "args_text"]

# events that carry one generated token (the live counter); the first of them (or a tool call
# starting) marks the time to first token
_TOKEN_EVENTS = frozenset({"content-delta", "tool-plan-delta", "tool-call-delta"})
_FIRST_EVENTS = _TOKEN_EVENTS | {"tool-call-start"}


def args_text(args: Any, limit: int = 2000) -> str:
    s = args if isinstance(args, str) else str(args)
    return clean_text(s if len(s) <= limit else s[: limit - 3] + "...")


def _prob(lp: dict[str, Any]) -> float:
    vals = lp.get("logprobs") or []
    try:
        return round(math.exp(sum(float(v) for v in vals)), 3) if vals else 1.0
    except (TypeError, ValueError, OverflowError):
        return 1.0


class TurnState:
    """The state of one live turn; `patch()` returns the next front-end message (or None)."""

    def __init__(self) -> None:
        self.steps: list[Accumulator] = [Accumulator()]
        self.doc = StreamDoc()
        self.seq = 0
        self.meta: dict[str, Any] = {"status": "waiting"}
        self.dirty: set[str] = set()
        self.tokens = 0
        self.think_tokens = 0  # streamed thinking pieces (part of `tokens`)
        self.tokens_sent = -1
        self.t0: float | None = None
        self.t_first: float | None = None
        self.t_stats = 0.0
        self.t_count = 0.0
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: str | None = None
        self._reported: list[dict[str, Any]] = []  # calls the runner named but no event streamed
        self._call_state: dict[Any, dict[str, Any]] = {}  # per call: result, approved
        self._step = 0  # the step `doc` is reading
        self._step_text = 0  # characters of that step's text already in `doc`
        self._step_cits = 0
        self._plan_sent = ""
        self._think_sent = ""
        self._think_cits: list[str] = []  # THINKING_CONTENT citations, shown with the thinking
        self._lp_sent: list[list[Any]] = []
        self.code_lang = ""  # "json": the reply is shown as a code block in that language
        self._fenced = self._fence_closed = False

    # -- input -----------------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> None:
        t = event.get("type")
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        if t == "message-start" and self.steps[-1].events:
            self.steps.append(Accumulator())  # the next model step (after tool results)
        acc = self.steps[-1]
        acc.feed(event)
        if t in _FIRST_EVENTS and self.t_first is None:
            self.t_first = now
        if t in _TOKEN_EVENTS:
            self.tokens += 1
            if t == "content-delta" and "thinking" in _delta_content(event):
                self.think_tokens += 1
        elif t == "message-end":
            self.finish = acc.finish_reason
            self.usage = acc.usage or self.usage
            if acc.error is not None:
                from ..errors import redact

                self.error = redact(str(acc.error))
        elif t == "tool-call-start":
            self.set_meta(calls=self.calls_meta())

    def report_calls(self, calls: list[dict[str, Any]]) -> None:
        """Tool calls as the runner runs them: any not seen in the stream are added."""
        known = {c["id"] for c in self.calls()}
        for c in calls:
            if c.get("id") not in known or (c.get("id") is None and not known):
                fn = c.get("function") or {}
                name = clean_text(str(fn.get("name") or "?"))
                self._reported.append(
                    {"id": c.get("id"), "name": name, "args": fn.get("arguments") or "{}"}
                )
        self.set_meta(calls=self.calls_meta())

    def set_result(self, call_id: Any, text: str, outcome: str | None = None) -> None:
        """A call's result; `outcome` ("ran", "error", "invalid", "denied") picks its badge."""
        for key, c in self._keyed_calls():
            if c["id"] == call_id and "result" not in c:
                state = self._call_state.setdefault(key, {})
                state["result"] = args_text(text, 500)
                if outcome:
                    state["outcome"] = outcome
                break
        self.set_meta(calls=self.calls_meta())

    def mark_unrun(self, reason: str) -> None:
        """Calls that got no result (e.g. the reply was cut by max_tokens): say why."""
        changed = False
        for key, c in self._keyed_calls():
            if "result" not in c and "approved" not in c and "outcome" not in c:
                self._call_state.setdefault(key, {})["outcome"] = "notrun"
                self._call_state[key]["why"] = reason
                changed = True
        if changed:
            self.set_meta(calls=self.calls_meta())

    def set_approved(self, ok: bool) -> None:
        for key, _c in self._keyed_calls():
            self._call_state.setdefault(key, {}).setdefault("approved", ok)
        self.set_meta(calls=self.calls_meta())

    def set_meta(self, **kv: Any) -> None:
        for k, v in kv.items():
            if self.meta.get(k) != v or k not in self.meta:
                self.meta[k] = v
                self.dirty.add(k)

    # -- reading ---------------------------------------------------------------------------------
    def _keyed_calls(self) -> list[tuple[Any, dict[str, Any]]]:
        calls = []
        for acc in self.steps:
            for tc in acc.tool_calls:
                fn = tc["function"]
                name = clean_text(str(fn["name"] or "?"))
                calls.append({"id": tc["id"], "name": name, "args": fn["arguments"]})
        calls += [dict(c) for c in self._reported]
        keyed = []
        for i, c in enumerate(calls):
            key = c["id"] if c["id"] is not None else i
            c.update(self._call_state.get(key, {}))
            keyed.append((key, c))
        return keyed

    def calls(self) -> list[dict[str, Any]]:
        """Every tool call so far: id, name, args (+ result, approved once known)."""
        return [c for _, c in self._keyed_calls()]

    def calls_meta(self) -> list[dict[str, Any]]:
        return [
            {k: (args_text(v) if k == "args" else v) for k, v in c.items() if k != "id"}
            for c in self.calls()
        ]

    @property
    def plan(self) -> str:
        # one line per model round ("…Tokyo." then "I will use…" never run together)
        return "\n".join(acc.tool_plan for acc in self.steps if acc.tool_plan)

    @property
    def citations(self) -> list[dict[str, Any]]:
        return [c for acc in self.steps for c in acc.citations]

    @property
    def text(self) -> str:
        """The reply text so far (clean; what `doc` holds once synced)."""
        self._sync_doc()
        return "".join(b[1] for b in self.doc.blocks) + self.doc.tail_raw

    def stats(self, final: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        t0 = self.t0 or now
        out_tokens = self.tokens
        stats: dict[str, Any] = {"tokens": out_tokens}
        usage = self.usage or {}
        toks = usage.get("tokens") or usage.get("billed_units") or {}
        if final and toks.get("output_tokens") is not None:
            stats["tokens"] = out_tokens = int(toks["output_tokens"])
            if toks.get("input_tokens") is not None:
                stats["input_tokens"] = int(toks["input_tokens"])
        if self.t_first is not None:
            stats["ttft"] = round(self.t_first - t0, 3)
            gen = now - self.t_first
            if gen > 0 and out_tokens > 1:
                stats["tps"] = round((out_tokens - 1) / gen, 1)
        stats["elapsed"] = round(now - t0, 2)
        rounds = sum(1 for acc in self.steps if acc.events)
        if rounds > 1:  # max_tokens applies to each round: say how many there were
            stats["rounds"] = rounds
        if self.think_tokens:  # streamed pieces: Cohere reports no thinking/answer split
            stats["thinking_tokens"] = self.think_tokens
            stats["answer_tokens"] = max(0, self.tokens - self.think_tokens)
        if final and isinstance(usage.get("cached_tokens"), (int, float)):
            stats["cached_tokens"] = int(usage["cached_tokens"])
        if final and self.finish:
            stats["finish"] = self.finish
        return stats

    # -- output ----------------------------------------------------------------------------------
    def _sync_doc(self) -> None:
        """Move what the accumulators hold and `doc` has not yet seen into `doc`."""
        while True:
            acc = self.steps[self._step]
            text = acc.text
            if len(text) > self._step_text:
                if self.code_lang and not self._fenced:  # --json: the reply is a code block
                    self.doc.append(f"```{self.code_lang}\n")
                    self._fenced = True
                self.doc.append(text[self._step_text :])
                self._step_text = len(text)
            for cit in acc.citations[self._step_cits :]:
                if cit.get("type") == "THINKING_CONTENT":  # offsets into the thinking text
                    self._think_cits.append(citation_title(cit))
                    self.set_meta(think_cits=list(self._think_cits))
                    continue
                self.doc.add_citation(cit)
            self._step_cits = len(acc.citations)
            if self._step + 1 >= len(self.steps):
                return
            had_calls = any(s.tool_calls for s in self.steps[: self._step + 1])
            self._step += 1
            self._step_text = self._step_cits = 0
            if self.doc.length or had_calls:
                self.doc.new_segment()

    def patch(self, final: bool = False) -> dict[str, Any] | None:
        """The next front-end message (ops, meta, plan, thinking, logprobs, count), or None."""
        now = time.monotonic()
        if "calls" in self.dirty or any(acc.tool_calls for acc in self.steps):
            self.set_meta(calls=self.calls_meta())
        if not final and self.t_first and not self.t_stats:
            # time to first token once; the front end derives tokens/s from "n" live
            self.t_stats = now
            self.set_meta(stats=self.stats())
        if self.think_tokens:  # the Thinking summary counts live
            self.set_meta(think_n=self.think_tokens)
        self._sync_doc()
        if final and self._fenced and not self._fence_closed:
            self.doc.append("\n```")
            self._fence_closed = True
        ops = self.doc.take_ops()
        msg: dict[str, Any] = {"type": "e"} if final else {}
        if ops:
            msg["o"] = ops
        if self.dirty:
            msg["m"] = {k: self.meta.get(k) for k in sorted(self.dirty)}
            self.dirty.clear()
        plan = self.plan
        if len(plan) > len(self._plan_sent):
            msg["pl"] = clean_text(plan[len(self._plan_sent) :])
            self._plan_sent = plan
        think = "".join(acc.thinking for acc in self.steps)
        if len(think) > len(self._think_sent):
            msg["th"] = clean_text(think[len(self._think_sent) :])
            self._think_sent = think
        lps = [lp for acc in self.steps for lp in acc.logprobs]
        if len(lps) > len(self._lp_sent):
            new = [
                [clean_text(str(lp.get("text", ""))), _prob(lp)] for lp in lps[len(self._lp_sent) :]
            ]
            msg["lp"] = new
            self._lp_sent += new
        if self.tokens != self.tokens_sent and (final or msg):
            self.t_count = now  # the count travels with the text it counts: it never lags
            msg["n"] = self.tokens_sent = self.tokens
        if not msg:
            return None
        self.seq += 1
        msg["s"] = self.seq
        if final:
            # the front end checks its rebuilt HTML against this and asks for a resync
            msg["len"] = u16(self.doc.html())
            msg["nb"] = len(self.doc.blocks)
        return msg

    def snapshot(self) -> dict[str, Any]:
        """The complete front-end state as sent so far (what a view that appears now needs)."""
        return {
            "s": self.seq,
            "blocks": [b[2] for b in self.doc.blocks],
            "tail": self.doc.tail_html,
            "meta": dict(self.meta),
            "plan": clean_text(self._plan_sent),
            "think": clean_text(self._think_sent),
            "lp": list(self._lp_sent),
            "n": max(self.tokens_sent, 0),
        }

    def as_turn(self, prompt: str, params: dict[str, Any], stopped: bool) -> dict[str, Any]:
        """A Turn-shaped dict of what is shown (for the static fallback bundle)."""
        calls = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {"name": c["name"], "arguments": c["args"]},
            }
            for c in self.calls()
        ]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": [{"type": "text", "text": self.text}],
        }
        if calls:
            message["tool_calls"] = calls
        if self.plan:
            message["tool_plan"] = self.plan
        if self.citations:
            message["citations"] = self.citations
        return {
            "prompt": prompt,
            "messages": [message],
            "response": {"message": message, "finish_reason": self.finish, "usage": self.usage},
            "cancelled": stopped,
            "error": self.error,
            "params": params,
        }


def _delta_content(event: dict[str, Any]) -> dict[str, Any]:
    delta = event.get("delta")
    msg = delta.get("message") if isinstance(delta, dict) else None
    content = msg.get("content") if isinstance(msg, dict) else None
    return content if isinstance(content, dict) else {}
