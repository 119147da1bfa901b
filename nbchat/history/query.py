"""Reading the history store back: conversations, search, a turn table, a live Conversation.

Every function takes ``path`` (None: ``NBCHAT_HISTORY`` or the default store). A store that
does not exist yet reads as empty (reading never creates one); a store turned off
(``NBCHAT_HISTORY=0``) with no explicit path raises `HistoryOff`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import NbChatError, ValidationError
from .schema import connect, resolve_path

__all__ = [
    "HistoryOff",
    "conversations",
    "format_table",
    "search",
    "is_history_id",
    "read_stored",
    "last_conversation",
    "to_dataframe",
    "turn_rows",
    "CONVERSATION_COLUMNS",
    "TURN_COLUMNS",
    "SEARCH_COLUMNS",
]

CONVERSATION_COLUMNS = (
    "id",
    "title",
    "notebook",
    "turns",
    "last_used",
    "model",
    "backend",
    "created",
)
TURN_COLUMNS = (
    "conversation",
    "seq",
    "turn_id",
    "finished_at",
    "status",
    "finish_reason",
    "cancelled",
    "partial",
    "error",
    "model",
    "backend",
    "notebook",
    "cell_id",
    "execution_count",
    "prompt",
    "reply",
    "thinking",
    "input_tokens",
    "output_tokens",
    "ttft",
    "total",
)
SEARCH_COLUMNS = (
    "conversation",
    "turn_id",
    "seq",
    "finished_at",
    "notebook",
    "model",
    "snippet",
    "prompt",
    "reply",
)


class HistoryOff(NbChatError):
    """The history store is turned off (NBCHAT_HISTORY=0 or NbChat.history = False)."""


def _path(path: Any) -> Path:
    if path is not None and path is not True:
        resolved = resolve_path(path)
    else:
        resolved = resolve_path(None)
    if resolved is None:
        raise HistoryOff("the chat history is off (NBCHAT_HISTORY=0 or NbChat.history = False)")
    return resolved


@contextlib.contextmanager
def _reader(path: Any) -> Iterator[sqlite3.Connection | None]:
    """A connection to read (None when the store does not exist yet)."""
    p = _path(path)
    if not p.exists():
        yield None
        return
    try:
        conn = connect(p)
    except sqlite3.OperationalError:  # a read-only store still reads
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        if conn.execute("PRAGMA user_version").fetchone()[0] < 1:
            conn.close()
            yield None
            return
    try:
        yield conn
    finally:
        conn.close()


def conversations(
    path: Any = None,
    *,
    session: str | None = None,
    notebook: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored conversations, most recently used first: id, title (the first prompt), notebook,
    turns, last_used and created (epoch s), model, backend. ``session`` keeps one process's
    (``nbchat.history.SESSION`` is this one), ``notebook`` one notebook's."""
    where, args = [], []
    if session is not None:
        where.append("session = ?")
        args.append(session)
    if notebook is not None:
        where.append("notebook = ?")
        args.append(notebook)
    sql = (
        "SELECT id, title, notebook, turns, updated, model, backend, created FROM conversations"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY updated DESC, rowid DESC"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with _reader(path) as conn:
        if conn is None:
            return []
        rows = conn.execute(sql, args).fetchall()
    return [dict(zip(CONVERSATION_COLUMNS, r, strict=True)) for r in rows]


def last_conversation(path: Any = None, *, notebook: str | None = None) -> str | None:
    """The id of the most recently used conversation (of `notebook` when given), or None."""
    found = conversations(path, notebook=notebook, limit=1)
    return found[0]["id"] if found else None


def fts_query(text: str) -> str:
    """Plain words -> an FTS5 query matching turns that contain every word (prefixes with a
    trailing ``*``). FTS5 syntax characters in the text are taken literally."""
    words = [w for w in str(text).split() if w.strip('"*')]
    if not words:
        raise ValidationError("search", text, "one or more words")
    parts = []
    for w in words:
        star = w.endswith("*") and len(w) > 1
        w = w.rstrip("*") if star else w
        parts.append('"' + w.replace('"', '""') + '"' + ("*" if star else ""))
    return " ".join(parts)


def search(text: str, path: Any = None, *, limit: int = 100) -> list[dict[str, Any]]:
    """Turns whose prompt, reply or thinking contain every word of `text` (SQLite FTS5, best
    match first): conversation, turn_id, seq, finished_at, notebook, model, snippet (the match
    in context, marked ``[...]``), prompt, reply."""
    query = fts_query(text)
    with _reader(path) as conn:
        if conn is None:
            return []
        # FTS5 ranks and cuts first (ORDER BY rank LIMIT), so snippets and the join touch only
        # the rows returned, however many turns match
        rows = conn.execute(
            "SELECT t.conversation, t.turn_id, t.seq, t.finished_at, t.notebook, t.model, "
            "f.snip, t.prompt, t.reply FROM (SELECT rowid, rank, "
            "snippet(turns_fts, -1, '[', ']', '...', 12) AS snip FROM turns_fts "
            "WHERE turns_fts MATCH ? ORDER BY rank LIMIT ?) f JOIN turns t ON t.id = f.rowid "
            "ORDER BY f.rank, t.finished_at DESC",
            (query, int(limit)),
        ).fetchall()
    return [dict(zip(SEARCH_COLUMNS, r, strict=True)) for r in rows]


def turn_rows(
    path: Any = None, *, conversation: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Stored turns (one dict per turn, columns `TURN_COLUMNS`), oldest first; one
    conversation's turns (in order) when `conversation` is given."""
    cols = ", ".join(TURN_COLUMNS)
    if conversation is not None:
        with _reader(path) as conn:
            if conn is None:
                return []
            cid = _resolve_id(conn, conversation)
            rows = conn.execute(
                f"SELECT {cols} FROM turns WHERE conversation = ? ORDER BY seq", (cid,)
            ).fetchall()
    else:
        sql = f"SELECT {cols} FROM turns ORDER BY finished_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with _reader(path) as conn:
            if conn is None:
                return []
            rows = conn.execute(sql).fetchall()[::-1]
    return [dict(zip(TURN_COLUMNS, r, strict=True)) for r in rows]


def to_dataframe(
    path: Any = None, *, conversation: str | None = None, limit: int | None = None
) -> Any:
    """A pandas DataFrame of stored turns (see `turn_rows`), ``finished_at`` as datetimes."""
    import pandas as pd  # lazy: pandas is an optional dependency

    df = pd.DataFrame(
        turn_rows(path, conversation=conversation, limit=limit), columns=list(TURN_COLUMNS)
    )
    df["finished_at"] = pd.to_datetime(df["finished_at"], unit="s")
    return df


def conversations_dataframe(path: Any = None, **kwargs: Any) -> Any:
    import pandas as pd

    df = pd.DataFrame(conversations(path, **kwargs), columns=list(CONVERSATION_COLUMNS))
    for col in ("last_used", "created"):
        df[col] = pd.to_datetime(df[col], unit="s")
    return df


def search_dataframe(text: str, path: Any = None, *, limit: int = 100) -> Any:
    import pandas as pd

    df = pd.DataFrame(search(text, path, limit=limit), columns=list(SEARCH_COLUMNS))
    df["finished_at"] = pd.to_datetime(df["finished_at"], unit="s")
    return df


def _resolve_id(conn: sqlite3.Connection, cid: str) -> str:
    """An exact id, or a unique prefix of one (at least 4 characters)."""
    cid = str(cid).strip()
    if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone():
        return cid
    if len(cid) >= 4:
        found = conn.execute(
            "SELECT id FROM conversations WHERE id >= ? AND id < ? LIMIT 2",
            (cid, cid + "\U0010ffff"),
        ).fetchall()
        if len(found) == 1:
            return found[0][0]
        if len(found) > 1:
            raise ValidationError("conversation id", cid, "a unique id prefix (several match)")
    raise ValidationError("conversation id", cid, "an id listed by %chat history --all")


def is_history_id(source: Any) -> bool:
    """Whether `Conversation.load(source)` means a stored conversation: a string that names no
    existing file, has no path separator and does not end in .json/.jsonl."""
    import os

    if not isinstance(source, str) or os.path.exists(source):
        return False
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    looks_like_path = any(sep in source for sep in seps)
    return not looks_like_path and not source.lower().endswith((".json", ".jsonl"))


def read_stored(conversation: str, path: Any = None) -> tuple[str, dict[str, Any]]:
    """(the full id, the conversation as `Conversation.from_dict` takes it) for a stored
    conversation id or unique prefix; `ValidationError` naming the id otherwise."""
    with _reader(path) as conn:
        if conn is None:
            raise ValidationError("conversation id", conversation, "an id in the history store")
        cid = _resolve_id(conn, conversation)
        system, params = conn.execute(
            "SELECT system, params FROM conversations WHERE id = ?", (cid,)
        ).fetchone()
        turns = [
            json.loads(r[0])
            for r in conn.execute(
                "SELECT data FROM turns WHERE conversation = ? ORDER BY seq", (cid,)
            )
        ]
    data = {
        "system": json.loads(system) if system else None,
        "params": json.loads(params) if params else {},
        "turns": turns,
    }
    return cid, data


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain-text table (times as local YYYY-MM-DD HH:MM, long text cut at 60)."""
    import time

    def cell(key: str, value: Any) -> str:
        if value is None:
            return ""
        if key in ("last_used", "finished_at"):
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
        text = " ".join(str(value).split())
        return text if len(text) <= 60 else text[:57] + "..."

    cells = [[cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
