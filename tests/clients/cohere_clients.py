"""Run third-party Cohere v2 clients against a server; print one JSON object of results.

    python cohere_clients.py {langchain|litellm} BASE_URL MODEL [--force-tools]

Runs inside the clients' own virtualenv (see tests/server/test_clients.py), so it imports nothing from
nbchat. Each case records what the client returned (or the error it raised); the test asserts.
--force-tools asks for a tool call explicitly (tool_choice REQUIRED), for engines whose server
does not decide to call tools by itself.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

WEATHER_DOC = "Current weather of a city"
TOOL_RESULT = '{"temperature": "4C", "sky": "cloudy"}'
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": WEATHER_DOC,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
PERSON = {
    "title": "Person",
    "description": "A person",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def langchain(base: str, model: str, force: bool) -> dict[str, Any]:
    from langchain_cohere import ChatCohere
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    llm = ChatCohere(
        base_url=base, cohere_api_key="test-key", model=model, max_tokens=24, temperature=0.3
    )
    out: dict[str, Any] = {}

    def invoke() -> dict[str, Any]:
        r = llm.invoke("Say hello to Ada.")
        return {
            "content": r.content,
            "finish_reason": r.response_metadata.get("finish_reason"),
            "usage": dict(r.usage_metadata or {}),
        }

    def stream() -> dict[str, Any]:
        chunks = list(llm.stream("Say hello to Ada."))
        texts = [c.content for c in chunks if isinstance(c.content, str)]
        return {
            "chunks": len(chunks),
            "text_chunks": sum(1 for t in texts if t),
            "text": "".join(texts),
        }

    @tool
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        return TOOL_RESULT

    def tools() -> dict[str, Any]:
        kw = {"tool_choice": "REQUIRED"} if force else {}
        with_tools = llm.bind(max_tokens=100).bind_tools([get_weather], **kw)
        question = HumanMessage("What is the weather in Oslo?")
        ai = with_tools.invoke([question])
        calls = [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in ai.tool_calls]
        follow = [question, ai] + [
            ToolMessage(content=TOOL_RESULT, tool_call_id=c["id"]) for c in ai.tool_calls
        ]
        final = llm.bind(max_tokens=40).bind_tools([get_weather]).invoke(follow)
        return {
            "calls": calls,
            "final_content": final.content,
            "final_calls": len(final.tool_calls),
            "final_finish_reason": final.response_metadata.get("finish_reason"),
        }

    def structured() -> dict[str, Any]:
        r = llm.bind(max_tokens=60).with_structured_output(PERSON).invoke("Ada is 36 years old.")
        return {"value": r}

    for name, case in [
        ("invoke", invoke),
        ("stream", stream),
        ("tools", tools),
        ("structured", structured),
    ]:
        out[name] = _run(case)
    return out


def litellm_cases(base: str, model: str, force: bool) -> dict[str, Any]:
    import litellm

    kw: dict[str, Any] = {
        "model": f"cohere_chat/{model}",
        "api_base": base + "/v2/chat",
        "api_key": "test-key",
        "max_tokens": 24,
        "temperature": 0.3,
    }
    hello = [{"role": "user", "content": "Say hello to Ada."}]
    out: dict[str, Any] = {}

    def completion() -> dict[str, Any]:
        r = litellm.completion(messages=hello, **kw)
        return {
            "content": r.choices[0].message.content,
            "finish_reason": r.choices[0].finish_reason,
            "usage": {
                "prompt_tokens": r.usage.prompt_tokens,
                "completion_tokens": r.usage.completion_tokens,
            },
        }

    def stream() -> dict[str, Any]:
        parts = [
            c.choices[0].delta.content or ""
            for c in litellm.completion(messages=hello, stream=True, **kw)
        ]
        return {
            "chunks": len(parts),
            "text_chunks": sum(1 for p in parts if p),
            "text": "".join(parts),
        }

    def tools() -> dict[str, Any]:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": "What is the weather in Oslo?"}
        ]
        extra = {"tool_choice": "required"} if force else {}
        r = litellm.completion(
            messages=messages, tools=OPENAI_TOOLS, **{**kw, "max_tokens": 100}, **extra
        )
        m = r.choices[0].message
        calls = list(m.tool_calls or [])
        # the assistant turn as an OpenAI message; built by hand because litellm's own dump adds
        # an `index` to each call, which Cohere's API (and nbchat serve) reject as unknown
        messages.append(
            {
                "role": "assistant",
                "content": m.content,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in calls
                ],
            }
        )
        messages += [{"role": "tool", "tool_call_id": c.id, "content": TOOL_RESULT} for c in calls]
        final = litellm.completion(
            messages=messages, tools=OPENAI_TOOLS, **{**kw, "max_tokens": 40}
        )
        fm = final.choices[0].message
        return {
            "calls": [
                {"name": c.function.name, "arguments": c.function.arguments, "id": c.id}
                for c in calls
            ],
            "final_content": fm.content,
            "final_calls": len(fm.tool_calls or []),
            "final_finish_reason": final.choices[0].finish_reason,
        }

    for name, case in [("completion", completion), ("stream", stream), ("tools", tools)]:
        out[name] = _run(case)
    return out


def _run(case: Any) -> dict[str, Any]:
    try:
        return {"ok": True, **case()}
    except Exception as exc:  # reported to the test, which fails naming the case
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc()[-3000:],
        }


if __name__ == "__main__":
    lib, base, model = sys.argv[1:4]
    force = "--force-tools" in sys.argv
    result = (
        langchain(base, model, force) if lib == "langchain" else litellm_cases(base, model, force)
    )
    print(json.dumps(result, default=str))
