"""Where events come from: Cohere's hosted API or any v2 endpoint, the embedded engine,
or an OpenAI-compatible server. Every backend yields the same v2 stream events.

Names, construction and the model policy live in `registry` (re-exported here).
"""

from __future__ import annotations

from .base import Backend, Cancel, collect
from .registry import (
    COHERE_MODEL,
    ENTRY_POINT_GROUP,
    LOCAL_MODEL,
    backend_names,
    default_model,
    get_backend,
    has_cohere_key,
    register_backend,
    resolve_model,
    resolve_name,
)

__all__ = [
    "Backend",
    "Cancel",
    "collect",
    "get_backend",
    "register_backend",
    "backend_names",
    "resolve_name",
    "default_model",
    "resolve_model",
    "has_cohere_key",
    "ENTRY_POINT_GROUP",
    "LOCAL_MODEL",
    "COHERE_MODEL",
]
