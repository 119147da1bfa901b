"""Run one turn of a Conversation: build and validate the request, stream it, run tools.

`start_turn(...)` validates the request synchronously (a `ValidationError` leaves the
conversation untouched and starts no thread), adds a running `Turn`, then streams
``backend.stream(request, cancel)`` in a daemon worker thread (``background=True``) or in
the calling thread (``background=False``: a failed turn raises to the caller after it has
been recorded, so a headless run fails). Events go into an `Accumulator` and to the
listener; timings (time to first token, total, tokens/s) are measured on the way.

Tool loop: when a reply ends with ``TOOL_CALL`` and Python functions were given, the runner
asks ``approve(calls)`` (None = auto-approve; it may block on an Approve/Deny click), runs the
approved calls with `tools.run_tool_call` in the worker thread, appends the assistant and tool
messages to the turn and sends the next request, until the model answers or
``max_tool_rounds`` tool rounds have run (then the turn ends as an error). Denied calls are
answered with a tool message saying the user denied them, and the loop continues so the
model can answer without them.

Stop: `TurnHandle.cancel()` sets the backend's `Cancel` (the HTTP backend shuts its socket).
If the worker has not finished within `CANCEL_GRACE` seconds (a backend blocked in a call
that ignores the signal), the handle finalises the turn itself — cancelled, partial text
kept — and the worker's late result is discarded. Either way the turn is final well within
200 ms. Ctrl-C during `wait()` (or during an inline run) cancels the turn.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .backends.base import Backend, Cancel
from .compose import Composed, HistorySource, build_request, round_request
from .errors import APIError, Cancelled, NbChatError, redact
from .protocol.messages import add_usage
from .turn import Turn, cell_key

__all__ = [
    "start_turn",
    "TurnHandle",
    "Listener",
    "TurnHost",
    "CANCEL_GRACE",
    "DEFAULT_MAX_TOOL_ROUNDS",
    "DENIED",
]

log = logging.getLogger("nbchat")

CANCEL_GRACE = 0.05  # s the canceller waits for the worker before finalising the turn itself
DEFAULT_MAX_TOOL_ROUNDS = 5
DENIED = "The user denied this tool call; it was not run."
_TOKEN_EVENTS = frozenset(
    ("content-delta", "tool-plan-delta", "tool-call-start", "tool-call-delta")
)


class Listener(Protocol):
    """What a turn tells its listener, in the worker thread. Every hook is optional (a
    listener may define only some; they are looked up by name).

    Order: ``on_start()`` first; then ``on_event(event)`` per stream event,
    ``on_tool_calls(calls)`` and ``on_tool_result(call, message)`` as they happen; and
    ``on_done(turn)`` exactly once, last: no hook runs after it, even when a cancel finalises
    the turn while a hook is still running (on_done then waits for that hook to return and
    runs in its thread). A listener exception is logged, never fatal to the turn.
    """

    def on_start(self) -> None: ...

    def on_event(self, event: dict[str, Any]) -> None: ...

    def on_tool_calls(self, calls: list[dict[str, Any]]) -> None: ...

    def on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None: ...

    def on_done(self, turn: Turn) -> None: ...


class TurnHost(HistorySource, Protocol):
    """What the runner needs from a conversation (`nbchat.Conversation` provides it)."""

    @property
    def system(self) -> Any: ...

    @system.setter
    def system(self, value: Any) -> None: ...

    def add_turn(self, turn: Turn) -> Turn: ...

    def replace_turn(self, cell_key: Any, turn: Turn | None = None) -> int | None: ...

    def register(self, handle: TurnHandle) -> None: ...

    def running_handles(self) -> list[TurnHandle]: ...


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
        listener: Any,
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
                self._call("on_done", self.turn)
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
                messages = self.conversation.history(self.turn) + copy.deepcopy(
                    self.turn.input + self.turn.output
                )
            if rounds == 0 and not self._prior:
                request = copy.deepcopy(self.composed.request)  # exactly what compose built
            else:  # our own tool messages, or a history that grew while this turn queued
                request = round_request(self.request, messages)
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
        from .tools import run_tool_call

        self._notify("on_tool_calls", copy.deepcopy(calls))
        decision: Any = True
        if self.approve is not None:
            decision = self.approve(copy.deepcopy(calls))  # may block on an Approve/Deny click
        if isinstance(decision, (list, tuple)):
            allowed = [bool(d) for d in decision] + [False] * (len(calls) - len(decision))
        else:
            allowed = [bool(decision)] * len(calls)
        for call, ok in zip(calls, allowed, strict=False):
            if self.cancel_signal.is_set():
                return
            if ok:
                result = run_tool_call(call, self.functions)
            else:
                result = {
                    "role": "tool",
                    "tool_call_id": call.get("id") or "",
                    "content": [{"type": "document", "document": {"data": {"error": DENIED}}}],
                }
            with self._lock:
                if self._finalized:
                    raise _Abort
                self.turn.output.append(result)
                call_copy, result_copy = copy.deepcopy(call), copy.deepcopy(result)
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
        out = _output_tokens(t.usage)
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
        self._call("on_done", self.turn)


def _output_tokens(usage: dict[str, Any] | None) -> float | None:
    """Generated tokens: usage.tokens.output_tokens, else billed_units.output_tokens."""
    if not usage:
        return None
    for part in ("tokens", "billed_units"):
        v = (usage.get(part) or {}).get("output_tokens")
        if isinstance(v, (int, float)):
            return v
    return None


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


def start_turn(
    conversation: TurnHost,
    backend: Backend,
    user_content: Any,
    params: dict[str, Any],
    *,
    cell: dict[str, Any] | None = None,
    listener: Listener | Any = None,
    tools: list[Callable[..., Any]] | None = None,
    approve: Callable[[list[dict[str, Any]]], Any] | None = None,
    background: bool = True,
    max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
) -> TurnHandle:
    """Start one turn: `user_content` (text, content blocks or a user message) with `params`.

    `params` are v2 request fields except ``messages`` (``model`` defaults to the backend's
    default model; ``system`` sets the conversation's system prompt; ``tools`` may hold v2
    tool dicts or Python functions). `tools` are Python functions exposed to the model via
    `tools.function_to_tool` and run in the worker when called (after ``approve(calls)``;
    ``approve`` may return a bool for all calls or one bool per call; None auto-approves).

    The request (history + new user message + params) is validated here, synchronously: a
    `ValidationError` propagates and the conversation is unchanged. `cell`
    (``{"execution_count", "cell_id"}``): when a turn of the same ``cell_id`` exists, the new
    turn replaces it in place (a running one is cancelled first) and its request uses only the
    history before it. Turns started while another runs on the same conversation wait for it.

    ``background=True`` streams in a daemon thread and returns at once; ``background=False``
    runs here and raises the turn's error (after recording it); a cancelled inline turn returns
    normally, except for KeyboardInterrupt, which is re-raised after the turn is cancelled.
    """
    composed = build_request(
        conversation, user_content, params, backend=backend, tools=tools, cell=cell
    )
    turn = Turn(
        [composed.user_message],
        params=composed.params,
        status="running",
        cell=cell,
        backend=getattr(backend, "name", None),
    )
    # A re-run of a cell that is still streaming stops the old turn first.
    key = cell_key(cell)
    if key is not None:
        for h in conversation.running_handles():
            if h.turn.cell_key == key:
                h.cancel("replaced by a re-run of the cell")
    with conversation.lock:
        if composed.sets_system:
            conversation.system = composed.system
        prior = conversation.running_handles()
        if key is not None and conversation.find_cell_turn(key) is not None:
            conversation.replace_turn(key, turn)
        else:
            conversation.add_turn(turn)
        handle = TurnHandle(
            conversation,
            turn,
            backend,
            composed,
            listener=listener,
            approve=approve,
            max_tool_rounds=max_tool_rounds,
            prior=prior,
            background=background,
        )
        conversation.register(handle)
    handle._start()
    return handle
