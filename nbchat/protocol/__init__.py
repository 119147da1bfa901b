"""The Cohere v2 chat wire format: request rules, SSE framing, stream events, accumulation.

Pure (no I/O) and cheap to import: names load lazily (PEP 562), so importing one submodule
(``protocol.request`` for the flag table) does not load the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Accumulator": "accumulator",
    "StreamBuilder": "events",
    "check_order": "events",
    "new_id": "events",
    "usage_dict": "events",
    "message_text": "messages",
    "display_text": "messages",
    "thinking_text": "messages",
    "as_message": "messages",
    "add_usage": "messages",
    "output_tokens": "messages",
    "validate_request": "request",
    "normalize_documents": "request",
    "ALLOWED_FIELDS": "request",
    "CITATION_MODES": "request",
    "DEFAULTS": "request",
    "FINISH_REASONS": "request",
    "PARAM_FIELDS": "request",
    "RANGES": "request",
    "SAFETY_MODE_CONFLICT": "request",
    "SAFETY_MODES": "request",
    "TOOL_CHOICES": "request",
    "DONE": "sse",
    "SSEDecoder": "sse",
    "decode_all": "sse",
    "encode_event": "sse",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .accumulator import Accumulator  # noqa: F401
    from .events import StreamBuilder, check_order, new_id, usage_dict  # noqa: F401
    from .messages import (  # noqa: F401
        add_usage,
        as_message,
        display_text,
        message_text,
        output_tokens,
        thinking_text,
    )
    from .request import (  # noqa: F401
        ALLOWED_FIELDS,
        CITATION_MODES,
        DEFAULTS,
        FINISH_REASONS,
        PARAM_FIELDS,
        RANGES,
        SAFETY_MODE_CONFLICT,
        SAFETY_MODES,
        TOOL_CHOICES,
        normalize_documents,
        validate_request,
    )
    from .sse import DONE, SSEDecoder, decode_all, encode_event  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbchat.protocol' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
