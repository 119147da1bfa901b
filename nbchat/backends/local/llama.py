"""The embedded model: llama.cpp loaded once (lazily, from whichever thread needs it first) as a
`batch.BatchContext` with `slots` sequences, plus the markup guard built from its vocabulary."""

from __future__ import annotations

import logging
import threading

from .batch import BatchContext
from .sequence import DEFAULT_MAX_TOKENS, REPEAT_PENALTY
from .tools import MarkupGuard

__all__ = ["LlamaModel", "DEFAULT_MAX_TOKENS", "REPEAT_PENALTY"]


class LlamaModel:
    """One model file; `ctx()` is used by the scheduler thread only (tokenize by anyone)."""

    def __init__(self, path: str, n_ctx: int, n_threads: int, slots: int) -> None:
        self.path, self.n_ctx, self.n_threads, self.slots = path, n_ctx, n_threads, slots
        self._ctx: BatchContext | None = None
        self._guard: MarkupGuard | None = None
        self._log_level: int | None = None
        self._load_lock = threading.Lock()

    def ctx(self) -> BatchContext:
        with self._load_lock:
            if self._ctx is None:
                self._ctx = BatchContext(self.path, self.n_ctx, self.n_threads, self.slots)
            return self._ctx

    def tokenize(self, text: str) -> list[int]:
        return self.ctx().tokenize(text)

    def guard(self) -> MarkupGuard:
        """The markup guard for this model's vocabulary (built once: ~0.1 s)."""
        if self._guard is None:
            ctx = self.ctx()
            pieces = [ctx.piece(i).decode("utf-8", "ignore") for i in range(ctx.n_vocab)]
            self._guard = MarkupGuard(pieces)
        return self._guard

    # -- abort (called under the scheduler's lock) -----------------------------------------------
    def abort(self) -> None:
        """Interrupt a running prompt-chunk evaluation."""
        if self._log_level is None:
            # llama.cpp logs an aborted decode as an error on stderr: expected here, so muted
            log = logging.getLogger("llama-cpp-python")
            self._log_level = log.level
            log.setLevel(logging.CRITICAL)
        if self._ctx is not None:
            self._ctx.abort_flag[0] = b"x"

    def clear_abort(self) -> None:
        if self._ctx is not None:
            self._ctx.abort_flag[0] = b"\0"
        if self._log_level is not None:
            logging.getLogger("llama-cpp-python").setLevel(self._log_level)
            self._log_level = None
