"""tools: JSON schema from Python functions, and running tool calls into tool messages."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import cohere
import jsonschema
import pydantic
import pytest

from nbchat.errors import ValidationError
from nbchat.protocol.request import validate_request
from nbchat.tools import function_to_tool, parse_docstring, run_tool_call


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def get_weather(
    city: str,
    days: int = 1,
    unit: Unit = Unit.C,
    detail: Literal["short", "long"] = "short",
    tags: list[str] | None = None,
    threshold: Optional[float] = None,  # noqa: UP045 - the typing spelling is tested too
    extra: dict[str, int] | None = None,
    verbose: bool = False,
) -> dict:
    """Get the weather forecast for a city.

    Uses the national service when it can.

    Args:
        city: Name of the city,
            e.g. "Paris".
        days (int): Number of days.
        unit: Temperature unit.
        detail: How much to say.
        tags: Labels to filter by.
        threshold: Alert above this.
        extra: Extra options.
        verbose: Say more.

    Returns:
        The forecast.
    """
    return {"city": city, "days": days}


def test_google_style_schema() -> None:
    tool = function_to_tool(get_weather)
    assert tool["type"] == "function"
    fn = tool["function"]
    assert fn["name"] == "get_weather"
    assert (
        fn["description"]
        == "Get the weather forecast for a city.\n\nUses the national service when it can."
    )
    params = fn["parameters"]
    props = params["properties"]
    assert params["type"] == "object"
    assert params["required"] == ["city"]
    assert props["city"] == {"type": "string", "description": 'Name of the city, e.g. "Paris".'}
    assert props["days"] == {"type": "integer", "description": "Number of days.", "default": 1}
    assert props["unit"]["enum"] == ["celsius", "fahrenheit"] and props["unit"]["type"] == "string"
    assert props["unit"]["default"] == "celsius"
    assert "default" not in props["tags"]
    assert props["detail"]["enum"] == ["short", "long"] and props["detail"]["default"] == "short"
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert props["threshold"]["type"] == "number"
    assert props["extra"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
        "description": "Extra options.",
    }
    assert props["verbose"]["type"] == "boolean"
    assert "Returns" not in fn["description"]
    # the schema is valid JSON Schema, and the whole tool passes our v2 validator and the SDK
    jsonschema.Draft202012Validator.check_schema(params)
    validate_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [tool]}
    )
    pydantic.TypeAdapter(cohere.ToolV2).validate_python(tool)


def test_numpy_style_docstring() -> None:
    def area(width: float, height: float = 1.0, *args, **kwargs) -> float:
        """Area of a rectangle.

        Parameters
        ----------
        width : float
            The width,
            in metres.
        height : float, optional
            The height.

        Returns
        -------
        float
        """
        return width * height

    fn = function_to_tool(area)["function"]
    assert fn["description"] == "Area of a rectangle."
    assert fn["parameters"]["properties"]["width"]["description"] == "The width, in metres."
    assert fn["parameters"]["properties"]["height"]["description"] == "The height."
    assert set(fn["parameters"]["properties"]) == {"width", "height"}  # no *args/**kwargs
    assert fn["parameters"]["required"] == ["width"]


def test_sphinx_style_and_annotated() -> None:
    def lookup(key, limit=10, note: Annotated[str, "A free note."] = "") -> list:
        """Look a key up.

        :param key: The key.
        :param int limit: Max results.
        """
        return []

    fn = function_to_tool(lookup)["function"]
    props = fn["parameters"]["properties"]
    assert props["key"] == {"type": "string", "description": "The key."}
    assert props["limit"]["type"] == "integer" and props["limit"]["description"] == "Max results."
    assert props["note"]["description"] == "A free note."
    assert fn["description"] == "Look a key up."


@dataclass
class Point:
    x: float
    y: float


def test_dataclass_parameter_and_no_docstring() -> None:
    def dist(p: Point, q: Point):
        return 0

    fn = function_to_tool(dist)["function"]
    assert fn["description"] == ""
    assert fn["parameters"]["properties"]["p"]["properties"] == {
        "x": {"type": "number"},
        "y": {"type": "number"},
    }


def test_invalid_names_rejected_and_dicts_pass_through() -> None:
    with pytest.raises(ValidationError) as info:
        function_to_tool(lambda x: x)
    assert "name" in info.value.field
    with pytest.raises(ValidationError):
        function_to_tool(42)  # type: ignore[arg-type]
    tool = {"type": "function", "function": {"name": "x", "parameters": {}}}
    assert function_to_tool(tool) is tool


def test_parse_docstring_empty() -> None:
    assert parse_docstring(None) == ("", {})


# -- run_tool_call -----------------------------------------------------------------------------
def _call(name: str, arguments: str, id: str = "call_1") -> dict:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _data(message: dict) -> list:
    return [b["document"]["data"] for b in message["content"]]


def _sdk_ok(message: dict) -> None:
    m = pydantic.TypeAdapter(cohere.ToolChatMessageV2).validate_python(message)
    assert not (m.model_extra or {})


class Thing:
    def __repr__(self) -> str:
        return "<Thing>"


def test_run_tool_call_shapes() -> None:
    def add(a: int, b: int = 2) -> int:
        return a + b

    def rows() -> list:
        return [{"x": 1}, {"x": 2}]

    def weird() -> dict:
        return {"obj": Thing(), "s": {1, 2}}

    def boom(x: int) -> None:
        raise ZeroDivisionError("division by zero")

    fns = {"add": add, "rows": rows, "weird": weird, "boom": boom, "get_weather": get_weather}
    msg = run_tool_call(_call("add", '{"a": 1}'), fns)
    assert msg["role"] == "tool" and msg["tool_call_id"] == "call_1"
    assert _data(msg) == [{"result": 3}]
    assert _data(run_tool_call(_call("get_weather", '{"city": "Oslo"}'), fns)) == [
        {"city": "Oslo", "days": 1}
    ]
    assert _data(run_tool_call(_call("rows", ""), fns)) == [{"x": 1}, {"x": 2}]
    assert _data(run_tool_call(_call("rows", "null"), fns)) == [{"x": 1}, {"x": 2}]
    weird_data = _data(run_tool_call(_call("weird", "{}"), fns))[0]
    assert weird_data["obj"] == "<Thing>" and sorted(weird_data["s"]) == [1, 2]
    json.dumps(weird_data)
    for m in (msg, run_tool_call(_call("weird", "{}"), fns)):
        _sdk_ok(m)


@pytest.mark.parametrize(
    "call, expected",
    [
        (_call("boom", '{"x": 1}'), "ZeroDivisionError: division by zero"),
        (_call("nope", "{}"), "unknown tool 'nope'"),
        (_call("add", "{not json"), "not valid JSON"),
        (_call("add", "[1, 2]"), "must be a JSON object"),
        (_call("add", '{"zzz": 1}'), "unexpected argument 'zzz'"),
        (_call("add", '{"a": "x"}'), "argument 'a'"),
        (_call("add", "{}"), "argument 'a' is required"),
    ],
)
def test_run_tool_call_errors_become_documents(call: dict, expected: str) -> None:
    def add(a: int, b: int = 2) -> int:
        return a + b

    def boom(x: int) -> None:
        raise ZeroDivisionError("division by zero")

    msg = run_tool_call(call, {"add": add, "boom": boom})
    data = _data(msg)
    assert len(data) == 1 and expected in data[0]["error"]
    _sdk_ok(msg)


def test_tool_error_text_is_redacted(monkeypatch) -> None:
    monkeypatch.setenv("CO_API_KEY", "sk-secret-tool-987654")

    def leak() -> None:
        raise RuntimeError("key sk-secret-tool-987654 rejected")

    msg = run_tool_call(_call("leak", "{}"), {"leak": leak})
    assert "sk-secret-tool-987654" not in json.dumps(msg)
