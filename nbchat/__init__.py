"""nbchat: chat with Cohere v2 models (or an embedded offline model) from Jupyter.

``%load_ext nbchat`` registers the ``%%chat`` magic. The public names below are resolved
lazily (PEP 562) so that importing nbchat, and loading the extension, stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "nbchat.backends.cohere",
    "ChatStream": "nbchat.backends.cohere",
    "Conversation": "nbchat.conversation",
    "Turn": "nbchat.conversation",
    "Panel": "nbchat.notebook.panel",
    "validate_request": "nbchat.protocol.request",
    "Accumulator": "nbchat.protocol.accumulator",
    "Cancel": "nbchat.backends.base",
    "get_backend": "nbchat.backends",
    "register_backend": "nbchat.backends",
    "build_request": "nbchat.compose",
    "Composed": "nbchat.compose",
    "NbChatError": "nbchat.errors",
    "ValidationError": "nbchat.errors",
    "APIError": "nbchat.errors",
    "ConnectionError": "nbchat.errors",
    "StreamError": "nbchat.errors",
    "EngineError": "nbchat.errors",
    "Cancelled": "nbchat.errors",
}

__all__ = sorted([*_LAZY, "__version__", "load_ipython_extension", "unload_ipython_extension"])

if TYPE_CHECKING:  # pragma: no cover
    from .backends import get_backend, register_backend  # noqa: F401
    from .backends.base import Cancel  # noqa: F401
    from .backends.cohere import ChatStream, Client  # noqa: F401
    from .compose import Composed, build_request  # noqa: F401
    from .conversation import Conversation, Turn  # noqa: F401
    from .errors import (  # noqa: F401
        APIError,
        Cancelled,
        ConnectionError,
        EngineError,
        NbChatError,
        StreamError,
        ValidationError,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbchat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext nbchat``: register the magics."""
    from .notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)
