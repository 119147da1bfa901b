"""Recording finished turns: one `Store` per path per process, the process-wide setting
(``%config NbChat.history``, ``NBCHAT_HISTORY``) and the hook the runner calls.

Imports nothing above the store (the runner's worker imports this module).
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from .schema import resolve_path
from .store import Store

__all__ = [
    "skip_recording",
    "get_store",
    "record",
    "configure",
    "notebook_path",
    "current_store",
    "record_finished",
]

_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def get_store(setting: Any = None) -> Store | None:
    """The (one per path, per process) `Store` for a setting (see `resolve_path`); None = off."""
    path = resolve_path(setting)
    if path is None:
        return None
    key = path.absolute()
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = Store(key)
        return store


def record(
    conversation: Any, turn: Any, *, setting: Any = None, notebook: str | None = None
) -> bool:
    """Queue a finished `turn` of `conversation` for the store of `setting`; False if off,
    broken (warned once) or the turn is still running. Never raises for the store's sake."""
    store = get_store(setting)
    if store is None:
        return False
    return store.record(conversation, turn, notebook=notebook)


# -- recording every finished turn (the runner calls `record_finished`) -------------------------
_settings: dict[str, Any] = {"setting": None, "notebook": None}


def configure(setting: Any = ..., *, notebook: Any = ...) -> None:
    """Where finished turns go in this process: `setting` as for `resolve_path` (None: the
    environment / default; False: off; a path) and the `notebook` they came from (None:
    ``JPY_SESSION_NAME``, which Jupyter sets for a notebook's kernel). ``%config
    NbChat.history`` calls this."""
    if setting is not ...:
        resolve_path(setting)  # a bad value fails here, not in the worker
        _settings["setting"] = setting
    if notebook is not ...:
        _settings["notebook"] = notebook or None


def notebook_path() -> str | None:
    """The notebook this kernel runs (as configured, else ``JPY_SESSION_NAME``), or None."""
    import os

    return _settings["notebook"] or os.environ.get("JPY_SESSION_NAME") or None


def current_store() -> Store | None:
    """The store finished turns go to now (None: history off)."""
    return get_store(_settings["setting"])


_skipped: weakref.WeakSet[Any] = weakref.WeakSet()


def skip_recording(conversation: Any) -> None:
    """Never record `conversation`'s turns (a comparison's scratch conversations: the compared
    turn is recorded once, with every variant, under the real conversation)."""
    _skipped.add(conversation)


def record_finished(conversation: Any, turn: Any) -> None:
    """The turn-completion hook: queue `turn` for the configured store. Never raises."""
    import logging

    if conversation in _skipped:
        return
    try:
        store = current_store()
        if store is not None:
            store.record(conversation, turn, notebook=notebook_path())
    except Exception:  # the history must never break a turn
        logging.getLogger("nbchat").exception("nbchat history: recording a turn failed")
