"""One round of tool calls answered: validate each call, ask for approval, run what is allowed.

`answer_calls` yields ``(call, outcome, result)`` one call at a time, running a tool only when
its item is asked for and not after `stopped()` (a cancel), so the caller
(`turnhandle.TurnHandle`) records each result as it comes. Outcomes: "invalid" (checked against the tool's
signature first; never offered for approval), "denied", "error" (the tool raised, or returned
only an error) or "ran".
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["answer_calls", "DENIED"]

DENIED = "The user denied this tool call; it was not run."


def answer_calls(
    calls: list[dict[str, Any]],
    functions: dict[str, Any],
    approve: Callable[[list[dict[str, Any]]], Any] | None,
    stopped: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """``(call, outcome, tool message)`` for every call, in order; `approve(valid_calls)` is
    asked once (True/False for all, or one verdict per valid call) before the first run.
    Ends early, before the next call, once `stopped()` is true (a cancel)."""
    from .tools import error_result, is_error_result, run_tool_call, validate_call

    problems = [validate_call(call, functions) for call in calls]
    valid = [c for c, p in zip(calls, problems, strict=True) if p is None]
    decision: Any = True
    if approve is not None and valid:
        decision = approve(copy.deepcopy(valid))  # may block on an Approve/Deny click
    if isinstance(decision, (list, tuple)):
        allowed = [bool(d) for d in decision] + [False] * (len(valid) - len(decision))
    else:
        allowed = [bool(decision)] * len(valid)
    verdict = iter(allowed)
    for call, problem in zip(calls, problems, strict=True):
        if stopped():
            return
        call_id = call.get("id") or ""
        if problem is not None:
            yield call, "invalid", error_result(call_id, problem)
        elif next(verdict, False):
            result = run_tool_call(call, functions)
            yield call, "error" if is_error_result(result) else "ran", result
        else:
            yield call, "denied", error_result(call_id, DENIED)
