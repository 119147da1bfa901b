"""Where events come from: Cohere's hosted API or any v2 endpoint, the embedded engine,
or an OpenAI-compatible server. Every backend yields the same v2 stream events."""

from __future__ import annotations

import os
from typing import Any

from .base import Backend, Cancel, collect

__all__ = [
    "Backend",
    "Cancel",
    "collect",
    "get_backend",
    "default_model",
    "resolve_model",
    "BACKENDS",
]

BACKENDS = ("auto", "cohere", "v2", "local", "openai")
LOCAL_MODEL = "smollm2-135m"
COHERE_MODEL = "command-a-03-2025"


def has_cohere_key() -> bool:
    return bool(os.environ.get("CO_API_KEY") or os.environ.get("COHERE_API_KEY"))


def resolve_name(name: str | None) -> str:
    """'auto' (or None) means Cohere's hosted API when a key is set, else the embedded engine."""
    name = (name or "auto").lower()
    if name not in BACKENDS:
        from ..errors import ValidationError

        raise ValidationError("backend", name, ", ".join(BACKENDS))
    if name == "auto":
        return "cohere" if has_cohere_key() else "local"
    return name


def default_model(name: str | None = None) -> str:
    name = resolve_name(name)
    if name == "local":
        return LOCAL_MODEL
    if name == "openai":
        return os.environ.get("NBCHAT_OPENAI_MODEL", "")
    if name == "v2":  # any v2 host (e.g. nbchat serve): resolve_model asks it
        return ""
    return COHERE_MODEL


def get_backend(
    name: str | None = None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    **options: Any,
) -> Backend:
    """Build a backend by name (see BACKENDS). Options go to the backend's constructor."""
    name = resolve_name(name)
    if name in ("cohere", "v2"):
        from .cohere import Client

        client = Client(api_key=api_key, base_url=base_url, **options)
        if name == "v2":
            client.name = "v2"  # another host than Cohere's: its model list is what it serves
        return client
    if name == "local":
        from .local import LocalBackend

        if model and model != LOCAL_MODEL and model.endswith(".gguf"):
            options.setdefault("model_path", model)
        return LocalBackend(**options)
    from .openai import OpenAIBackend

    return OpenAIBackend(base_url=base_url, api_key=api_key, model=model, **options)


def resolve_model(backend: Backend, model: str | None = None) -> str:
    """The model to request: the one given, else the backend's own, else its default.

    An OpenAI-compatible server with no configured model is asked for its list (vLLM and
    llama.cpp serve one model, so its first entry is the one users mean).
    """
    if model:
        return model
    own = getattr(backend, "model", None)
    if own:
        return str(own)
    name = getattr(backend, "name", None)
    if name in ("openai", "v2"):
        ids = backend.models()
        if not ids and name == "v2":  # e.g. a proxy to Cohere that lists nothing
            ids = [COHERE_MODEL]
        if not ids:
            from ..errors import ValidationError

            raise ValidationError(
                "model",
                "",
                "a model name: the server lists none; set NbChat.model or -m",
            )
        backend.model = ids[0]  # type: ignore[attr-defined]
        return ids[0]
    return default_model(name)
