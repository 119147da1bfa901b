"""Chat history that outlives the kernel: every finished turn in a local SQLite store.

Writing (`record`, `Store`): see `nbchat.history.store`. Reading: `conversations()` (id, title,
notebook, turns, last used, model), `search(text)` (SQLite FTS5 over prompts, replies and
thinking), `to_dataframe()` (one row per stored turn), `load(id)` (a live
`nbchat.Conversation` that continues where it stopped). The store is
``NBCHAT_HISTORY`` (a path, or ``0`` for off) or ``<user data dir>/nbchat/history.sqlite3``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .query import (
    CONVERSATION_COLUMNS,
    SEARCH_COLUMNS,
    TURN_COLUMNS,
    HistoryOff,
    conversations,
    conversations_dataframe,
    fts_query,
    last_conversation,
    load,
    search,
    search_dataframe,
    to_dataframe,
    turn_rows,
)
from .schema import default_path, resolve_path
from .store import SESSION, HistoryWarning, Store, conversation_id, set_conversation_id

__all__ = [
    "CONVERSATION_COLUMNS",
    "SEARCH_COLUMNS",
    "SESSION",
    "TURN_COLUMNS",
    "HistoryOff",
    "HistoryWarning",
    "Store",
    "conversation_id",
    "conversations",
    "conversations_dataframe",
    "default_path",
    "fts_query",
    "get_store",
    "last_conversation",
    "load",
    "record",
    "resolve_path",
    "search",
    "search_dataframe",
    "set_conversation_id",
    "to_dataframe",
    "turn_rows",
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
