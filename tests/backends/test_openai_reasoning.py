"""Reasoning on OpenAI-compatible servers: reasoning deltas -> v2 thinking, thinking -> template kwargs."""

from __future__ import annotations

from nbchat.backends.reasoning import openai_thinking_fields, reasoning_piece


def test_reasoning_piece_reads_vllm_llama_cpp_and_ollama_shapes():
    assert reasoning_piece({"reasoning_content": "Let me"}) == "Let me"  # vLLM, llama.cpp
    assert reasoning_piece({"reasoning": " think"}) == " think"  # newer vLLM, Ollama
    # a server sending both (vLLM during the rename) is read once
    assert reasoning_piece({"reasoning_content": "a", "reasoning": "a"}) == "a"
    for delta in ({"content": "answer"}, {"reasoning_content": None}, {"reasoning": ""}, {}):
        assert reasoning_piece(delta) is None


def test_thinking_maps_to_chat_template_kwargs():
    off = openai_thinking_fields({"type": "disabled"}, "http://127.0.0.1:8000")
    assert off == {"chat_template_kwargs": {"enable_thinking": False, "thinking": False}}
    on = openai_thinking_fields({"type": "enabled", "token_budget": 512}, "http://h:8000")
    assert on == {"chat_template_kwargs": {"enable_thinking": True, "thinking": True}}
    assert openai_thinking_fields(None) == {}
    # api.openai.com rejects unknown fields: nothing is sent there
    assert openai_thinking_fields({"type": "disabled"}, "https://api.openai.com") == {}
