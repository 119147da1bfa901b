"""Chat history that outlives the kernel: every finished turn in a local SQLite store.

Writing (`record`, `Store`): see `nbchat.history.store`. Reading: `conversations()` (id, title,
notebook, turns, last used, model), `search(text)` (SQLite FTS5 over prompts, replies and
thinking), `to_dataframe()` (one row per stored turn), `load(id)` (a live
`nbchat.Conversation` that continues where it stopped). The store is
``NBCHAT_HISTORY`` (a path, or ``0`` for off) or ``<user data dir>/nbchat/history.sqlite3``.
"""

from __future__ import annotations

from typing import Any

from .query import (
    CONVERSATION_COLUMNS,
    SEARCH_COLUMNS,
    TURN_COLUMNS,
    HistoryOff,
    conversations,
    conversations_dataframe,
    format_table,
    fts_query,
    is_history_id,
    last_conversation,
    read_stored,
    search,
    search_dataframe,
    to_dataframe,
    turn_rows,
)
from .recorder import (
    configure,
    current_store,
    get_store,
    notebook_path,
    record,
    record_finished,
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
    "configure",
    "conversations_dataframe",
    "current_store",
    "default_path",
    "format_table",
    "fts_query",
    "get_store",
    "is_history_id",
    "last_conversation",
    "load",
    "notebook_path",
    "record",
    "read_stored",
    "record_finished",
    "resolve_path",
    "search",
    "search_dataframe",
    "set_conversation_id",
    "to_dataframe",
    "turn_rows",
]


def load(conversation: str, path: Any = None) -> Any:
    """The stored conversation `conversation` (an id or a unique prefix) as a live
    `nbchat.Conversation`: its system prompt, default parameters and every stored turn (with
    flags, usage, timings and cells, so re-running a turn's cell replaces it). New turns sent
    on it are recorded to the same stored conversation."""
    from ..conversation import Conversation

    cid, data = read_stored(conversation, path)
    conv = Conversation.from_dict(data)
    set_conversation_id(conv, cid)
    return conv
