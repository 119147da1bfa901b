"""Reasoning on OpenAI-compatible servers, mapped to and from v2 ``thinking``. Pure: no I/O.

Response: servers with a reasoning parser stream the model's thinking apart from its answer,
as ``delta.reasoning_content`` (vLLM's reasoning parsers, llama.cpp's server with
``--reasoning-format deepseek``, DeepSeek's API) or ``delta.reasoning`` (newer vLLM, Ollama,
OpenRouter). `reasoning_piece` reads either (``reasoning_content`` first, so a server that
sends both is not read twice); the backend streams it as a v2 thinking block.

Request: there is no OpenAI field to switch thinking. Reasoning chat templates read a template
variable, which vLLM, SGLang and llama.cpp's server (``--jinja``) take per request in
``chat_template_kwargs``: Qwen3 reads ``enable_thinking``, Granite and DeepSeek-V3.1 read
``thinking``; a template ignores the variable it does not know, so `openai_thinking_fields`
sets both. ``thinking.token_budget`` has no common equivalent and is not sent.
api.openai.com rejects unknown fields, so nothing is sent there (its reasoning models always
reason).
"""

from __future__ import annotations

from typing import Any

__all__ = ["reasoning_piece", "openai_thinking_fields"]


def reasoning_piece(delta: dict[str, Any]) -> str | None:
    """The reasoning text of one OpenAI stream ``choices[0].delta``, or None."""
    for key in ("reasoning_content", "reasoning"):
        piece = delta.get(key)
        if isinstance(piece, str) and piece:
            return piece
    return None


def openai_thinking_fields(thinking: Any, base_url: str = "") -> dict[str, Any]:
    """Body fields for a v2 ``thinking`` object on an OpenAI-compatible server (may be {})."""
    if not isinstance(thinking, dict) or "api.openai.com" in base_url:
        return {}
    kind = thinking.get("type")
    if kind not in ("enabled", "disabled"):
        return {}
    on = kind == "enabled"
    return {"chat_template_kwargs": {"enable_thinking": on, "thinking": on}}
