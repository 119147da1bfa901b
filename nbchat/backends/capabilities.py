"""What a backend's model can take: images and reasoning, refused honestly when it cannot.

A model that cannot see must not answer an image question with an invented description, and one
that cannot reason must not pretend to: `refuse_unsupported` raises a `ValidationError` naming the
field and the model before anything is generated. ``thinking: {type: disabled}`` is accepted
everywhere (some clients always send it). `capabilities` tells the notebook (flags, panel) what
to offer and why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError

__all__ = ["Capabilities", "capabilities", "refuse_unsupported"]

REASONING_EXAMPLE = "command-a-reasoning-08-2025"
VISION_EXAMPLE = "command-a-vision-07-2025"


@dataclass(frozen=True)
class Capabilities:
    """`images`/`thinking`: whether the backend can take them; `reason`: why not (else "")."""

    images: bool = True
    thinking: bool = True
    reason: str = ""


def capabilities(backend: Any, model: str | None = None) -> Capabilities:
    """What `backend` (a Backend or a backend name) can take for `model`.

    The embedded engine's model neither sees nor reasons. A hosted or OpenAI-compatible server
    decides per model and answers an unsupported request with its own error, so nbchat offers
    both there and passes them through.
    """
    name = backend if isinstance(backend, str) else getattr(backend, "name", "")
    if name == "local":
        shown = model or "smollm2-135m"
        return Capabilities(
            images=False,
            thinking=False,
            reason=f"the embedded model {shown} cannot see images or reason",
        )
    return Capabilities()


def refuse_unsupported(
    request: dict[str, Any], model: str, *, images: bool = False, thinking: bool = False
) -> None:
    """Raise a ValidationError for the first input `model` cannot take (nothing is dropped).

    `images` / `thinking`: whether the model can take ``image_url`` blocks / ``thinking:
    {type: enabled}``.
    """
    th = request.get("thinking")
    if not thinking and isinstance(th, dict) and th.get("type") == "enabled":
        raise ValidationError(
            "thinking.type",
            "enabled",
            "disabled",
            message=f"invalid thinking.type: 'enabled' is not supported by the model {model!r}, "
            f"which cannot reason; allowed: disabled (or use a reasoning model such as "
            f"{REASONING_EXAMPLE})",
        )
    if images:
        return
    for i, msg in enumerate(request.get("messages") or ()):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if isinstance(block, dict) and block.get("type") == "image_url":
                raise ValidationError(
                    f"messages[{i}].content[{j}].type",
                    "image_url",
                    "text",
                    message=f"invalid messages[{i}].content[{j}].type: 'image_url' is not "
                    f"supported by the model {model!r}, which cannot see images; allowed: "
                    f"text (or use a vision model such as {VISION_EXAMPLE})",
                )
