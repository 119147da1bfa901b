"""`TurnHandle`: the worker of one turn (stream, tool rounds, cancel, finalisation).

`runner.start_turn` builds it; see the `runner` module docstring for the behaviour.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .backends.base import Backend, Cancel
from .compose import Composed, round_request
from .errors import APIError, Cancelled, NbChatError, redact
from .listener import Listener, TurnHost
from .protocol.messages import add_usage, output_tokens
from .toolround import DENIED, answer_calls
from .turn import Turn

__all__ = ["TurnHandle", "CANCEL_GRACE", "DENIED"]

log = logging.getLogger("nbchat")

CANCEL_GRACE = 0.05  # s the canceller waits for the worker before finalising the turn itself
_TOKEN_EVENTS = frozenset(
    ("content-delta", "tool-plan-delta", "tool-call-start", "tool-call-delta")
)


class _Abort(Exception):
    """The handle already finalised the turn (forced cancel): drop the worker's result."""


class TurnHandle:
    """A running (or finished) turn: `cancel()`, `wait()`, `done`, `turn`.

    The listener's hooks (see `Listener`) run in the worker thread; ``on_done(turn)`` runs
    exactly once at the end whatever happened — from the worker, or from the cancelling
    thread when the worker is stuck past `CANCEL_GRACE` (unless a hook is running then: it
    follows that hook, in its thread). No hook runs after ``on_done``.
    """

    def __init__(
        self,
        conversation: TurnHost,
        turn: Turn,
        backend: Backend,
        composed: Composed,
        *,
        listener: Listener | Any,
        approve: Callable[[list[dict[str, Any]]], Any] | None,
        max_tool_rounds: int,
        prior: list[TurnHandle],
        background: bool,
    ) -> None:
        self.conversation = conversation
        self.turn = turn
        self.backend = backend
        self.composed = composed
        self.request = composed.params  # validated, without messages
        self.functions = dict(composed.functions)
        self.listener = listener
        self.approve = approve
        self.max_tool_rounds = max_tool_rounds
        self.background = background
        self.cancel_signal = Cancel()
        self._prior = prior
        self._finished = threading.Event()
        self._finalized = False  # guarded by the conversation lock
        # Hook bookkeeping, guarded by _hooks_lock: a hook in progress, on_done owed/called.
        self._hooks_lock = threading.Lock()
        self._in_hook = 0
        self._done_owed = False
        self._done_called = False
        self._thread: threading.Thread | None = None
        self._worker_ident: int | None = None
        self._lock = conversation.lock
        # timing state
        self._t0 = 0.0
        self._round_first: float | None = None
        self._gen_time = 0.0
        self._token_events = 0

    # -- public --------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def cancel(self, reason: str = "cancelled") -> Turn:
        """Stop the turn. Returns once the turn is final (cancelled, partial kept): at most
        `CANCEL_GRACE` s plus bookkeeping, even when the backend is blocked."""
        if self.done:
            return self.turn
        self.cancel_signal.cancel(reason)
        if threading.get_ident() == self._worker_ident:
            return self.turn  # called from a hook in the worker: it finalises on its way out
        if not self._finished.wait(CANCEL_GRACE):
            self._finalize("cancelled", error=reason)
        return self.turn

    def wait(self, timeout: float | None = None) -> Turn:
        """Block until the turn is final (or `timeout` s passed) and return it. Errors are not
        raised here (see `Turn.raise_for_status`). KeyboardInterrupt cancels the turn."""
        if threading.get_ident() == self._worker_ident:
            return self.turn  # waiting on itself would deadlock
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # Short slices keep Ctrl-C responsive on every platform.
            while not self._finished.wait(
                0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            ):
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except KeyboardInterrupt:
            self.cancel("interrupted")
            raise
        return self.turn

    def __repr__(self) -> str:
        return f"TurnHandle(turn={self.turn.id!r}, status={self.turn.status!r})"

    # -- worker --------------------------------------------------------------------------------
    def _start(self) -> None:
        if self.background:
            self._thread = threading.Thread(
                target=self._run, name=f"nbchat-turn-{self.turn.id}", daemon=True
            )
            self._thread.start()
        else:
            self._run()

    def _call(self, hook: str, *args: Any) -> None:
        fn = getattr(self.listener, hook, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # a broken view must not break the turn
            log.exception("nbchat listener %s failed", hook)

    def _notify(self, hook: str, *args: Any) -> bool:
        """Run a hook other than on_done, unless on_done is owed or done (then: False).

        The turn may be finalised by another thread while the hook runs; that thread then
        leaves on_done to us, and we run it as soon as the hook returns."""
        with self._hooks_lock:
            if self._done_owed or self._done_called:
                return False
            self._in_hook += 1
        try:
            self._call(hook, *args)
        finally:
            with self._hooks_lock:
                self._in_hook -= 1
                fire = self._done_owed and not self._in_hook and not self._done_called
                if fire:
                    self._done_called = True
            if fire:
                self._fire_done()
        return True

    def _run(self) -> None:
        self._worker_ident = threading.get_ident()
        self._notify("on_start")
        raise_exc: BaseException | None = None
        try:
            self._wait_prior()
            status, finish, error, exc = self._loop()
            self._finalize(status, finish_reason=finish, error=error, exc=exc)
            if exc is not None and not self.background:
                raise_exc = exc
        except _Abort:
            pass
        except KeyboardInterrupt as exc:  # inline run interrupted: cancel, keep partial, re-raise
            self.cancel_signal.cancel("interrupted")
            self._finalize("cancelled", error="interrupted")
            raise_exc = exc
        except BaseException as exc:
            if self.cancel_signal.is_set():
                # Errors caused by the cancel itself (socket shut down) are just the stop.
                self._finalize("cancelled", error=self.cancel_signal.reason or "cancelled")
            else:
                self._finalize("error", error=_describe(exc), exc=exc)
                if not self.background:
                    raise_exc = exc
        finally:
            self._worker_ident = None  # later cancel()/wait() calls come from other code
            self._call_done()
        if raise_exc is not None:
            raise raise_exc

    def _wait_prior(self) -> None:
        """Turns started earlier on this conversation finish first (their answer is history)."""
        for h in self._prior:
            while not h._finished.wait(0.05):
                if self.cancel_signal.is_set():
                    raise Cancelled(self.cancel_signal.reason)

    def _loop(self) -> tuple[str, str | None, str | None, BaseException | None]:
        self._t0 = time.perf_counter()
        with self._lock:
            self.turn.timings["started_at"] = time.time()
        rounds = 0
        while True:
            with self._lock:
                if self._finalized:
                    raise _Abort
                history = self.conversation.history(self.turn)
                tail = copy.deepcopy(self.turn.input + self.turn.output)
            if history and (rounds or self._prior):  # fit like the first round did
                from .context import fit_history

                history, _ = fit_history(
                    history, tail, self.request, backend=self.backend, **self.composed.fit
                )
            messages = history + tail
            if rounds == 0 and not self._prior:
                request = copy.deepcopy(self.composed.request)  # exactly what compose built
            else:  # our own tool messages, or a history that grew while this turn queued
                request = round_request(self.request, messages)
                if rounds > 0 and request.get("tool_choice") == "REQUIRED":
                    # REQUIRED forces the first step to call a tool; forcing every round would
                    # keep the model calling tools until max_tool_rounds
                    del request["tool_choice"]
            acc = self._stream(request)
            if self.cancel_signal.is_set():
                return "cancelled", None, self.cancel_signal.reason or "cancelled", None
            if not acc.ended:
                from .errors import ConnectionError

                raise ConnectionError("the stream ended before message-end")
            message = acc.message
            with self._lock:
                if self._finalized:
                    raise _Abort
                t = self.turn
                t.live = None
                t.output.append(message)
                if acc.id:
                    t.response_ids.append(acc.id)
                t.finish_reason = acc.finish_reason
                t.usage = add_usage(t.usage, acc.usage)
                t.logprobs.extend(copy.deepcopy(acc.logprobs))
                t.citations.extend(copy.deepcopy(acc.citations))
            if acc.finish_reason == "ERROR":
                err = acc.error or "the model stopped with finish_reason ERROR"
                if acc.error_type:
                    err = f"{acc.error_type}: {err}"
                return "error", "ERROR", redact(err), APIError(err)
            calls = message.get("tool_calls") or []
            if acc.finish_reason != "TOOL_CALL" or not calls or not self.functions:
                # No Python tools to run: tool calls (if any) are left for the caller to answer.
                return "complete", acc.finish_reason, None, None
            if rounds >= self.max_tool_rounds:
                msg = f"the model still calls tools after max_tool_rounds={self.max_tool_rounds} rounds"
                return "error", acc.finish_reason, msg, NbChatError(msg)
            rounds += 1
            self._run_tools(calls)
            if self.cancel_signal.is_set():
                return "cancelled", None, self.cancel_signal.reason or "cancelled", None

    def _stream(self, request: dict[str, Any]) -> Any:
        from .protocol.accumulator import Accumulator

        acc = Accumulator()
        with self._lock:
            if self._finalized:
                raise _Abort
            self.turn.live = acc
        self._round_first = None
        round_start = time.perf_counter()
        events = self.backend.stream(request, self.cancel_signal)
        try:
            for event in events:
                now = time.perf_counter()
                with self._lock:
                    if self._finalized:
                        raise _Abort
                    acc.feed(event)
                if event.get("type") in _TOKEN_EVENTS:
                    self._token_events += 1
                    if self._round_first is None:
                        self._round_first = now
                        with self._lock:
                            self.turn.timings.setdefault("ttft", now - self._t0)
                if not self._notify("on_event", event):  # finalised meanwhile: stop here
                    raise _Abort
                if self.cancel_signal.is_set():
                    break
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                try:
                    close()  # let the backend release its connection / generator
                except Exception:
                    pass
            end = time.perf_counter()
            self._gen_time += end - (
                self._round_first if self._round_first is not None else round_start
            )
        return acc

    def _run_tools(self, calls: list[dict[str, Any]]) -> None:
        """Answer every call (see `toolround.answer_calls`: invalid ones get the error, valid
        ones run if approved), stopping between calls on cancel. Listeners get each call with
        its ``outcome``: "invalid", "denied", "error" or "ran"."""
        self._notify("on_tool_calls", copy.deepcopy(calls))
        stopped = self.cancel_signal.is_set
        for call, outcome, result in answer_calls(calls, self.functions, self.approve, stopped):
            with self._lock:
                if self._finalized:
                    raise _Abort
                self.turn.output.append(result)
                call_copy, result_copy = copy.deepcopy(call), copy.deepcopy(result)
            call_copy["outcome"] = outcome
            self._notify("on_tool_result", call_copy, result_copy)

    # -- finishing -----------------------------------------------------------------------------
    def _finalize(
        self,
        status: str,
        *,
        finish_reason: str | None = None,
        error: str | None = None,
        exc: BaseException | None = None,
    ) -> bool:
        """Make the turn final once (worker or canceller, whoever comes first)."""
        with self._lock:
            if self._finalized:
                return False
            self._finalized = True
            t = self.turn
            live = t.live
            t.live = None
            if live is not None:
                try:  # whatever a broken stream left behind, the turn must still end
                    partial = live.message
                    if len(partial) > 1:  # anything beyond the role: keep the partial reply
                        t.output.append(partial)
                    if live.id and live.id not in t.response_ids:
                        t.response_ids.append(live.id)
                    t.logprobs.extend(copy.deepcopy(live.logprobs))
                    t.citations.extend(copy.deepcopy(live.citations))
                    t.usage = add_usage(t.usage, live.usage)
                except Exception as salvage_error:
                    status, error = "error", error or f"unreadable partial reply: {salvage_error}"
            if status == "error" and finish_reason is None:
                finish_reason = "ERROR"
            if status != "cancelled" or finish_reason is not None:
                t.finish_reason = finish_reason
            elif status == "cancelled":
                t.finish_reason = None
            t.status = status
            t.error = redact(error) if error else None
            t.exception = exc
            self._record_timings()
        self._finished.set()
        self._call_done()  # here, not later: a forced finalisation's worker may never return
        return True

    def _record_timings(self) -> None:
        t = self.turn
        now = time.perf_counter()
        if not self._t0:
            self._t0 = now
        total = now - self._t0
        t.timings["total"] = total
        out = output_tokens(t.usage)
        if out is None:
            out = self._token_events or None
        gen = self._gen_time
        if self._round_first is not None and gen == 0.0:
            gen = now - self._round_first
        if out and gen > 0:
            t.timings["tokens_per_second"] = out / gen

    def _call_done(self) -> None:
        with self._lock:
            if not self._finalized:
                return
        with self._hooks_lock:
            if self._done_called:
                return
            self._done_owed = True
            if self._in_hook:
                return  # the running hook's thread calls on_done when it returns
            self._done_called = True
        self._fire_done()

    def _fire_done(self) -> None:
        """on_done, then the turn goes to the history store (after the views' last update)."""
        self._call("on_done", self.turn)
        from .history.recorder import record_finished

        record_finished(self.conversation, self.turn)


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")
