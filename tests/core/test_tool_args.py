"""Tool-call arguments are validated (pydantic) before the user's function runs."""

from __future__ import annotations

import json
from typing import Any, Literal

from nbchat.tools import run_tool_call, validate_call


def _call(name: str, arguments: Any) -> dict:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def _error(message: dict) -> str:
    [block] = message["content"]
    return block["document"]["data"]["error"]


def test_bad_int_is_refused_naming_the_argument_and_the_function_is_not_called() -> None:
    calls: list[Any] = []

    def repeat(word: str, times: int) -> str:
        calls.append((word, times))
        return word * times

    fns = {"repeat": repeat}
    bad = _call("repeat", json.dumps({"word": "ab", "times": "x"}))
    msg = run_tool_call(bad, fns)
    assert calls == []  # never called with a bad value
    err = _error(msg)
    assert "'times'" in err and "integer" in err and "repeat" in err
    assert validate_call(bad, fns) == err
    # a numeric string is converted as the hint says: the function gets an int
    good = _call("repeat", json.dumps({"word": "ab", "times": "3"}))
    assert validate_call(good, fns) is None and calls == []
    assert run_tool_call(good, fns)["content"][0]["document"]["data"] == {"result": "ababab"}
    assert calls == [("ab", 3)]


def test_missing_unexpected_and_nested_problems_are_all_named() -> None:
    def f(city: str, days: int = 1, unit: Literal["C", "F"] = "C", tags: list[int] | None = None):
        return {"city": city}

    err = validate_call(
        _call("f", {"days": 2, "zone": "x", "unit": "K", "tags": [1, "y"]}), {"f": f}
    )
    assert err is not None
    for part in ("'city' is required", "unexpected argument 'zone'", "'unit'", "'tags'[1]"):
        assert part in err, (part, err)
    assert validate_call(_call("f", {"city": "Oslo"}), {"f": f}) is None


def test_parameter_names_that_clash_with_pydantic_and_special_kinds() -> None:
    def odd(json: str, model_config: int, schema: bool = False, /, *rest: Any, **extra: Any):
        return {"json": json, "model_config": model_config, "schema": schema, "extra": extra}

    out = run_tool_call(_call("odd", {"json": "j", "model_config": "4", "other": 1}), {"odd": odd})
    assert out["content"][0]["document"]["data"] == {
        "json": "j", "model_config": 4, "schema": False, "extra": {"other": 1}
    }  # fmt: skip

    def untyped(a, b=2):  # no hints: anything goes through unchanged
        return [a, b]

    out = run_tool_call(_call("untyped", {"a": "x"}), {"untyped": untyped})
    assert out["content"][0]["document"]["data"] == {"result": ["x", 2]}


def test_the_runner_gives_the_model_the_error_and_continues() -> None:
    from test_compose import ScriptBackend

    from nbchat.conversation import Conversation
    from nbchat.runner import start_turn

    ran: list[int] = []

    def square(n: int) -> int:
        ran.append(n)
        return n * n

    backend = ScriptBackend(tool_call=("square", '{"n": "x"}'))
    turn = start_turn(
        Conversation(), backend, "go", {"model": "m"}, tools=[square], background=False
    ).turn
    assert turn.complete and ran == []
    tool_msg = turn.output[1]
    assert tool_msg["role"] == "tool" and "'n'" in _error(tool_msg)
    assert backend.requests[1]["messages"][-1] == tool_msg  # the model got the error
