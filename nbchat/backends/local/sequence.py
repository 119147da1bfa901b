"""One request on the batching engine: its prompt, sampler and parsers, advanced token by token.

`Sequence(model, request)` validates and prepares everything before any event (a prompt that
does not fit, or max_tokens beyond the context, raises `ValidationError`). The scheduler then
evaluates its prompt (`model.ctx.prefill_chunk`), and after each evaluation calls `sample(i)`
with the index of the sequence's logits in the batch: it returns the events for the sampled token
and sets `token` (to evaluate next) or `done`. Every request runs in the batch, grammar
(JSON, tools) included: a grammar is a per-sequence sampler.
"""

from __future__ import annotations

import codecs
import math
import secrets
from typing import Any

from ...errors import EngineError, ValidationError
from ...protocol.events import StreamBuilder, usage_dict
from ...protocol.request import DEFAULTS, normalize_documents
from .. import prompting
from ..grounding import CitationTracker, compute_citations, tool_sources
from .parsers import CallOut, TextOut
from .tools import auto_tool_pick, json_grammar, tool_grammar

DEFAULT_MAX_TOKENS = 512
REPEAT_PENALTY = 1.1


class Sequence:
    """A prepared request; `slot`, `at` (prefill progress) and `pos` are set by the scheduler."""

    def __init__(self, model: Any, req: dict[str, Any]) -> None:
        self.model, self.req = model, req
        ctx = model.ctx()
        tools = req.get("tools") or []
        choice = req.get("tool_choice")
        call_tools: list[dict[str, Any]] = []
        if tools and choice == "REQUIRED":
            call_tools = tools
        elif tools and choice is None:
            call_tools = auto_tool_pick(req)
        calling = bool(call_tools)
        messages = prompting.to_chat_messages(req, include_tools=calling)
        if calling and len(call_tools) < len(tools):  # show only the tools on offer
            messages = prompting.to_chat_messages({**req, "tools": call_tools})
        self.tokens = ctx.tokenize(prompting.render_chatml(messages))
        n_in, n_ctx = len(self.tokens), ctx.n_ctx
        room = n_ctx - n_in
        if room < 1:
            raise ValidationError(
                "messages",
                f"{n_in} prompt tokens",
                f"at most {n_ctx - 1} prompt tokens (the engine's context window is "
                f"{n_ctx}); shorten the messages/documents",
            )
        if "max_tokens" in req:
            self.max_tokens = int(req["max_tokens"])
            if self.max_tokens > room:
                raise ValidationError(
                    "max_tokens",
                    self.max_tokens,
                    f"at most {room} for this prompt ({n_in} tokens; context window {n_ctx})",
                )
        else:
            self.max_tokens = min(DEFAULT_MAX_TOKENS, room)

        grammar = None
        rf = req.get("response_format") or {}
        if calling:
            grammar = tool_grammar(call_tools, bool(req.get("strict_tools")))
        elif rf.get("type") == "json_object":
            grammar = json_grammar(rf.get("json_schema"))
        seed = req.get("seed")
        try:
            self.sampler = ctx.sampler(
                temperature=float(req.get("temperature", DEFAULTS["temperature"])),
                top_k=int(req.get("k", DEFAULTS["k"])),
                top_p=float(req.get("p", DEFAULTS["p"])),
                seed=int(seed) % (2**32) if seed is not None else secrets.randbits(32),
                repeat_penalty=REPEAT_PENALTY,
                frequency_penalty=float(
                    req.get("frequency_penalty", DEFAULTS["frequency_penalty"])
                ),
                presence_penalty=float(req.get("presence_penalty", DEFAULTS["presence_penalty"])),
                grammar=grammar,
            )
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"could not build the sampler/grammar: {exc}") from exc

        mode = ((req.get("citation_options") or {}).get("mode") or "ACCURATE").upper()
        self.sources: list[dict[str, Any]] = []
        if mode not in ("OFF", "DISABLED") and not calling:
            self.sources = [dict(d) for d in normalize_documents(req.get("documents"))]
            self.sources += tool_sources(req.get("messages") or [])
        tracker = CitationTracker(self.sources) if self.sources and mode == "FAST" else None
        self.b = StreamBuilder()
        self.want_lp = bool(req.get("logprobs"))
        self.out_text = TextOut(
            self.b, list(req.get("stop_sequences") or []), self.want_lp, tracker
        )
        self.tracker = tracker
        self.out_call = CallOut(self.b) if calling else None
        # a text reply can never contain the call markup (see tools.MarkupGuard)
        self.guard = model.guard() if self.out_call is None else None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.n_out = 0
        self.slot = -1
        self.at = 0  # prompt tokens evaluated
        self.pos = 0  # position of `token` in the slot
        self.token: int | None = None  # sampled, to be evaluated next
        self.done = False
        self.ended = False

    def start(self) -> list[dict[str, Any]]:
        return [self.b.start()]

    def sample(self, index: int) -> list[dict[str, Any]]:
        """Sample the next token from the logits at batch `index`; its events."""
        ctx = self.model.ctx()
        lp = None
        logits = None
        if self.want_lp or self.guard is not None:
            logits = ctx.logits(index)
        if self.want_lp:
            import numpy as np

            top = float(logits.max())
            lse = top + math.log(float(np.exp(logits - top).sum()))
        if self.guard is not None:
            for ids in self.guard.bans(self.out_text.full):
                logits[ids] = -math.inf  # banned tokens are never sampled (nor their logprob)
        token = ctx.sample(self.sampler, index)
        if ctx.is_eog(token):
            calls = self.out_call is not None and self.out_call.calls
            return self.finish("TOOL_CALL" if calls else "COMPLETE")
        self.n_out += 1
        if self.want_lp:
            lp = float(logits[token]) - lse
        text = self.decoder.decode(ctx.piece(token))
        if self.out_call is not None:
            out = self.out_call.feed(text)
        else:
            out = self.out_text.feed(text, token, lp)
            if self.out_text.stopped:
                return out + self.finish("STOP_SEQUENCE")
        if self.n_out >= self.max_tokens:
            return out + self.finish("MAX_TOKENS")
        self.token = token
        return out

    def finish(self, finish: str) -> list[dict[str, Any]]:
        """The closing events (flushes held-back text, citations, usage); marks it done."""
        self.done = True
        self.token = None
        out: list[dict[str, Any]] = []
        if self.out_call is not None:
            out += self.out_call.feed(self.decoder.decode(b"", final=True))
            if finish == "COMPLETE":
                finish = "TOOL_CALL"
        else:
            if finish != "STOP_SEQUENCE":
                out += self.out_text.feed(self.decoder.decode(b"", final=True), None, None)
                out += self.out_text.flush()
            if self.tracker is not None:
                for c in self.tracker.finish():
                    out += self.b.citation(c)
            elif self.sources:
                text = self.out_text.full[: self.out_text.sent]
                for c in compute_citations(text, self.sources):
                    out += self.b.citation(c)
        out += self.b.end(finish, usage_dict(len(self.tokens), self.n_out))
        self.ended = True
        return out

    def error(self, exc: BaseException) -> list[dict[str, Any]]:
        """After message-start an error is a message-end ERROR."""
        self.done = self.ended = True
        return self.b.end(
            "ERROR", None, error=f"embedded engine failed: {exc}", error_type="ENGINE_ERROR"
        )

    def close(self) -> None:
        if self.sampler is not None:
            self.model.ctx().free_sampler(self.sampler)
            self.sampler = None
