"""Python functions as Cohere v2 tools.

`function_to_tool(fn)` derives the v2 tool definition (``{"type": "function", "function":
{name, description, parameters}}``) from a function's name, signature, type hints and
docstring (Google, NumPy or Sphinx style parameter docs). `run_tool_call(call, functions)`
runs one tool call from an assistant message and returns the ``tool`` message that answers
it; it never raises: a bad argument string, an unknown tool or an exception inside the
function becomes an error document the model can read.

Arguments are validated against the signature's type hints (pydantic, imported when a call
is checked) BEFORE the function runs: ``"3"`` for an ``int`` becomes 3, ``"x"`` is refused
with an error naming the argument, and the function is not called. `validate_call(call,
functions)` runs the same check without calling anything (the notebook uses it before it
asks to approve a call).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .docstrings import parse_docstring
from .errors import ValidationError, redact

__all__ = [
    "function_to_tool",
    "run_tool_call",
    "validate_call",
    "error_result",
    "is_error_result",
    "parse_docstring",
    "type_to_schema",
]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NoneType = type(None)


# -- types -> JSON schema --------------------------------------------------------------------
def type_to_schema(tp: Any) -> dict[str, Any]:
    """JSON schema for a Python type hint (the subset tool parameters need).

    str/int/float/bool, list[X]/tuple/set, dict[str, X], Optional[X] / X | None (schema of X),
    Literal[...] and Enum (an ``enum``), Annotated[X, "doc"] (X, with the string as
    description), dataclasses and TypedDicts (objects). Anything else: no constraint (``{}``).
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        schema = type_to_schema(args[0])
        docs = [a for a in args[1:] if isinstance(a, str)]
        if docs:
            schema["description"] = docs[0]
        return schema
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if tp is str:
        return {"type": "string"}
    if tp is bool:  # before int: bool is an int subclass
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is _NoneType:
        return {"type": "null"}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not _NoneType]
        if len(rest) == 1:
            return type_to_schema(rest[0])
        return {"anyOf": [type_to_schema(a) for a in rest]}
    if origin is typing.Literal:
        values = list(args)
        schema: dict[str, Any] = {"enum": values}
        kinds = {type_to_schema(type(v)).get("type") for v in values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        schema = {"enum": values}
        kinds = {type_to_schema(type(v)).get("type") for v in values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if tp in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
        schema = {"type": "array"}
        item_args = [a for a in args if a is not Ellipsis]
        if len(set(item_args)) == 1:
            schema["items"] = type_to_schema(item_args[0])
        return schema
    if tp is dict or origin in (dict, Mapping) or tp is Mapping:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = type_to_schema(args[1])
        return schema
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or typing.is_typeddict(tp)):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {
            "type": "object",
            "properties": {k: type_to_schema(v) for k, v in hints.items()},
            "required": list(hints),
        }
    return {}


def _schema_from_default(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return type_to_schema(type(value))


def function_to_tool(fn: Callable[..., Any] | dict[str, Any]) -> dict[str, Any]:
    """The v2 tool definition for a Python function.

    name = ``fn.__name__`` (must match ``[A-Za-z_][A-Za-z0-9_]*``), description = the
    docstring's description, parameters = a JSON schema built from the signature: each
    parameter's type hint (see `type_to_schema`; unannotated parameters take the type of
    their default), its docstring entry as ``description``, and ``required`` = the
    parameters without a default. ``*args``/``**kwargs`` are not exposed. A dict is assumed
    to be a tool definition already and is returned unchanged.
    """
    if isinstance(fn, dict):
        return fn
    if not callable(fn):
        raise ValidationError("tools", fn, "Python functions or v2 tool dicts")
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if not _NAME_RE.match(name):
        raise ValidationError(
            "tools[].function.name",
            name,
            "a name matching [A-Za-z_][A-Za-z0-9_]* (def, not lambda)",
        )
    description, param_docs = parse_docstring(inspect.getdoc(fn))
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            "tools", name, f"a function with an inspectable signature ({exc})"
        ) from exc
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {
            k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)
        }
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if pname in ("self", "cls") and param.annotation is param.empty:
            continue
        if pname in hints:
            schema = type_to_schema(hints[pname])
        elif param.default is not param.empty:
            schema = _schema_from_default(param.default)
        else:
            schema = {"type": "string"}  # unannotated, no default: the model sends text
        if param_docs.get(pname):
            schema.setdefault("description", param_docs[pname])
        if param.default is param.empty:
            required.append(pname)
        else:
            default = param.default.value if isinstance(param.default, enum.Enum) else param.default
            if default is not None and _json_safe(default) is not _UNSAFE:
                schema["default"] = default
        properties[pname] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


_UNSAFE = object()


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return _UNSAFE
    return value


# -- running calls -----------------------------------------------------------------------------
def _document(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "document", "document": {"data": data}}


def _to_jsonable(value: Any) -> Any:
    """A JSON-safe copy of value: plain JSON types as they are, dataclasses/pydantic models as
    dicts, DataFrames as records, anything else as its repr."""

    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if hasattr(obj, "model_dump"):
            return obj.model_dump(mode="json")
        if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas DataFrame
            return obj.to_dict(orient="records")
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        if isinstance(obj, enum.Enum):
            return obj.value
        return repr(obj)

    try:
        return json.loads(json.dumps(value, default=default))
    except (TypeError, ValueError):  # e.g. circular references
        return repr(value)


def _result_documents(result: Any) -> list[dict[str, Any]]:
    data = _to_jsonable(result)
    # A v2 document's data must be a non-empty object: an empty dict goes in {"result": ...}.
    if isinstance(data, dict) and data:
        return [_document(data)]
    if isinstance(data, list) and data and all(isinstance(d, dict) and d for d in data):
        # One document per record: Cohere cites tool results per document.
        return [_document(d) for d in data]
    return [_document({"result": data})]


def error_result(call_id: str, text: str) -> dict[str, Any]:
    """The ``tool`` message answering a call with ``{"error": text}`` (text redacted)."""
    return _error_message(call_id, text)


def is_error_result(message: dict[str, Any]) -> bool:
    """A tool message whose only document is ``{"error": ...}`` (the tool raised)."""
    docs = message.get("content") or []
    if len(docs) != 1 or not isinstance(docs[0], dict):
        return False
    data = (docs[0].get("document") or {}).get("data")
    return isinstance(data, dict) and list(data) == ["error"]


def _error_message(call_id: str, text: str) -> dict[str, Any]:
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": [_document({"error": redact(text)})],
    }


def _parse_arguments(raw: Any) -> dict[str, Any] | str:
    """The call's arguments as a dict, or an error text."""
    if isinstance(raw, dict):
        return raw
    raw = (raw or "").strip()
    try:
        args = json.loads(raw) if raw not in ("", "null") else {}
    except json.JSONDecodeError as exc:
        return f"arguments are not valid JSON ({exc.msg}): {raw[:200]}"
    if not isinstance(args, dict):
        return f"arguments must be a JSON object, got {type(args).__name__}"
    return args


def _prepare(
    call: dict[str, Any], functions: Mapping[str, Callable[..., Any]]
) -> tuple[Callable[..., Any], list[Any], dict[str, Any]] | str:
    """(function, positional args, keyword args) ready to call, or an error text."""
    fn_part = call.get("function") or {}
    name = fn_part.get("name") or ""
    fn = functions.get(name)
    if fn is None:
        known = ", ".join(sorted(functions)) or "none"
        return f"unknown tool {name!r}; available tools: {known}"
    args = _parse_arguments(fn_part.get("arguments"))
    if isinstance(args, str):
        return args
    from .toolargs import check_arguments

    checked = check_arguments(fn, name, args)
    if isinstance(checked, str):
        return checked
    return (fn, *checked)


def validate_call(call: dict[str, Any], functions: Mapping[str, Callable[..., Any]]) -> str | None:
    """Check a tool call without running it: None when it can run, else the error text the
    model would get (unknown tool, arguments not a JSON object, an argument of the wrong
    type, missing or unexpected; each names the argument)."""
    prepared = _prepare(call, functions)
    return redact(prepared) if isinstance(prepared, str) else None


def run_tool_call(
    call: dict[str, Any], functions: Mapping[str, Callable[..., Any]]
) -> dict[str, Any]:
    """Run one tool call (``{"id", "type": "function", "function": {"name", "arguments"}}``).

    Returns the ``tool`` message answering it:
    ``{"role": "tool", "tool_call_id": id, "content": [{"type": "document", "document": {"data": {...}}}]}``.
    A dict result is the document's data; a list of dicts gives one document per item; any
    other result is ``{"result": value}`` (JSON-serialised, non-JSON values as their repr).
    Failures never raise: bad JSON arguments, an unknown tool, arguments that do not fit the
    signature (see `validate_call`; the function is then not called) or an exception in the
    function give a document ``{"error": "..."}`` so the model can recover.
    """
    call_id = str(call.get("id") or "")
    prepared = _prepare(call, functions)
    if isinstance(prepared, str):
        return _error_message(call_id, prepared)
    fn, positional, keywords = prepared
    try:
        result = fn(*positional, **keywords)
    except Exception as exc:  # the model sees the error and can retry or explain
        return _error_message(call_id, f"{type(exc).__name__}: {exc}")
    return {"role": "tool", "tool_call_id": call_id, "content": _result_documents(result)}
