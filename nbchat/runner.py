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

from collections.abc import Callable
from typing import Any

from .backends.base import Backend
from .compose import build_request
from .listener import Listener, TurnHost
from .turn import Turn
from .turnhandle import CANCEL_GRACE, DENIED, TurnHandle

__all__ = [
    "start_turn",
    "TurnHandle",
    "Listener",
    "TurnHost",
    "CANCEL_GRACE",
    "DEFAULT_MAX_TOOL_ROUNDS",
    "DENIED",
]

DEFAULT_MAX_TOOL_ROUNDS = 5


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
        omitted=composed.omitted,
    )

    def make_handle(prior: list[Any]) -> TurnHandle:
        return TurnHandle(
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

    handle = install_turn(conversation, turn, composed, make_handle)
    handle._start()
    return handle


def install_turn(conversation: Any, turn: Turn, composed: Any, make_handle: Any) -> Any:
    """Put a new running `turn` into `conversation` and register its handle.

    A re-run of a cell that is still streaming stops the old turn first; then, under the
    conversation's lock, the system prompt the request set is applied, the turn replaces the
    cell's earlier turn (or is appended), and ``make_handle(prior)`` (``prior``: the turns
    still running, which the new one waits for) builds the handle that is registered.
    """
    key = turn.cell_key
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
        handle = make_handle(prior)
        conversation.register(handle)
    return handle
