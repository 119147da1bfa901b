"""llama.cpp's batch API for the embedded engine: one model, one context with `slots` sequences.

Every slot is its own KV stream (``kv_unified=False``) of `n_ctx` cells, so a sequence's cells are
laid out the same way whatever the other slots hold. A prompt is evaluated alone, in chunks that
start at multiples of `CHUNK` (`prefill`); a slot keeps the chunks of its last prompt and reuses
the longest chunk-aligned prefix a new prompt shares with them. The logits of a token therefore
depend only on its history, not on what ran before or beside it (measured: bit-identical logits
for a sequence decoded alone or with others, and for a prompt whose prefix was reused at a chunk
boundary; a prefix reused at another boundary changes them by up to ~0.7). `step` then decodes
one token for each of several slots in ONE ``llama_decode``.

Only the public low-level bindings of llama-cpp-python (``llama_cpp.llama_*``) are used.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from ...errors import EngineError

CHUNK = 64  # prompt evaluation unit (and prefix-reuse granularity)


class BatchContext:
    """The model + a context with `slots` sequences of `n_ctx` tokens each; one thread uses it."""

    def __init__(self, path: str, n_ctx: int, n_threads: int, slots: int) -> None:
        try:
            import llama_cpp as L
        except ImportError as exc:
            raise EngineError(
                "llama-cpp-python is not installed: see the README (nbchat[local])"
            ) from exc
        self.L = L
        self.n_ctx, self.slots = n_ctx, slots
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # no load chatter
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        if not self.model:
            raise EngineError(f"could not load {path}")
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx * slots
        params.n_batch = params.n_ubatch = max(CHUNK, slots)
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = n_threads
        params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.kv_unified = False
        params.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise EngineError(f"could not create a llama.cpp context for {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(max(CHUNK, slots), 0, 1)
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # canonical chunks per slot
        # Abort without Python: libc's strlen(flag) is 0 until byte 0 is set. A Python callback
        # would take the GIL on every graph node of every decode.
        self.abort_flag = ctypes.create_string_buffer(2)
        libc = ctypes.CDLL(None)
        self._abort_cb = L.ggml_abort_callback(ctypes.cast(libc.strlen, ctypes.c_void_p).value)
        L.llama_set_abort_callback(
            self.ctx, self._abort_cb, ctypes.cast(self.abort_flag, ctypes.c_void_p)
        )
        self._piece = ctypes.create_string_buffer(256)
        self._copy_pending = False
        self.copies = 0  # prompt prefixes copied from another slot (tests, benches)

    # -- text --------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (self.L.llama_token * (len(raw) + 16))()
        n = self.L.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), True, True)
        if n < 0:
            raise EngineError(f"could not tokenize the prompt ({-n} tokens)")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        n = self.L.llama_token_to_piece(self.vocab, token, self._piece, 256, 0, False)
        return self._piece.raw[: max(n, 0)]

    def is_eog(self, token: int) -> bool:
        return bool(self.L.llama_vocab_is_eog(self.vocab, token))

    # -- decoding ----------------------------------------------------------------------------
    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """Evaluate (token, position, slot, want_logits) items in one llama_decode."""
        b = self.batch
        b.n_tokens = len(items)
        for i, (tok, pos, slot, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = slot
        rc = self.L.llama_decode(self.ctx, b)
        self._copy_pending = False
        if rc == 2:
            raise InterruptedError("llama_decode aborted")
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc})")

    def reusable(self, slot: int, tokens: list[int]) -> int:
        """How many leading `tokens` `slot` already holds, at a chunk boundary (< len(tokens))."""
        have, n = self.cached[slot], 0
        limit = min(len(have), len(tokens) - 1)
        while n < limit and have[n] == tokens[n]:
            n += 1
        return n - n % CHUNK

    def start(self, slot: int, tokens: list[int]) -> int:
        """Forget what `slot` holds past its reusable prefix; returns where prefill starts.

        When another slot holds a longer chunk-aligned prefix of `tokens` (variants of one
        prompt, a conversation continued from another cell), its KV stream is copied into
        `slot` instead of evaluating the prefix again (llama.cpp copies a whole stream, the
        cells past the prefix are then dropped): the same cells, so the same logits."""
        keep = self.reusable(slot, tokens)
        src, best = -1, keep
        for other in range(self.slots if not self._copy_pending else 0):
            n = self.reusable(other, tokens) if other != slot else 0
            if n > best:
                src, best = other, n
        if src >= 0:
            self.L.llama_memory_seq_rm(self.mem, slot, -1, -1)
            self.L.llama_memory_seq_cp(self.mem, src, slot, -1, -1)
            self.cached[slot] = self.cached[src][:best]
            self._copy_pending = True  # llama.cpp copies at the next decode: one at a time
            self.copies += 1
            keep = best
        self.cached[slot] = self.cached[slot][:keep]
        self.L.llama_memory_seq_rm(self.mem, slot, keep, -1)
        return keep

    def prefill_chunk(self, slot: int, tokens: list[int], at: int) -> int:
        """Evaluate the chunk of `tokens` starting at `at` (a CHUNK multiple); returns the next
        start. The last chunk leaves the logits of the last prompt token at index -1."""
        end = min(len(tokens), at - at % CHUNK + CHUNK)
        last = end == len(tokens)
        try:
            self._decode([(tokens[i], i, slot, last and i == end - 1) for i in range(at, end)])
        except BaseException:
            self.L.llama_memory_seq_rm(self.mem, slot, at, -1)
            raise
        if end - at == CHUNK:
            self.cached[slot] = tokens[:end]
        return end

    def step(self, items: list[tuple[int, int, int]]) -> None:
        """Evaluate one (token, position, slot) per sequence, all in one batch; the logits of
        item i are at index i."""
        self._decode([(tok, pos, slot, True) for tok, pos, slot in items])

    def logits(self, index: int) -> Any:
        import numpy as np

        ptr = self.L.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def release(self, slot: int) -> None:
        """Drop a finished sequence's generated cells (its prompt chunks stay for reuse)."""
        self.L.llama_memory_seq_rm(self.mem, slot, len(self.cached[slot]), -1)

    # -- sampling ----------------------------------------------------------------------------
    def sampler(
        self,
        *,
        temperature: float,
        top_k: int,
        top_p: float,
        seed: int,
        repeat_penalty: float,
        frequency_penalty: float,
        presence_penalty: float,
        grammar: str | None,
    ) -> Any:
        """A sampler chain (penalties over the last 64 tokens, grammar, top-k, top-p, temperature,
        seeded draw; greedy at temperature 0). Free it with `free_sampler`."""
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        add = L.llama_sampler_chain_add
        add(
            chain,
            L.llama_sampler_init_penalties(
                self.n_vocab, 64, repeat_penalty, frequency_penalty, presence_penalty
            ),
        )
        if grammar is not None:
            g = L.llama_sampler_init_grammar(self.vocab, grammar.encode("utf-8"), b"root")
            if not g:
                L.llama_sampler_free(chain)
                raise EngineError("could not build the grammar sampler")
            add(chain, g)
        if temperature == 0:
            add(chain, L.llama_sampler_init_greedy())
        else:
            add(chain, L.llama_sampler_init_top_k(top_k))
            add(chain, L.llama_sampler_init_typical(1.0, 1))
            add(chain, L.llama_sampler_init_top_p(top_p, 1))
            add(chain, L.llama_sampler_init_min_p(0.0, 1))
            add(chain, L.llama_sampler_init_temp(temperature))
            add(chain, L.llama_sampler_init_dist(seed))
        return chain

    def sample(self, chain: Any, index: int) -> int:
        return int(self.L.llama_sampler_sample(chain, self.ctx, index))

    def free_sampler(self, chain: Any) -> None:
        self.L.llama_sampler_free(chain)
