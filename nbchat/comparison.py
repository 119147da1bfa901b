"""Compare: one prompt, several settings (models, backends), streamed at the same time.

`start_comparison(conv, user_content, variants, ...)` validates every variant's request first
(a bad one starts nothing and changes nothing), adds ONE turn to the conversation (the reply)
and runs one runner turn per variant, all at once, each on a scratch conversation holding the
same history (remote backends stream in parallel over their pooled connections; the embedded
engine receives concurrent requests). The reply mirrors the kept variant (the first unless
``keep`` says otherwise); the other variants are the reply's ``alternatives``;
``reply.comparison`` (a `Comparison`) holds them all, and `Comparison.keep(i)` switches the
reply (so ``conv.messages`` changes). The folded reply, comparison included, goes to the
history store once, when every variant is done (and again after a Keep).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from .compared import MAX_VARIANTS, Comparison, mirror, variant_label
from .compose import build_request
from .turn import Turn

__all__ = ["Comparison", "CompareHandle", "start_comparison", "MAX_VARIANTS", "variant_label"]


class _Mirror:
    """The reply's ``live`` while variants stream: the kept variant's partial text."""

    def __init__(self, comp: Comparison) -> None:
        self.comp = comp

    def _turn(self) -> Turn:
        return self.comp.turns[self.comp.kept]

    @property
    def text(self) -> str:
        return self._turn().text

    @property
    def message(self) -> dict[str, Any]:
        live = self._turn().live
        return live.message if live is not None else {"role": "assistant"}


class CompareHandle:
    """The running comparison: `wait()`, `cancel()` (every variant), `cancel_variant(i)`,
    `keep(i)`, `done`, ``turn`` (the reply) and ``comparison``. The conversation tracks it like
    a turn's handle (``conv.wait()``, ``conv.cancel()``, Kernel → Interrupt)."""

    def __init__(self, conv: Any, reply: Turn, comparison: Comparison) -> None:
        self.conversation = conv
        self.turn = reply
        self.comparison = comparison
        self.handles: list[Any] = [None] * len(comparison.turns)
        self._finished = threading.Event()  # set after the fold (a queued turn waits on it)
        self._started = threading.Event()
        self._cancelled: str | None = None
        self._left = len(comparison.turns)
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> Turn:
        try:
            self._finished.wait(timeout)
        except KeyboardInterrupt:
            self.cancel("interrupted")
            raise
        return self.turn

    def cancel(self, reason: str = "cancelled") -> Turn:
        self._cancelled = reason
        for h in list(self.handles):
            if h is not None:
                h.cancel(reason)
        return self.turn

    def cancel_variant(self, index: int, reason: str = "cancelled") -> Turn:
        self._started.wait(5)
        sub = self.handles[index]
        if sub is not None:
            sub.cancel(reason)
        return self.comparison.turns[index]

    def keep(self, index: int) -> Turn:
        return self.comparison.keep(index)

    def __repr__(self) -> str:
        return f"CompareHandle({self.comparison!r}, done={self.done})"


class _Column:
    """Listener of one variant: passes every hook on; the last variant done folds the reply."""

    def __init__(self, handle: CompareHandle, index: int, inner: Any, on_all: Any) -> None:
        self.handle, self.index, self.inner, self.on_all = handle, index, inner, on_all

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_done(self, turn: Turn) -> None:
        hook = getattr(self.inner, "on_done", None)
        if callable(hook):
            try:
                hook(turn)
            except Exception:
                pass
        h = self.handle
        with h._lock:
            h._left -= 1
            last = h._left == 0
        if last:
            _fold(h, self.on_all)


def _fold(h: CompareHandle, on_all: Callable[[CompareHandle], Any] | None) -> None:
    comp, reply, conv = h.comparison, h.turn, h.conversation
    with conv.lock:
        reply.live = None
        mirror(reply, comp.turns[comp.kept])
        reply.alternatives = [t for j, t in enumerate(comp.turns) if j != comp.kept]
    if on_all is not None:
        try:
            on_all(h)
        except Exception:
            pass
    h._finished.set()
    from .history.recorder import record_finished

    record_finished(conv, reply)


def start_comparison(
    conv: Any,
    user_content: Any,
    variants: list[tuple[dict[str, Any], dict[str, Any], Any]],
    *,
    cell: dict[str, Any] | None = None,
    listeners: list[Any] | None = None,
    tools: list[Any] | None = None,
    approve: Callable[[list[dict[str, Any]]], Any] | list[Any] | None = None,
    keep: int = 0,
    on_all_done: Callable[[CompareHandle], Any] | None = None,
) -> CompareHandle:
    """Run `variants` (``(varied, params, backend)`` each) on the same history at once.

    `approve`: one callable for every variant's tool calls, or one per variant. Every
    request is composed and validated first: a `ValidationError` (raised with
    ``.variant``, the 0-based index) leaves the conversation untouched. Returns at once;
    ``handle.wait()`` blocks until every variant is done and the reply is folded."""
    from . import runner
    from .history.recorder import skip_recording

    if not variants:
        from .errors import ValidationError

        raise ValidationError("compare", 0, f"1..{MAX_VARIANTS} variants")
    composed = []
    for i, (_varied, params, backend) in enumerate(variants):
        try:
            composed.append(
                build_request(conv, user_content, params, backend=backend, tools=tools, cell=cell)
            )
        except Exception as exc:
            exc.variant = i  # type: ignore[attr-defined]
            raise
    first = composed[0]
    turns = [
        Turn([first.user_message], params=c.params, status="running", cell=None, backend=None)
        for c in composed
    ]
    comp = Comparison([v for v, _, _ in variants], turns, keep)
    reply = Turn(
        [first.user_message],
        params=first.params,
        status="running",
        cell=cell,
        backend=getattr(variants[0][2], "name", None),
    )
    reply.comparison = comp
    comp.reply, comp.host = reply, conv
    reply.live = _Mirror(comp)
    h = CompareHandle(conv, reply, comp)
    prior: list[Any] = []

    def handle_after(running: list[Any]) -> CompareHandle:
        prior.extend(running)
        return h

    runner.install_turn(conv, reply, first, handle_after)
    inners = listeners or [None] * len(variants)

    def run() -> None:
        for p in prior:
            p.wait()
        history = conv.history(reply)
        for i, ((_v, _p, backend), c) in enumerate(zip(variants, composed, strict=True)):
            scratch = type(conv)(copy.deepcopy(history))
            skip_recording(scratch)
            column = _Column(h, i, inners[i], on_all_done)
            try:
                sub = runner.start_turn(
                    scratch,
                    backend,
                    copy.deepcopy(c.user_message),
                    c.params,
                    listener=column,
                    tools=tools,
                    approve=approve[i] if isinstance(approve, list) else approve,
                    background=True,
                )
            except Exception as exc:  # history changed since validation: this variant fails
                t = comp.turns[i]
                t.status, t.error, t.finish_reason = "error", str(exc), "ERROR"
                column.on_done(t)
                continue
            comp.turns[i] = sub.turn
            h.handles[i] = sub
            if h._cancelled:
                sub.cancel(h._cancelled)
        h._started.set()

    threading.Thread(target=run, name="nbchat-compare", daemon=True).start()
    return h
