"""Tool calls you can trust: validated before the Approve prompt, errors shown as errors,
tool_choice REQUIRED for the first round only, calls cut by max_tokens marked "not run",
plans of rounds kept apart, rounds counted in the stats.

Scripted tool-call streams come from a real v2 HTTP server (tests/v2server.py) through the real
v2 client; REQUIRED is also checked on the real embedded engine. The live view (TurnView) is
the real one with recording comms.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from test_view import recorded  # noqa: E402, F401
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat.backends import get_backend  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402
from nbchat.notebook.view import TurnView  # noqa: E402
from nbchat.protocol.events import StreamBuilder, usage_dict  # noqa: E402
from nbchat.runner import start_turn  # noqa: E402

pytestmark = pytest.mark.usefixtures("recorded")


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: first number
        b: second number
    """
    return a + b


def broken(a: int) -> int:
    """Always fails.

    Args:
        a: a number
    """
    raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")


def call_stream(
    calls: list[tuple[str, str, str]], plan: str = "", finish: str = "TOOL_CALL"
) -> list[dict[str, Any]]:
    b = StreamBuilder()
    ev = [b.start()]
    if plan:
        ev.append(b.tool_plan(plan))
    for cid, name, args in calls:
        ev += [b.tool_call_start(cid, name, ""), b.tool_call_delta(args), b.tool_call_end()]
    ev += b.end(finish, usage_dict(10, 7))
    return ev


def serve(*streams: list[dict[str, Any]]) -> V2Server:
    srv = V2Server(default=sse(events_body(text_events(["All ", "done."]))))
    srv.push(*[sse(events_body(s)) for s in streams])
    return srv


def run(srv: V2Server, tools: list[Any], **params: Any) -> tuple[Any, TurnView, list[Any]]:
    asked: list[Any] = []
    view = TurnView("q", params={})

    def approve(calls: list[dict[str, Any]]) -> bool:
        asked.append([c["function"]["name"] for c in calls])
        return True

    backend = get_backend("v2", base_url=srv.url, api_key="k")
    handle = start_turn(
        Conversation(),
        backend,
        "q",
        {"model": "command-a-03-2025", **params},
        tools=tools,
        approve=approve,
        listener=view.listener(),
    )
    turn = handle.wait(30)
    return turn, view, asked


def calls_meta(view: TurnView) -> list[dict[str, Any]]:
    return view.snapshot()["meta"].get("calls") or []


def test_invalid_arguments_are_not_offered_for_approval_and_go_back_as_an_error() -> None:
    bad = '{"type": "integer", "description": "first number"}'
    srv = serve(call_stream([("c1", "add", bad), ("c2", "add", '{"a": 2, "b": 3}')]))
    try:
        turn, view, asked = run(srv, [add])
    finally:
        srv.close()
    assert turn.status == "complete", turn.error
    assert asked == [["add"]]  # only the valid call was offered
    tool_msgs = [m for m in turn.output if m["role"] == "tool"]
    err = tool_msgs[0]["content"][0]["document"]["data"]["error"]
    assert tool_msgs[0]["tool_call_id"] == "c1" and "a" in err and "b" in err
    assert tool_msgs[1]["content"][0]["document"]["data"] == {"result": 5}
    # round 2 carried the error result to the model
    assert [m["role"] for m in srv.requests[1].json["messages"]][-2:] == ["tool", "tool"]
    meta = calls_meta(view)
    assert [c.get("outcome") for c in meta] == ["invalid", "ran"], meta
    assert "error" in meta[0]["result"]


def test_an_exception_in_the_tool_is_an_error_badge_with_its_message() -> None:
    srv = serve(call_stream([("c1", "broken", '{"a": 1}')]))
    try:
        turn, view, asked = run(srv, [broken])
    finally:
        srv.close()
    assert asked == [["broken"]]
    meta = calls_meta(view)
    assert meta[0]["outcome"] == "error" and "TypeError" in meta[0]["result"], meta
    data = [m for m in turn.output if m["role"] == "tool"][0]["content"][0]["document"]["data"]
    assert list(data) == ["error"] and "unsupported operand" in data["error"]


def test_a_call_cut_by_max_tokens_is_marked_not_run() -> None:
    srv = serve(call_stream([("c1", "add", '{"a": 1, "b": 2}')], finish="MAX_TOKENS"))
    try:
        turn, view, asked = run(srv, [add], max_tokens=20)
    finally:
        srv.close()
    assert turn.status == "complete" and turn.finish_reason == "MAX_TOKENS"
    assert asked == [] and not [m for m in turn.output if m["role"] == "tool"]
    meta = calls_meta(view)
    assert meta[0]["outcome"] == "notrun" and meta[0]["why"] == "max_tokens reached", meta


def test_required_applies_to_the_first_round_plans_are_separate_and_rounds_counted() -> None:
    srv = serve(
        call_stream([("c1", "add", '{"a": 1, "b": 2}')], plan="I will add them."),
        call_stream([("c2", "add", '{"a": 3, "b": 4}')], plan="Now the second sum."),
    )
    try:
        turn, view, asked = run(srv, [add], tool_choice="REQUIRED", max_tokens=80)
    finally:
        srv.close()
    assert turn.status == "complete", turn.error
    bodies = [r.json for r in srv.requests]
    assert len(bodies) == 3
    assert bodies[0]["tool_choice"] == "REQUIRED"
    assert all("tool_choice" not in b for b in bodies[1:])
    assert all(b["max_tokens"] == 80 for b in bodies)  # the budget is per round
    snap = view.snapshot()
    assert snap["plan"] == "I will add them.\nNow the second sum."
    assert snap["meta"]["stats"]["rounds"] == 3


@pytest.mark.engine
def test_required_first_round_only_on_the_embedded_engine() -> None:
    from nbchat.backends.local import LocalBackend

    sent: list[dict[str, Any]] = []

    class Recording(LocalBackend):  # the real engine; only remembers each request
        def stream(self, request: dict[str, Any], cancel: Any = None):
            sent.append(request)
            return super().stream(request, cancel)

    ran: list[tuple[int, int]] = []

    def add_numbers(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: first number
            b: second number
        """
        ran.append((a, b))
        return a + b

    handle = start_turn(
        Conversation(),
        Recording(),
        "What is 2 + 3? Use the tool.",
        {"tool_choice": "REQUIRED", "strict_tools": True, "max_tokens": 120, "temperature": 0},
        tools=[add_numbers],
        max_tool_rounds=3,
    )
    turn = handle.wait(300)
    assert sent[0]["tool_choice"] == "REQUIRED"
    assert len(sent) >= 2 and all("tool_choice" not in r for r in sent[1:])
    assert turn.output[0].get("tool_calls"), turn.output[0]
    assert ran, "the strict REQUIRED call ran"
    assert "max_tool_rounds" not in (turn.error or "")
