"""Which backends exist, how one is built, and which model a request names: in one place.

* ``register_backend(name, factory, default_model=None)`` adds a backend. A factory is called
  as ``factory(**options)`` with the keyword options given to `get_backend` (``model``,
  ``base_url``, ``api_key`` only when not None) and returns a `Backend`.
* Third-party packages register through the ``nbchat.backends`` entry-point group
  (``[project.entry-points."nbchat.backends"] echo = "my_pkg:EchoBackend"``); the group is
  read lazily, the first time a name is looked up that is not built in. A factory's
  ``default_model`` attribute, when it has one, is that backend's default model.
* ``get_backend(name, **options)`` builds a backend and never changes it afterwards.
* ``resolve_model(backend, model)`` is THE model policy; every caller uses it (see there).

``"auto"`` means Cohere's hosted API when a key is set (``CO_API_KEY``/``COHERE_API_KEY``),
else the embedded engine.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import ValidationError
from .base import Backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOCAL_MODEL",
    "COHERE_MODEL",
    "BackendFactory",
    "register_backend",
    "unregister_backend",
    "rescan_entry_points",
    "backend_names",
    "resolve_name",
    "get_backend",
    "default_model",
    "resolve_model",
    "has_cohere_key",
]

ENTRY_POINT_GROUP = "nbchat.backends"
LOCAL_MODEL = "smollm2-135m"
COHERE_MODEL = "command-a-03-2025"
AUTO = "auto"

BackendFactory = Callable[..., Backend]

_lock = threading.RLock()
_factories: dict[str, BackendFactory] = {}
_defaults: dict[str, str] = {}
_entry_points_read = False
_served: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def has_cohere_key() -> bool:
    return bool(os.environ.get("CO_API_KEY") or os.environ.get("COHERE_API_KEY"))


def register_backend(
    name: str, factory: BackendFactory, *, default_model: str | None = None
) -> None:
    """Make `factory` the backend called `name` (lower case; replaces an earlier one)."""
    key = name.lower()
    if not key or key == AUTO or not key.replace("-", "_").replace(".", "_").isidentifier():
        raise ValidationError("backend", name, "a name of letters, digits, _, - or . (not auto)")
    with _lock:
        _factories[key] = factory
        model = default_model or getattr(factory, "default_model", None)
        if isinstance(model, str) and model:
            _defaults[key] = model
        else:
            _defaults.pop(key, None)


def unregister_backend(name: str) -> None:
    """Forget the backend called `name` (no error when there is none)."""
    with _lock:
        _factories.pop(name.lower(), None)
        _defaults.pop(name.lower(), None)


def rescan_entry_points() -> None:
    """Read the ``nbchat.backends`` group again (after installing a plugin at runtime)."""
    global _entry_points_read
    with _lock:
        _entry_points_read = False
    _read_entry_points()


def _read_entry_points() -> None:
    """Register every backend of the ``nbchat.backends`` group (its object loads lazily)."""
    global _entry_points_read
    with _lock:
        if _entry_points_read:
            return
        _entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name.lower() not in _factories:
                _factories[ep.name.lower()] = _Lazy(ep)


class _Lazy:
    """An entry point's factory, imported on first use."""

    def __init__(self, ep: Any) -> None:
        self.ep = ep
        self._loaded: BackendFactory | None = None

    def load(self) -> BackendFactory:
        if self._loaded is None:
            loaded = self.ep.load()
            if not callable(loaded):
                raise ValidationError(
                    "backend", self.ep.name, f"a callable factory ({self.ep.value} is not one)"
                )
            self._loaded = loaded
        return self._loaded

    def __call__(self, **options: Any) -> Backend:
        return self.load()(**options)


def _factory(name: str) -> BackendFactory | None:
    with _lock:
        found = _factories.get(name)
    if found is None and not _entry_points_read:
        _read_entry_points()
        with _lock:
            found = _factories.get(name)
    return found


def backend_names() -> tuple[str, ...]:
    """Every backend name `get_backend` accepts, ``auto`` first (reads the entry points)."""
    _read_entry_points()
    with _lock:
        return (AUTO, *_factories)


def resolve_name(name: str | None) -> str:
    """The backend a name means: 'auto' (or None) picks cohere or local; unknown names fail
    with a `ValidationError` listing the known ones."""
    key = (name or AUTO).lower()
    if key == AUTO:
        return "cohere" if has_cohere_key() else "local"
    if _factory(key) is None:
        raise ValidationError("backend", name, ", ".join(backend_names()))
    return key


def get_backend(
    name: str | None = None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    **options: Any,
) -> Backend:
    """Build a backend by name (see `backend_names`). Options go to its factory."""
    key = resolve_name(name)
    factory = _factory(key)
    assert factory is not None  # resolve_name checked it
    given = {"model": model, "base_url": base_url, "api_key": api_key}
    options.update({k: v for k, v in given.items() if v is not None})
    return factory(**options)


def default_model(name: str | None = None) -> str:
    """The model a backend name uses when none is set ("" = ask the backend what it serves)."""
    key = resolve_name(name)
    if key == "openai":
        return os.environ.get("NBCHAT_OPENAI_MODEL", "")
    with _lock:
        known = _defaults.get(key)
    if known is None:
        factory = _factory(key)
        if isinstance(factory, _Lazy):  # a plugin: its factory may carry a default_model
            model = getattr(factory.load(), "default_model", None)
            known = model if isinstance(model, str) else ""
            with _lock:
                _defaults[key] = known
    return known or ""


def resolve_model(backend: Backend, model: str | None = None) -> str:
    """The model to request, decided here only: the one given, else the backend's own
    (``backend.model``), else its name's default (`default_model`), else the first model the
    backend serves (an OpenAI-compatible server or a v2 host such as ``nbchat serve``; the
    answer is remembered per backend object). A v2 host that lists nothing gets Cohere's
    default model. No model at all raises a `ValidationError` naming ``model``. A backend
    object whose ``name`` is not registered gets only its own model ("" when it has none:
    the request is then rejected for its empty model).
    """
    if model:
        return model
    own = getattr(backend, "model", None)
    if isinstance(own, str) and own:
        return own
    name = str(getattr(backend, "name", "") or "")
    try:
        fallback = default_model(name) if name else ""
    except ValidationError:  # a backend object of no registered name: no policy applies
        return ""
    if fallback:
        return fallback
    try:
        cached = _served.get(backend)
    except TypeError:  # unhashable / no weak references: no cache
        cached = None
    if cached:
        return cached
    models = getattr(backend, "models", None)
    ids = list(models()) if callable(models) else []
    if not ids and name == "v2":  # e.g. a proxy to Cohere that lists nothing
        ids = [COHERE_MODEL]
    if not ids:
        raise ValidationError(
            "model", "", "a model name: the server lists none; set NbChat.model or -m"
        )
    try:
        _served[backend] = ids[0]
    except TypeError:
        pass
    return str(ids[0])


# -- the built-in backends ---------------------------------------------------------------------
def _cohere(**options: Any) -> Backend:
    from .cohere import Client

    options.pop("model", None)
    return Client(**options)


def _v2(**options: Any) -> Backend:
    from .cohere import Client

    options.pop("model", None)
    return Client(name="v2", **options)  # another host: its model list is what it serves


def _local(**options: Any) -> Backend:
    from .local import LocalBackend

    model = options.pop("model", None)
    options.pop("base_url", None)
    options.pop("api_key", None)
    if model and model != LOCAL_MODEL and model.endswith(".gguf"):
        options.setdefault("model_path", model)
    backend: Backend = LocalBackend(**options)
    return backend


def _openai(**options: Any) -> Backend:
    from .openai import OpenAIBackend

    backend: Backend = OpenAIBackend(**options)
    return backend


register_backend("cohere", _cohere, default_model=COHERE_MODEL)
register_backend("v2", _v2)
register_backend("local", _local, default_model=LOCAL_MODEL)
register_backend("openai", _openai)
