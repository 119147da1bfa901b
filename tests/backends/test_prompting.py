"""The engine's prompt (no model needed): safety modes, documents, tools, ChatML."""

from __future__ import annotations

from nbchat.backends.prompting import (
    SAFETY_INSTRUCTIONS,
    build_system_prompt,
    render_chatml,
    to_chat_messages,
)

USER = [{"role": "user", "content": "hi"}]


def test_safety_modes_change_the_prompt() -> None:
    default = build_system_prompt({"messages": USER})
    contextual = build_system_prompt({"messages": USER, "safety_mode": "CONTEXTUAL"})
    strict = build_system_prompt({"messages": USER, "safety_mode": "STRICT"})
    off = build_system_prompt({"messages": USER, "safety_mode": "OFF"})
    assert default == contextual == SAFETY_INSTRUCTIONS["CONTEXTUAL"]  # v2 default
    assert strict == SAFETY_INSTRUCTIONS["STRICT"] != contextual
    assert off == ""
    assert "safety" not in render_chatml(to_chat_messages({"messages": USER, "safety_mode": "OFF"}))


def test_no_injected_default_system_prompt() -> None:
    text = render_chatml(to_chat_messages({"messages": USER, "safety_mode": "OFF"}))
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert "SmolLM" not in text


def test_system_message_merged_first() -> None:
    req = {
        "messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, *USER],
        "safety_mode": "STRICT",
    }
    msgs = to_chat_messages(req)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"].startswith("Be brief.\n\nYou are in strict safety mode.")


def test_documents_and_json_sections() -> None:
    req = {
        "messages": USER,
        "safety_mode": "OFF",
        "documents": ["Penguins live in Antarctica.", {"id": "x", "data": {"title": "T", "n": 3}}],
    }
    sp = build_system_prompt(req)
    assert "Document doc:0\ntext: Penguins live in Antarctica." in sp
    assert "Document x\ntitle: T\nn: 3" in sp
    js = build_system_prompt(
        {
            "messages": USER,
            "safety_mode": "OFF",
            "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
        }
    )
    assert "JSON" in js and '{"type": "object"}' in js


def test_tools_listed_only_when_included_and_history_rendered() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [
        *USER,
        {
            "role": "assistant",
            "tool_plan": "I will check.",
            "tool_calls": [
                {
                    "id": "get_weather_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "get_weather_1", "content": '{"temp": "20C"}'},
    ]
    req = {"messages": messages, "tools": tools, "safety_mode": "OFF"}
    with_tools = to_chat_messages(req)
    without = to_chat_messages(req, include_tools=False)
    assert "get_weather: weather of a city" in with_tools[0]["content"]
    # the tool round is data in the system turn, never the call format the model would continue
    system = without[0]["content"]
    assert "## Tools" not in system
    assert 'Document get_weather_1:0, result of get_weather {"city": "Paris"}\ntemp: 20C' in system
    assert [m["role"] for m in without] == ["system", "user"]
    for rendered in (with_tools, without):
        history = "".join(m["content"] for m in rendered[1:])
        assert "<tool_call>" not in history and "Plan:" not in history
    # an assistant turn with text keeps its text (only plan and calls are dropped)
    messages[1]["content"] = "Let me look."
    assert to_chat_messages(req, include_tools=False)[2] == {
        "role": "assistant",
        "content": "Let me look.",
    }
