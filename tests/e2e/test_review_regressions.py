"""Regressions found in review: each test failed before its fix.

Real parts only: the recorded-stream v2 test server on 127.0.0.1 (`tests/v2server.py`), the
real `nbchat.Client`, `Conversation` and runner.
"""

from __future__ import annotations

import pytest
from v2server import V2Server, error_reply, fixture_body, sse

from nbchat import Client, Conversation


def test_tool_returning_empty_dict_does_not_fail_the_turn() -> None:
    """A Python tool that returns {} (or a list with an empty dict) is a valid answer; the
    next round's request must still pass validation (data: {} is not a valid document)."""

    def magic_function(input: int) -> dict:
        """Applies a magic function to an input.

        Args:
            input: Number to apply the magic function to.
        """
        return {}

    with V2Server() as srv:
        srv.push(
            sse(fixture_body("lc_h20241115_agent_stream_call01")),
            sse(fixture_body("lc_h20241115_agent_stream_call02")),
        )
        conv = Conversation()
        turn = conv.send(
            "what is magic_function(3)?",
            backend=Client(api_key="k-test", base_url=srv.url, max_retries=0),
            model="command-r",
            tools=[magic_function],
        )
        assert turn.status == "complete", turn.error
        assert [m["role"] for m in turn.output] == ["assistant", "tool", "assistant"]
        assert len(srv.requests) == 2
        sent_tool = srv.requests[1].json["messages"][-1]
        assert sent_tool["role"] == "tool"
        assert sent_tool["content"][0]["document"]["data"]  # never an empty object


def test_send_uses_the_backend_model_when_no_model_is_given(monkeypatch) -> None:
    """README: ``get_backend("openai", base_url=..., model=...)``; a turn sent on it without a
    ``model`` param must use that model, not fail validation with model ''."""
    monkeypatch.delenv("NBCHAT_OPENAI_MODEL", raising=False)
    from nbchat import APIError, get_backend

    with V2Server() as srv:
        srv.push(error_reply(400, "stop here"))
        backend = get_backend("openai", base_url=srv.url + "/v1", model="qwen-test", max_retries=0)
        conv = Conversation()
        with pytest.raises(APIError):
            conv.send("hi", backend=backend)
        assert srv.last.path == "/v1/chat/completions"
        assert srv.last.json["model"] == "qwen-test"
        assert conv.turns[-1].params["model"] == "qwen-test"
