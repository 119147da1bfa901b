"""v2 request -> OpenAI chat-completions body (pure; the mapping is documented in the package)."""

from __future__ import annotations

import json
from typing import Any


# -- request translation (pure) -------------------------------------------------------------------
def _text_of(content: Any) -> str:
    from ...protocol.request import message_text

    return message_text({"content": content})


def _user_content(content: Any) -> Any:
    """Plain text, or OpenAI content parts when images are present."""
    if isinstance(content, str) or content is None:
        return content or ""
    if not any(isinstance(b, dict) and b.get("type") == "image_url" for b in content):
        return _text_of(content)
    parts: list[dict[str, Any]] = []
    for b in content:
        if b.get("type") == "image_url":
            parts.append({"type": "image_url", "image_url": dict(b.get("image_url") or {})})
        elif b.get("type", "text") == "text":
            parts.append({"type": "text", "text": str(b.get("text") or "")})
    return parts


def _tool_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    pieces = []
    for b in content or ():
        if not isinstance(b, dict):
            continue
        if "document" in b:
            data = (b.get("document") or {}).get("data")
            pieces.append(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))
        elif isinstance(b.get("text"), str):
            pieces.append(b["text"])
    return "\n".join(pieces)


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    from ..prompting import build_system_prompt

    out: list[dict[str, Any]] = []
    # Tools travel natively, so the system text leaves the engine's tool section out.
    system = build_system_prompt(request, include_tools=False)
    if system:
        out.append({"role": "system", "content": system})
    for m in request.get("messages") or ():
        role = m.get("role")
        if role == "system":
            continue  # merged into the one system message above
        if role == "user":
            out.append({"role": "user", "content": _user_content(m.get("content"))})
        elif role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": _text_of(m.get("content"))}
            calls = m.get("tool_calls") or []
            if calls:
                msg["tool_calls"] = [
                    {
                        "id": c.get("id"),
                        "type": "function",
                        "function": {
                            "name": (c.get("function") or {}).get("name", ""),
                            "arguments": (c.get("function") or {}).get("arguments") or "{}",
                        },
                    }
                    for c in calls
                ]
                # a pure tool-call turn: "" (OpenAI also takes null, llama-cpp-python does not)
            out.append(msg)
        elif role == "tool":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": m.get("tool_call_id"),
                    "content": _tool_content(m.get("content")),
                }
            )
    return out


def to_openai_request(
    request: dict[str, Any],
    model: str,
    *,
    send_top_k: bool = True,
    response_format_style: str = "openai",
) -> dict[str, Any]:
    """The OpenAI chat-completions body for a validated v2 request (see the module docstring)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": _messages(request),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if "temperature" in request:
        body["temperature"] = request["temperature"]
    if "p" in request:
        body["top_p"] = request["p"]
    if "k" in request and send_top_k:
        body["top_k"] = (
            request["k"] if request["k"] > 0 else -1
        )  # -1: "disabled" for vLLM/llama.cpp
    for name in ("frequency_penalty", "presence_penalty", "seed", "max_tokens"):
        if request.get(name) is not None:
            body[name] = request[name]  # penalties: identity, see the module docstring
    if request.get("stop_sequences"):
        body["stop"] = list(request["stop_sequences"])
    if request.get("logprobs"):
        body["logprobs"] = True
        body["top_logprobs"] = 1
    tools = request.get("tools") or []
    if tools:
        strict = bool(request.get("strict_tools"))
        body["tools"] = []
        for t in tools:
            fn = dict(t.get("function") or {})
            out_fn: dict[str, Any] = {"name": fn.get("name", "")}
            if fn.get("description"):
                out_fn["description"] = fn["description"]
            out_fn["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
            if strict:
                out_fn["strict"] = True
            body["tools"].append({"type": "function", "function": out_fn})
    choice = request.get("tool_choice")
    if choice == "NONE":
        body["tool_choice"] = "none"
    elif choice == "REQUIRED":
        if len(tools) == 1:
            name = (tools[0].get("function") or {}).get("name", "")
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        else:
            body["tool_choice"] = "required"
    rf = request.get("response_format") or {}
    if rf.get("type") == "json_object":
        schema = rf.get("json_schema")
        if not schema:
            body["response_format"] = {"type": "json_object"}
        elif response_format_style == "llama.cpp":
            body["response_format"] = {"type": "json_object", "schema": schema}
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema},
            }
    return body
