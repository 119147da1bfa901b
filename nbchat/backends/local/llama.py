"""llama.cpp calls for the embedded engine: load the model, build the prompt and the sampler,
and run one request as v2 stream events (see `local` for the parameter mapping)."""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import secrets
import threading
from collections.abc import Iterator
from typing import Any

from ...errors import EngineError, ValidationError
from ...protocol.events import StreamBuilder, usage_dict
from ...protocol.request import DEFAULTS, normalize_documents
from .. import prompting
from ..grounding import CitationTracker, compute_citations, tool_sources
from .parsers import CallOut, TextOut
from .tools import MarkupGuard, auto_tool_pick, json_grammar, tool_grammar

DEFAULT_MAX_TOKENS = 512
REPEAT_PENALTY = 1.1


class LlamaModel:
    """One ``llama_cpp.Llama``, loaded on first use; `run` is called by one thread at a time."""

    def __init__(self, path: str, n_ctx: int, n_threads: int) -> None:
        self.path, self.n_ctx, self.n_threads = path, n_ctx, n_threads
        self._llm: Any = None
        self._guard: MarkupGuard | None = None
        self._abort_flag = ctypes.create_string_buffer(2)  # byte 0 != 0 -> llama_decode aborts
        self._abort_cb: Any = None
        self._log_level: int | None = None
        self._load_lock = threading.Lock()

    # -- abort (called by the scheduler, under its lock) ---------------------------------------
    def abort(self) -> None:
        """Interrupt a running llama_decode (prompt evaluation)."""
        if self._log_level is None:
            # llama.cpp logs an aborted decode as an error on stderr: expected here, so muted
            log = logging.getLogger("llama-cpp-python")
            self._log_level = log.level
            log.setLevel(logging.CRITICAL)
        self._abort_flag[0] = b"x"

    def clear_abort(self) -> None:
        self._abort_flag[0] = b"\0"
        if self._log_level is not None:
            logging.getLogger("llama-cpp-python").setLevel(self._log_level)
            self._log_level = None

    # -- model -----------------------------------------------------------------------------------
    def llm(self) -> Any:
        with self._load_lock:  # loaded once, from whichever thread needs it first
            if self._llm is None:
                self._llm = self._load()
            return self._llm

    def _load(self) -> Any:
        try:
            import llama_cpp
            from llama_cpp import llama_cpp as lib
        except ImportError as exc:
            raise EngineError(
                "llama-cpp-python is not installed: see the README (nbchat[local])"
            ) from exc
        try:
            llm = llama_cpp.Llama(
                model_path=self.path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                flash_attn=True,
                verbose=False,
            )
        except Exception as exc:
            raise EngineError(f"could not load {self.path}: {exc}") from exc
        # Abort callback without Python: libc's strlen(buf) is 0 until byte 0 is set. A
        # Python callback would take the GIL on every graph node of every decode.
        libc = ctypes.CDLL(None)
        addr = ctypes.cast(libc.strlen, ctypes.c_void_p).value
        self._abort_cb = lib.ggml_abort_callback(addr)
        fn = lib._lib.llama_set_abort_callback
        fn.argtypes = [ctypes.c_void_p, lib.ggml_abort_callback, ctypes.c_void_p]
        fn.restype = None
        fn(llm._ctx.ctx, self._abort_cb, ctypes.cast(self._abort_flag, ctypes.c_void_p))
        return llm

    def tokenize(self, text: str) -> list[int]:
        return self.llm().tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _prefill(self, llm, tokens: list[int], reuse: bool = True) -> None:
        """Evaluate the prompt, reusing the KV cache for a shared prefix (multi-turn chats).

        `reuse=False` (seeded and greedy requests) evaluates the whole prompt from an empty
        cache: llama.cpp's logits depend slightly on how the prompt was split between
        evaluations, enough to change a sampled token, so a reused prefix would make the
        reply depend on what ran before."""
        cached = llm.n_tokens if reuse else 0
        keep = 0
        ids = llm.input_ids
        while keep < cached and keep < len(tokens) - 1 and ids[keep] == tokens[keep]:
            keep += 1
        llm.n_tokens = keep  # eval() drops the KV cells past n_tokens first
        llm.eval(tokens[keep:])

    def guard(self) -> MarkupGuard:
        """The markup guard for this model's vocabulary (built once: ~0.1 s)."""
        if self._guard is None:
            llm = self.llm()
            pieces = [llm.detokenize([i]).decode("utf-8", "ignore") for i in range(llm.n_vocab())]
            self._guard = MarkupGuard(pieces)
        return self._guard

    # -- one request ------------------------------------------------------------------------------
    def run(
        self, req: dict[str, Any], stop: threading.Event, timed_out: threading.Event
    ) -> Iterator[dict[str, Any]]:
        llm = self.llm()
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
        prompt = prompting.render_chatml(messages)
        tokens = self.tokenize(prompt)
        n_in = len(tokens)
        room = self.n_ctx - n_in
        if room < 1:
            raise ValidationError(
                "messages",
                f"{n_in} prompt tokens",
                f"at most {self.n_ctx - 1} prompt tokens (the engine's context window is "
                f"{self.n_ctx}); shorten the messages/documents",
            )
        if "max_tokens" in req:
            max_tokens = int(req["max_tokens"])
            if max_tokens > room:
                raise ValidationError(
                    "max_tokens",
                    max_tokens,
                    f"at most {room} for this prompt ({n_in} tokens; context window {self.n_ctx})",
                )
        else:
            max_tokens = min(DEFAULT_MAX_TOKENS, room)

        grammar = None
        rf = req.get("response_format") or {}
        if calling:
            grammar = tool_grammar(call_tools, bool(req.get("strict_tools")))
        elif rf.get("type") == "json_object":
            grammar = json_grammar(rf.get("json_schema"))
        if grammar is not None:
            from llama_cpp import LlamaGrammar

            grammar = LlamaGrammar.from_string(grammar, verbose=False)

        temperature = float(req.get("temperature", DEFAULTS["temperature"]))
        seed = req.get("seed")
        llm.set_seed(int(seed) % (2**32) if seed is not None else secrets.randbits(32))
        try:
            sampler = llm._init_sampler(
                top_k=int(req.get("k", DEFAULTS["k"])),
                top_p=float(req.get("p", DEFAULTS["p"])),
                min_p=0.0,
                typical_p=1.0,
                temp=temperature,
                repeat_penalty=REPEAT_PENALTY,
                frequency_penalty=float(
                    req.get("frequency_penalty", DEFAULTS["frequency_penalty"])
                ),
                presence_penalty=float(req.get("presence_penalty", DEFAULTS["presence_penalty"])),
                grammar=grammar,
            )
        except Exception as exc:
            raise EngineError(f"could not build the sampler/grammar: {exc}") from exc

        mode = ((req.get("citation_options") or {}).get("mode") or "ACCURATE").upper()
        sources = []
        if mode not in ("OFF", "DISABLED") and not calling:
            sources = [dict(d) for d in normalize_documents(req.get("documents"))]
            sources += tool_sources(req.get("messages") or [])
        tracker = CitationTracker(sources) if sources and mode == "FAST" else None

        b = StreamBuilder()
        yield b.start()
        try:
            yield from self._generate(
                stop, timed_out, llm, b, req, tokens, max_tokens, sampler, calling, sources, tracker
            )
        except Exception as exc:  # after message-start an error is a message-end ERROR
            yield from b.end(
                "ERROR", None, error=f"embedded engine failed: {exc}", error_type="ENGINE_ERROR"
            )

    def _generate(
        self, stop, timed_out, llm, b, req, tokens, max_tokens, sampler, calling, sources, tracker
    ):
        from llama_cpp import llama_cpp as lib

        want_lp = bool(req.get("logprobs"))
        n_in = len(tokens)
        out_text = TextOut(b, list(req.get("stop_sequences") or []), want_lp, tracker)
        out_call = CallOut(b) if calling else None
        # a text reply can never contain the call markup (see tools.MarkupGuard)
        guard = self.guard() if out_call is None else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        n_vocab = llm.n_vocab()
        n_out = 0
        finish = "MAX_TOKENS"

        try:
            reproducible = (
                req.get("seed") is not None
                or float(req.get("temperature", DEFAULTS["temperature"])) == 0
            )
            self._prefill(llm, tokens, reuse=not reproducible)
        except RuntimeError:
            if not (stop.is_set() or timed_out.is_set()):
                raise
        while True:
            if stop.is_set():
                return  # the consumer is gone: no more events
            if timed_out.is_set():
                finish = "TIMEOUT"
                break
            if n_out >= max_tokens:
                break
            lp = None
            if want_lp:
                import numpy as np

                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
                top = float(logits.max())
                lse = top + math.log(float(np.exp(logits - top).sum()))
            bans = guard.bans(out_text.full) if guard is not None else ()
            if bans:
                import numpy as np

                view = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
                for ids in bans:
                    view[ids] = -np.inf
            token = sampler.sample(llm._ctx, -1)
            if lib.llama_vocab_is_eog(vocab, token):
                finish = "TOOL_CALL" if out_call is not None and out_call.calls else "COMPLETE"
                break
            n_out += 1
            if want_lp:
                lp = float(logits[token]) - lse
            text = decoder.decode(llm.detokenize([token]))
            if out_call is not None:
                yield from out_call.feed(text)
            else:
                yield from out_text.feed(text, token, lp)
                if out_text.stopped:
                    finish = "STOP_SEQUENCE"
                    break
            if n_out >= max_tokens:
                break  # no need to evaluate a token nobody will sample from
            try:
                llm.eval([token])
            except RuntimeError:
                if not (stop.is_set() or timed_out.is_set()):
                    raise

        if out_call is not None:
            yield from out_call.feed(decoder.decode(b"", final=True))
            if finish == "COMPLETE":
                finish = "TOOL_CALL"
        else:
            if finish != "STOP_SEQUENCE":
                yield from out_text.feed(decoder.decode(b"", final=True), None, None)
                yield from out_text.flush()
            if tracker is not None:
                for c in tracker.finish():
                    yield from b.citation(c)
            elif sources:
                for c in compute_citations(out_text.full[: out_text.sent], sources):
                    yield from b.citation(c)
        yield from b.end(finish, usage_dict(n_in, n_out))
