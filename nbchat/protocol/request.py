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
from typing import Any, cast

from ..errors import ValidationError
from .messages import message_text  # noqa: F401  (re-exported: old import path)
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
IMAGE_DETAILS = ("auto", "low", "high")
ROLES = ("system", "user", "assistant", "tool")
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

# Allowed keys per message role (exactness: anything else is a client bug worth reporting).
_MESSAGE_KEYS = {
    "system": ("role", "content"),
    "user": ("role", "content"),
    "assistant": ("role", "content", "tool_plan", "tool_calls", "citations"),
    "tool": ("role", "tool_call_id", "content"),
}
_BLOCK_TYPES = {
    "system": ("text",),
    "user": ("text", "image_url"),
    "assistant": ("text", "thinking"),
    "tool": ("text", "document"),
}


# -- small checkers ----------------------------------------------------------------------------
def _fail(field: str, value: Any, allowed: str) -> ValidationError:
    return ValidationError(field, value, allowed)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    # Booleans are ints in Python but never numbers on the wire; NaN/inf are not JSON.
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _number(field: str, v: Any, lo: float, hi: float) -> None:
    if not _is_number(v) or not lo <= v <= hi:
        raise _fail(field, v, f"a number from {lo} to {hi} inclusive")


def _integer(field: str, v: Any, lo: int, hi: int | None = None) -> None:
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        rng = f"from {lo} to {hi} inclusive" if hi is not None else f">= {lo}"
        raise _fail(field, v, f"an integer {rng}")


def _boolean(field: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise _fail(field, v, "true or false")


def _string(field: str, v: Any, *, empty: bool = True) -> None:
    if not isinstance(v, str) or (not empty and not v):
        raise _fail(field, v, "a string" if empty else "a non-empty string")


def _dict(field: str, v: Any, what: str = "an object") -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(field, v, what)
    return v


def _name(key: Any) -> str:
    return key if isinstance(key, str) and key.isprintable() and key else repr(key)


def _unknown(field: str, value: Any, allowed: tuple[str, ...], where: str) -> ValidationError:
    listed = ", ".join(allowed)
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    import difflib  # lazy: only needed to phrase an error

    name = field.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValidationError(
        field,
        value,
        f"one of the fields {listed}",
        message=f"unknown field {field} (value {shown}) in {where}{hint}; allowed fields: {listed}",
    )


def _keys(field: str, obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            raise _unknown(f"{field}.{_name(key)}", obj[key], allowed, field)


def _enum(
    field: str, v: Any, allowed: tuple[str, ...], *, upper: bool = False, any_case: bool = False
) -> str:
    if isinstance(v, str):
        key = v.upper() if upper else v
        if any_case and key in allowed:
            return key
        if v in allowed:
            return v
    suffix = " (any case)" if any_case else ""
    raise _fail(field, v, "one of " + ", ".join(allowed) + suffix)


# -- the request -------------------------------------------------------------------------------
def validate_request(body: Mapping[str, Any]) -> Request:
    """Check a v2 chat request against every rule; return a normalized deep copy.

    Raises `ValidationError` (field, value, allowed) for the first violation found.
    """
    if not isinstance(body, dict):
        raise _fail("body", body, "a JSON object (dict) with model and messages")
    for key in body:
        if key not in ALLOWED_FIELDS:
            raise _unknown(_name(key), body[key], ALLOWED_FIELDS, "the v2 chat request")
    # None means "unset" for optional fields: drop it, as the SDK does.
    req = {k: copy.deepcopy(v) for k, v in body.items() if v is not None or k in REQUIRED_FIELDS}

    for name in REQUIRED_FIELDS:
        if name not in req:
            raise _fail(name, None, "required field is missing")
    _string("model", req["model"], empty=False)
    if not req["model"].strip():
        raise _fail("model", req["model"], "a non-empty string")
    _check_messages(req["messages"])

    for name in ("stream", "strict_tools", "logprobs"):
        if name in req:
            _boolean(name, req[name])
    for name, (lo, hi) in RANGES.items():
        if name not in req:
            continue
        if name in _INTEGER_FIELDS:
            _integer(name, req[name], int(lo), None if hi is None else int(hi))
        else:
            _number(name, req[name], lo, hi if hi is not None else math.inf)
    if "stop_sequences" in req:
        _check_stop_sequences(req["stop_sequences"])
    if "safety_mode" in req:
        _enum("safety_mode", req["safety_mode"], SAFETY_MODES)
    if "citation_options" in req:
        opts = _dict("citation_options", req["citation_options"], "an object {mode}")
        _keys("citation_options", opts, ("mode",))
        if "mode" in opts:
            opts["mode"] = _enum(
                "citation_options.mode", opts["mode"], CITATION_MODES, upper=True, any_case=True
            )
    if "thinking" in req:
        _check_thinking(req["thinking"])
    if "documents" in req:
        _check_documents(req["documents"])
    if "tools" in req:
        _check_tools(req["tools"])
    if "tool_choice" in req:
        req["tool_choice"] = _enum(
            "tool_choice", req["tool_choice"], TOOL_CHOICES, upper=True, any_case=True
        )
        if req["tool_choice"] == "REQUIRED" and not req.get("tools"):
            raise _fail("tool_choice", "REQUIRED", "REQUIRED only together with tools; else NONE")
    if "response_format" in req:
        _check_response_format(req)
    if "safety_mode" in req:
        _check_safety_mode(req)
    _check_utf8(req)
    return cast(Request, req)


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
                raise _fail(
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
        raise _fail("stop_sequences", v, f"a list of at most {MAX_STOP_SEQUENCES} strings")
    for i, s in enumerate(v):
        _string(f"stop_sequences[{i}]", s, empty=False)


def _check_thinking(v: Any) -> None:
    th = _dict("thinking", v, "an object {type: enabled|disabled, token_budget?: int >= 1}")
    _keys("thinking", th, ("type", "token_budget"))
    if "type" not in th:
        raise _fail("thinking.type", None, "required: one of " + ", ".join(THINKING_TYPES))
    _enum("thinking.type", th["type"], THINKING_TYPES)
    if "token_budget" in th:
        _integer("thinking.token_budget", th["token_budget"], 1)


def _check_response_format(req: dict[str, Any]) -> None:
    rf = _dict(
        "response_format",
        req["response_format"],
        "an object {type: text} or {type: json_object, json_schema?: object}",
    )
    if "schema" in rf and "json_schema" not in rf:  # langchain-cohere's spelling, accepted live
        rf["json_schema"] = rf.pop("schema")
    _keys("response_format", rf, ("type", "json_schema"))
    if "type" not in rf:
        raise _fail("response_format.type", None, "required: one of text, json_object")
    kind = _enum("response_format.type", rf["type"], RESPONSE_FORMAT_TYPES)
    if kind == "text" and "json_schema" in rf:
        raise _fail("response_format.json_schema", rf["json_schema"], "only with type json_object")
    if "json_schema" in rf:
        _check_json_schema("response_format.json_schema", rf["json_schema"])
    if kind == "json_object":
        for other in ("documents", "tools"):
            if req.get(other):
                raise _fail(
                    "response_format",
                    rf,
                    f"json_object is not supported together with {other}; "
                    "drop documents/tools or use type text",
                )


def _check_json_schema(field: str, schema: Any) -> None:
    _dict(field, schema, "a JSON Schema object")
    try:  # jsonschema is optional; when present, use its meta-schema check
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for
    except ImportError:  # pragma: no cover - depends on the environment
        return
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        raise _fail(field, schema, f"a valid JSON Schema ({exc.message})") from None
    except Exception as exc:  # e.g. recursion on pathological input: still a bad schema
        raise _fail(field, schema, f"a valid JSON Schema ({type(exc).__name__})") from None


def _check_documents(docs: Any) -> None:
    if not isinstance(docs, list):
        raise _fail("documents", docs, "a list of strings or {id?, data} objects")
    for i, doc in enumerate(docs):
        _check_document(f"documents[{i}]", doc, allow_string=True)


def _check_document(field: str, doc: Any, *, allow_string: bool) -> None:
    if allow_string and isinstance(doc, str):
        if not doc:
            raise _fail(field, doc, "a non-empty string or an object {id?, data}")
        return
    what = (
        "a non-empty string or an object {id?, data}" if allow_string else "an object {id?, data}"
    )
    d = _dict(field, doc, what)
    _keys(field, d, ("id", "data"))
    if "data" not in d:
        raise _fail(f"{field}.data", None, "required: a non-empty object or string")
    data = d["data"]
    if not isinstance(data, (dict, str)) or not data:
        raise _fail(f"{field}.data", data, "a non-empty object or string")
    if "id" in d:
        _string(f"{field}.id", d["id"], empty=False)


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, list):
        raise _fail("tools", tools, "a list of {type: function, function: {...}} objects")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        f = f"tools[{i}]"
        t = _dict(f, tool, "an object {type: function, function: {name, description?, parameters}}")
        _keys(f, t, ("type", "function"))
        if t.get("type") != "function":
            raise _fail(f"{f}.type", t.get("type"), "function")
        fn = _dict(f"{f}.function", t.get("function"), "an object {name, description?, parameters}")
        _keys(f"{f}.function", fn, ("name", "description", "parameters"))
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _fail(
                f"{f}.function.name",
                name,
                "letters, digits and _ only, not starting with a digit ([A-Za-z_][A-Za-z0-9_]*)",
            )
        if name in seen:
            raise _fail(f"{f}.function.name", name, "a name not used by another tool")
        seen.add(name)
        if "description" in fn:
            _string(f"{f}.function.description", fn["description"])
        if "parameters" not in fn:
            raise _fail(f"{f}.function.parameters", None, "required: a JSON Schema object")
        _dict(f"{f}.function.parameters", fn["parameters"], "a JSON Schema object")


# -- messages ----------------------------------------------------------------------------------
def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _fail("messages", messages, "a non-empty list of message objects")
    call_ids: set[str] = set()
    for i, msg in enumerate(messages):
        f = f"messages[{i}]"
        m = _dict(f, msg, "an object with role system, user, assistant or tool")
        role = m.get("role")
        if role not in ROLES:
            raise _fail(f"{f}.role", role, "one of " + ", ".join(ROLES))
        _keys(f, m, _MESSAGE_KEYS[role])
        if role == "assistant":
            _check_assistant(f, m, call_ids)
            continue
        if role == "tool":
            tcid = m.get("tool_call_id")
            _string(f"{f}.tool_call_id", tcid, empty=False)
            if tcid not in call_ids:
                raise _fail(
                    f"{f}.tool_call_id",
                    tcid,
                    "the id of a tool call made by an earlier assistant message"
                    + (": " + ", ".join(sorted(call_ids)) if call_ids else " (there is none)"),
                )
        if "content" not in m:
            raise _fail(f"{f}.content", None, "required: a string or a list of content blocks")
        _check_content(f"{f}.content", m["content"], role)


def _check_assistant(f: str, m: dict[str, Any], call_ids: set[str]) -> None:
    if "content" in m:
        _check_content(f"{f}.content", m["content"], "assistant")
    if "tool_plan" in m:
        _string(f"{f}.tool_plan", m["tool_plan"])
    if "citations" in m:
        cits = m["citations"]
        if not isinstance(cits, list):
            raise _fail(f"{f}.citations", cits, "a list of citation objects")
        for j, c in enumerate(cits):
            _dict(f"{f}.citations[{j}]", c, "a citation object {start, end, text, sources}")
    if "tool_calls" not in m:
        return
    calls = m["tool_calls"]
    if not isinstance(calls, list):
        raise _fail(f"{f}.tool_calls", calls, "a list of tool call objects")
    for j, call in enumerate(calls):
        cf = f"{f}.tool_calls[{j}]"
        c = _dict(cf, call, "an object {id, type?: function, function: {name, arguments}}")
        _keys(cf, c, ("id", "type", "function"))
        _string(f"{cf}.id", c.get("id"), empty=False)
        if c["id"] in call_ids:
            raise _fail(f"{cf}.id", c["id"], "a tool call id not used before in the conversation")
        call_ids.add(c["id"])
        if "type" in c:
            if c["type"] != "function":
                raise _fail(f"{cf}.type", c["type"], "function (or omitted)")
        else:
            c["type"] = "function"  # documented leniency: fill in the spec's required value
        fn = _dict(f"{cf}.function", c.get("function"), "an object {name, arguments}")
        _keys(f"{cf}.function", fn, ("name", "arguments"))
        _string(f"{cf}.function.name", fn.get("name"), empty=False)
        if "arguments" in fn and not isinstance(fn["arguments"], str):
            raise _fail(
                f"{cf}.function.arguments", fn["arguments"], "a JSON-encoded string, e.g. '{}'"
            )


def _check_content(f: str, content: Any, role: str) -> None:
    if isinstance(content, str):
        return
    allowed = _BLOCK_TYPES[role]
    if not isinstance(content, list):
        raise _fail(f, content, "a string or a list of blocks of type " + ", ".join(allowed))
    for j, block in enumerate(content):
        bf = f"{f}[{j}]"
        b = _dict(bf, block, "a content block of type " + ", ".join(allowed))
        kind = b.get("type")
        if kind is None and role == "tool" and "document" in b:
            kind = b["type"] = "document"  # documented leniency (docs omit the type)
        if kind not in allowed:
            raise _fail(f"{bf}.type", kind, f"for a {role} message one of " + ", ".join(allowed))
        if kind == "text":
            _keys(bf, b, ("type", "text"))
            _string(f"{bf}.text", b.get("text"))
        elif kind == "thinking":
            _keys(bf, b, ("type", "thinking"))
            _string(f"{bf}.thinking", b.get("thinking"))
        elif kind == "image_url":
            _keys(bf, b, ("type", "image_url"))
            img = _dict(f"{bf}.image_url", b.get("image_url"), "an object {url, detail?}")
            _keys(f"{bf}.image_url", img, ("url", "detail"))
            _string(f"{bf}.image_url.url", img.get("url"), empty=False)
            if "detail" in img:
                _enum(f"{bf}.image_url.detail", img["detail"], IMAGE_DETAILS)
        else:  # document
            _keys(bf, b, ("type", "document"))
            _check_document(f"{bf}.document", b.get("document"), allow_string=False)


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
