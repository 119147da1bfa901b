"""The Cohere v2 chat wire format: request rules, SSE framing, stream events, accumulation.

Pure (no I/O) and cheap to import: only the stdlib is loaded here.
"""

from __future__ import annotations

from .accumulator import Accumulator
from .events import StreamBuilder, check_order, new_id, usage_dict
from .messages import add_usage, as_message, display_text, message_text
from .request import (
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
from .sse import DONE, SSEDecoder, decode_all, encode_event

__all__ = [
    "Accumulator",
    "StreamBuilder",
    "check_order",
    "new_id",
    "usage_dict",
    "validate_request",
    "normalize_documents",
    "message_text",
    "display_text",
    "as_message",
    "add_usage",
    "SAFETY_MODE_CONFLICT",
    "DEFAULTS",
    "RANGES",
    "SAFETY_MODES",
    "FINISH_REASONS",
    "CITATION_MODES",
    "TOOL_CHOICES",
    "PARAM_FIELDS",
    "ALLOWED_FIELDS",
    "SSEDecoder",
    "encode_event",
    "decode_all",
    "DONE",
]
