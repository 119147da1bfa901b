"""The POST /v2/chat request body: Cohere's rules, checked before anything is sent.

`validate_request(body)` returns a normalized deep copy or raises one `ValidationError` naming
the field path (``messages[2].tool_call_id``), the value and what is allowed. The rules follow
the official OpenAPI spec and what the real API accepted in the recorded captures (see
``tests/fixtures/cohere-wire``). Documented leniencies of the real API are accepted and
normalized to the spec shape:

* ``tool_calls[].type`` may be omitted (filled in as ``"function"``);
* a tool-message content block may omit ``"type"`` when it holds a ``"document"`` key;
* ``document.data`` may be a string (kept as is; `normalize_documents` wraps it);
* ``response_format.schema`` (sent by langchain-cohere and accepted by Cohere) is renamed to
  ``json_schema``;
* ``tool_choice`` and ``citation_options.mode`` in any case (upper-cased on the wire);
* an optional top-level parameter set to ``None`` means "unset" and is dropped (the SDK never
  sends ``null``).

Pure: no I/O, stdlib only (``jsonschema`` is imported lazily when a json_schema is given).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ..errors import ValidationError
from .checks import (
    as_dict,
    boolean,
    enum,
    fail,
    integer,
    key_name,
    keys,
    number,
    string,
    unknown,
)
from .message_rules import ROLES, check_document, check_messages
from .messages import message_text  # noqa: F401  (re-exported: old import path)

if TYPE_CHECKING:  # pragma: no cover - annotations only (keeps the import cheap)
    from .types import Request

__all__ = [
    "validate_request",
    "normalize_documents",
    "message_text",
    "DEFAULTS",
    "RANGES",
    "SAFETY_MODES",
    "FINISH_REASONS",
    "CITATION_MODES",
    "TOOL_CHOICES",
    "THINKING_TYPES",
    "RESPONSE_FORMAT_TYPES",
    "ROLES",
    "PARAM_FIELDS",
    "REQUIRED_FIELDS",
    "ALLOWED_FIELDS",
    "SEED_MAX",
    "SAFETY_MODE_CONFLICT",
]

# Cohere's documented defaults for the sampling parameters (what an omitted field means).
DEFAULTS: dict[str, Any] = {
    "temperature": 0.3,
    "p": 0.75,
    "k": 0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "safety_mode": "CONTEXTUAL",
}
SAFETY_MODES = ("CONTEXTUAL", "STRICT", "OFF")
SEED_MAX = 2**64 - 1
# Allowed (min, max) of each numeric parameter, both inclusive; max None = no upper bound.
# Floats are numbers, ints must be integers. validate_request, the flags, the panel and the
# help all read this table.
RANGES: dict[str, tuple[float, float | None]] = {
    "temperature": (0, 1),
    "p": (0.01, 0.99),
    "k": (0, 500),
    "frequency_penalty": (0, 1),
    "presence_penalty": (0, 1),
    "seed": (0, SEED_MAX),
    "max_tokens": (1, None),
    "priority": (0, 999),
}
_INTEGER_FIELDS = ("k", "seed", "max_tokens", "priority")
FINISH_REASONS = ("COMPLETE", "STOP_SEQUENCE", "MAX_TOKENS", "TOOL_CALL", "ERROR", "TIMEOUT")
CITATION_MODES = ("ENABLED", "DISABLED", "FAST", "ACCURATE", "OFF")
TOOL_CHOICES = ("REQUIRED", "NONE")
THINKING_TYPES = ("enabled", "disabled")
RESPONSE_FORMAT_TYPES = ("text", "json_object")
# Cohere: safety_mode "is not configurable in combination with tools and documents". The
# panel shows this sentence when it disables its safety_mode box; %%chat refuses with it.
SAFETY_MODE_CONFLICT = "safety_mode cannot be combined with documents or tools (Cohere v2 rule)"
MAX_STOP_SEQUENCES = 5

REQUIRED_FIELDS = ("model", "messages")
# Every optional field of POST /v2/chat, in the spec's order.
PARAM_FIELDS = (
    "stream",
    "tools",
    "strict_tools",
    "documents",
    "citation_options",
    "response_format",
    "safety_mode",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "k",
    "p",
    "logprobs",
    "tool_choice",
    "thinking",
    "priority",
)
ALLOWED_FIELDS = REQUIRED_FIELDS + PARAM_FIELDS

_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# -- the request -------------------------------------------------------------------------------
def validate_request(body: Mapping[str, Any]) -> Request:
    """Check a v2 chat request against every rule; return a normalized deep copy.

    Raises `ValidationError` (field, value, allowed) for the first violation found.
    """
    if not isinstance(body, dict):
        raise fail("body", body, "a JSON object (dict) with model and messages")
    for key in body:
        if key not in ALLOWED_FIELDS:
            raise unknown(key_name(key), body[key], ALLOWED_FIELDS, "the v2 chat request")
    # None means "unset" for optional fields: drop it, as the SDK does.
    req = {k: copy.deepcopy(v) for k, v in body.items() if v is not None or k in REQUIRED_FIELDS}

    for name in REQUIRED_FIELDS:
        if name not in req:
            raise fail(name, None, "required field is missing")
    string("model", req["model"], empty=False)
    if not req["model"].strip():
        raise fail("model", req["model"], "a non-empty string")
    check_messages(req["messages"])

    for name in ("stream", "strict_tools", "logprobs"):
        if name in req:
            boolean(name, req[name])
    for name, (lo, hi) in RANGES.items():
        if name not in req:
            continue
        if name in _INTEGER_FIELDS:
            integer(name, req[name], int(lo), None if hi is None else int(hi))
        else:
            number(name, req[name], lo, hi if hi is not None else math.inf)
    if "stop_sequences" in req:
        _check_stop_sequences(req["stop_sequences"])
    if "safety_mode" in req:
        enum("safety_mode", req["safety_mode"], SAFETY_MODES)
    if "citation_options" in req:
        opts = as_dict("citation_options", req["citation_options"], "an object {mode}")
        keys("citation_options", opts, ("mode",))
        if "mode" in opts:
            opts["mode"] = enum(
                "citation_options.mode", opts["mode"], CITATION_MODES, upper=True, any_case=True
            )
    if "thinking" in req:
        _check_thinking(req["thinking"])
    if "documents" in req:
        _check_documents(req["documents"])
    if "tools" in req:
        _check_tools(req["tools"])
    if "tool_choice" in req:
        req["tool_choice"] = enum(
            "tool_choice", req["tool_choice"], TOOL_CHOICES, upper=True, any_case=True
        )
        if req["tool_choice"] == "REQUIRED" and not req.get("tools"):
            raise fail("tool_choice", "REQUIRED", "REQUIRED only together with tools; else NONE")
    if "response_format" in req:
        _check_response_format(req)
    if "safety_mode" in req:
        _check_safety_mode(req)
    _check_utf8(req)
    return cast("Request", req)


def _check_safety_mode(req: dict[str, Any]) -> None:
    with_what = [name for name in ("documents", "tools") if req.get(name)]
    if with_what:
        raise ValidationError(
            "safety_mode",
            req["safety_mode"],
            "no safety_mode when documents or tools are sent",
            message=f"{SAFETY_MODE_CONFLICT}: drop safety_mode or the "
            + " and ".join(with_what)
            + f" (safety_mode={req['safety_mode']!r})",
        )


def _check_utf8(req: dict[str, Any]) -> None:
    """The body goes on the wire as UTF-8: a lone surrogate (valid in Python and in JSON
    escapes, not in UTF-8) must be rejected here, naming its field, not crash the sender."""
    try:
        json.dumps(req, ensure_ascii=False).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise fail(
                    path, value, f"valid Unicode text (lone surrogate at position {exc.start})"
                ) from None
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(k, path)
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")

    walk(req, "")


def _check_stop_sequences(v: Any) -> None:
    if not isinstance(v, list) or len(v) > MAX_STOP_SEQUENCES:
        raise fail("stop_sequences", v, f"a list of at most {MAX_STOP_SEQUENCES} strings")
    for i, s in enumerate(v):
        string(f"stop_sequences[{i}]", s, empty=False)


def _check_thinking(v: Any) -> None:
    th = as_dict("thinking", v, "an object {type: enabled|disabled, token_budget?: int >= 1}")
    keys("thinking", th, ("type", "token_budget"))
    if "type" not in th:
        raise fail("thinking.type", None, "required: one of " + ", ".join(THINKING_TYPES))
    enum("thinking.type", th["type"], THINKING_TYPES)
    if "token_budget" in th:
        integer("thinking.token_budget", th["token_budget"], 1)


def _check_response_format(req: dict[str, Any]) -> None:
    rf = as_dict(
        "response_format",
        req["response_format"],
        "an object {type: text} or {type: json_object, json_schema?: object}",
    )
    if "schema" in rf and "json_schema" not in rf:  # langchain-cohere's spelling, accepted live
        rf["json_schema"] = rf.pop("schema")
    keys("response_format", rf, ("type", "json_schema"))
    if "type" not in rf:
        raise fail("response_format.type", None, "required: one of text, json_object")
    kind = enum("response_format.type", rf["type"], RESPONSE_FORMAT_TYPES)
    if kind == "text" and "json_schema" in rf:
        raise fail("response_format.json_schema", rf["json_schema"], "only with type json_object")
    if "json_schema" in rf:
        _check_json_schema("response_format.json_schema", rf["json_schema"])
    if kind == "json_object":
        for other in ("documents", "tools"):
            if req.get(other):
                raise fail(
                    "response_format",
                    rf,
                    f"json_object is not supported together with {other}; "
                    "drop documents/tools or use type text",
                )


def _check_json_schema(field: str, schema: Any) -> None:
    as_dict(field, schema, "a JSON Schema object")
    try:  # jsonschema is optional; when present, use its meta-schema check
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for
    except ImportError:  # pragma: no cover - depends on the environment
        return
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        raise fail(field, schema, f"a valid JSON Schema ({exc.message})") from None
    except Exception as exc:  # e.g. recursion on pathological input: still a bad schema
        raise fail(field, schema, f"a valid JSON Schema ({type(exc).__name__})") from None


def _check_documents(docs: Any) -> None:
    if not isinstance(docs, list):
        raise fail("documents", docs, "a list of strings or {id?, data} objects")
    for i, doc in enumerate(docs):
        check_document(f"documents[{i}]", doc, allow_string=True)


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise fail("tools", tools, "a list of {type: function, function: {...}} objects")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        f = f"tools[{i}]"
        t = as_dict(
            f, tool, "an object {type: function, function: {name, description?, parameters}}"
        )
        keys(f, t, ("type", "function"))
        if t.get("type") != "function":
            raise fail(f"{f}.type", t.get("type"), "function")
        fn = as_dict(
            f"{f}.function", t.get("function"), "an object {name, description?, parameters}"
        )
        keys(f"{f}.function", fn, ("name", "description", "parameters"))
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise fail(
                f"{f}.function.name",
                name,
                "letters, digits and _ only, not starting with a digit ([A-Za-z_][A-Za-z0-9_]*)",
            )
        if name in seen:
            raise fail(f"{f}.function.name", name, "a name not used by another tool")
        seen.add(name)
        if "description" in fn:
            string(f"{f}.function.description", fn["description"])
        if "parameters" not in fn:
            raise fail(f"{f}.function.parameters", None, "required: a JSON Schema object")
        as_dict(f"{f}.function.parameters", fn["parameters"], "a JSON Schema object")


# -- helpers for backends ------------------------------------------------------------------------
def normalize_documents(documents: list[Any] | None) -> list[dict[str, Any]]:
    """Documents as the server sees them: ``{"id": str, "data": dict}``.

    A string becomes ``{"text": s}``; string data becomes ``{"text": data}``; a missing id
    becomes ``doc:N`` (N = position in the list), as Cohere does.
    """
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(documents or ()):
        if isinstance(doc, str):
            out.append({"id": f"doc:{i}", "data": {"text": doc}})
            continue
        data = doc.get("data")
        if isinstance(data, str):
            data = {"text": data}
        elif isinstance(data, dict):
            data = copy.deepcopy(data)
        else:
            data = {}
        doc_id = doc.get("id")
        out.append(
            {"id": doc_id if isinstance(doc_id, str) and doc_id else f"doc:{i}", "data": data}
        )
    return out
