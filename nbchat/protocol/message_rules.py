"""The rules for ``messages`` (and documents inside them) of a v2 chat request."""

from __future__ import annotations

from typing import Any

from .checks import as_dict, enum, fail, keys, string

__all__ = ["ROLES", "IMAGE_DETAILS", "check_messages", "check_document"]

ROLES = ("system", "user", "assistant", "tool")
IMAGE_DETAILS = ("auto", "low", "high")
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


def check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise fail("messages", messages, "a non-empty list of message objects")
    call_ids: set[str] = set()
    for i, msg in enumerate(messages):
        f = f"messages[{i}]"
        m = as_dict(f, msg, "an object with role system, user, assistant or tool")
        role = m.get("role")
        if role not in ROLES:
            raise fail(f"{f}.role", role, "one of " + ", ".join(ROLES))
        keys(f, m, _MESSAGE_KEYS[role])
        if role == "assistant":
            _check_assistant(f, m, call_ids)
            continue
        if role == "tool":
            tcid = m.get("tool_call_id")
            string(f"{f}.tool_call_id", tcid, empty=False)
            if tcid not in call_ids:
                raise fail(
                    f"{f}.tool_call_id",
                    tcid,
                    "the id of a tool call made by an earlier assistant message"
                    + (": " + ", ".join(sorted(call_ids)) if call_ids else " (there is none)"),
                )
        if "content" not in m:
            raise fail(f"{f}.content", None, "required: a string or a list of content blocks")
        _check_content(f"{f}.content", m["content"], role)


def _check_assistant(f: str, m: dict[str, Any], call_ids: set[str]) -> None:
    if "content" in m:
        _check_content(f"{f}.content", m["content"], "assistant")
    if "tool_plan" in m:
        string(f"{f}.tool_plan", m["tool_plan"])
    if "citations" in m:
        cits = m["citations"]
        if not isinstance(cits, list):
            raise fail(f"{f}.citations", cits, "a list of citation objects")
        for j, c in enumerate(cits):
            as_dict(f"{f}.citations[{j}]", c, "a citation object {start, end, text, sources}")
    if "tool_calls" not in m:
        return
    calls = m["tool_calls"]
    if not isinstance(calls, list):
        raise fail(f"{f}.tool_calls", calls, "a list of tool call objects")
    for j, call in enumerate(calls):
        cf = f"{f}.tool_calls[{j}]"
        c = as_dict(cf, call, "an object {id, type?: function, function: {name, arguments}}")
        keys(cf, c, ("id", "type", "function"))
        string(f"{cf}.id", c.get("id"), empty=False)
        if c["id"] in call_ids:
            raise fail(f"{cf}.id", c["id"], "a tool call id not used before in the conversation")
        call_ids.add(c["id"])
        if "type" in c:
            if c["type"] != "function":
                raise fail(f"{cf}.type", c["type"], "function (or omitted)")
        else:
            c["type"] = "function"  # documented leniency: fill in the spec's required value
        fn = as_dict(f"{cf}.function", c.get("function"), "an object {name, arguments}")
        keys(f"{cf}.function", fn, ("name", "arguments"))
        string(f"{cf}.function.name", fn.get("name"), empty=False)
        if "arguments" in fn and not isinstance(fn["arguments"], str):
            raise fail(
                f"{cf}.function.arguments", fn["arguments"], "a JSON-encoded string, e.g. '{}'"
            )


def _check_content(f: str, content: Any, role: str) -> None:
    if isinstance(content, str):
        return
    allowed = _BLOCK_TYPES[role]
    if not isinstance(content, list):
        raise fail(f, content, "a string or a list of blocks of type " + ", ".join(allowed))
    for j, block in enumerate(content):
        bf = f"{f}[{j}]"
        b = as_dict(bf, block, "a content block of type " + ", ".join(allowed))
        kind = b.get("type")
        if kind is None and role == "tool" and "document" in b:
            kind = b["type"] = "document"  # documented leniency (docs omit the type)
        if kind not in allowed:
            raise fail(f"{bf}.type", kind, f"for a {role} message one of " + ", ".join(allowed))
        if kind == "text":
            keys(bf, b, ("type", "text"))
            string(f"{bf}.text", b.get("text"))
        elif kind == "thinking":
            keys(bf, b, ("type", "thinking"))
            string(f"{bf}.thinking", b.get("thinking"))
        elif kind == "image_url":
            keys(bf, b, ("type", "image_url"))
            img = as_dict(f"{bf}.image_url", b.get("image_url"), "an object {url, detail?}")
            keys(f"{bf}.image_url", img, ("url", "detail"))
            string(f"{bf}.image_url.url", img.get("url"), empty=False)
            if "detail" in img:
                enum(f"{bf}.image_url.detail", img["detail"], IMAGE_DETAILS)
        else:  # document
            keys(bf, b, ("type", "document"))
            check_document(f"{bf}.document", b.get("document"), allow_string=False)


def check_document(field: str, doc: Any, *, allow_string: bool) -> None:
    if allow_string and isinstance(doc, str):
        if not doc:
            raise fail(field, doc, "a non-empty string or an object {id?, data}")
        return
    what = (
        "a non-empty string or an object {id?, data}" if allow_string else "an object {id?, data}"
    )
    d = as_dict(field, doc, what)
    keys(field, d, ("id", "data"))
    if "data" not in d:
        raise fail(f"{field}.data", None, "required: a non-empty object or string")
    data = d["data"]
    if not isinstance(data, (dict, str)) or not data:
        raise fail(f"{field}.data", data, "a non-empty object or string")
    if "id" in d:
        string(f"{field}.id", d["id"], empty=False)
