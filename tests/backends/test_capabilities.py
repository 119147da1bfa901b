"""Honest refusals: a model that cannot see or reason says so, naming the field and the model."""

from __future__ import annotations

import copy

import pytest

from nbchat.backends.capabilities import Capabilities, capabilities, refuse_unsupported
from nbchat.errors import ValidationError

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}}


def _req(**extra):
    return {
        "model": "smollm2-135m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "what is this?"}, IMAGE]},
        ],
        **extra,
    }


def test_image_refused_naming_the_block_and_the_model():
    req = _req()
    before = copy.deepcopy(req)
    with pytest.raises(ValidationError) as err:
        refuse_unsupported(req, "smollm2-135m")
    assert err.value.field == "messages[2].content[1].type"
    assert "image_url" in str(err.value) and "'smollm2-135m'" in str(err.value)
    assert "cannot see images" in str(err.value)
    assert req == before  # nothing changed, nothing dropped


def test_thinking_enabled_refused_naming_the_field_and_the_model():
    req = _req(thinking={"type": "enabled", "token_budget": 100})
    with pytest.raises(ValidationError) as err:
        refuse_unsupported(req, "smollm2-135m", images=True)
    assert err.value.field == "thinking.type"
    assert "'smollm2-135m'" in str(err.value) and "cannot reason" in str(err.value)
    assert err.value.allowed == "disabled"


def test_thinking_disabled_and_text_only_accepted():
    req = _req(thinking={"type": "disabled"})
    req["messages"][2]["content"] = [{"type": "text", "text": "plain"}]
    refuse_unsupported(req, "smollm2-135m")
    refuse_unsupported(_req(thinking={"type": "enabled"}), "m", images=True, thinking=True)


def test_capabilities_per_backend():
    local = capabilities("local")
    assert (local.images, local.thinking) == (False, False)
    assert "smollm2-135m" in local.reason
    for name in ("cohere", "v2", "openai"):
        assert capabilities(name) == Capabilities(images=True, thinking=True, reason="")
