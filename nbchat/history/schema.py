"""Where the history store lives, and its schema: paths, WAL connections, migrations.

``NBCHAT_HISTORY`` (a path; ``0``/``false``/``off``/``no`` turns recording off), else
``<user data dir>/nbchat/history.sqlite3`` (``platformdirs.user_data_dir()``: on Linux
``~/.local/share/nbchat/history.sqlite3``). The file is created with mode 0600 (SQLite gives its
``-wal``/``-shm`` files the same mode) in a directory made 0700, and runs in WAL mode so
several kernels can write while others read.

Tables: ``conversations`` (one row per conversation: title = first prompt, notebook, the
process ``session`` that last wrote it, system prompt and default params as JSON, model,
backend, created/updated, turn count) and ``turns`` (one row per finished turn: position
``seq``, flags, model, cell, prompt/reply/thinking text, tokens, timings, and ``data``, the
whole redacted `Turn.to_dict()` JSON that `load` rebuilds from). ``turns_fts`` is an external
content FTS5 index over prompt, reply and thinking, kept in step by triggers.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["OFF", "SCHEMA_VERSION", "default_path", "resolve_path", "connect"]

OFF = ("0", "false", "off", "no", "none", "")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    notebook TEXT,
    session TEXT,
    system TEXT,
    params TEXT,
    model TEXT,
    backend TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations(updated);
CREATE INDEX IF NOT EXISTS conversations_notebook ON conversations(notebook, updated);
CREATE INDEX IF NOT EXISTS conversations_session ON conversations(session, updated);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    turn_id TEXT NOT NULL,
    status TEXT NOT NULL,
    finish_reason TEXT,
    cancelled INTEGER NOT NULL DEFAULT 0,
    partial INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    model TEXT,
    backend TEXT,
    notebook TEXT,
    cell_id TEXT,
    execution_count INTEGER,
    prompt TEXT NOT NULL DEFAULT '',
    reply TEXT NOT NULL DEFAULT '',
    thinking TEXT NOT NULL DEFAULT '',
    input_tokens REAL,
    output_tokens REAL,
    ttft REAL,
    total REAL,
    started_at REAL,
    finished_at REAL NOT NULL,
    session TEXT,
    pid INTEGER,
    data TEXT NOT NULL,
    UNIQUE (conversation, turn_id)
);
CREATE INDEX IF NOT EXISTS turns_conversation ON turns(conversation, seq);
CREATE INDEX IF NOT EXISTS turns_finished ON turns(finished_at);
CREATE VIRTUAL TABLE IF NOT EXISTS turns_fts USING fts5(
    prompt, reply, thinking, content='turns', content_rowid='id', tokenize='unicode61'
);
CREATE TRIGGER IF NOT EXISTS turns_ai AFTER INSERT ON turns BEGIN
    INSERT INTO turns_fts(rowid, prompt, reply, thinking)
    VALUES (new.id, new.prompt, new.reply, new.thinking);
END;
CREATE TRIGGER IF NOT EXISTS turns_ad AFTER DELETE ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, prompt, reply, thinking)
    VALUES ('delete', old.id, old.prompt, old.reply, old.thinking);
END;
"""


# -- where ---------------------------------------------------------------------------------------
def default_path() -> Path:
    """``<user data dir>/nbchat/history.sqlite3`` (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_data_dir()) / "nbchat" / "history.sqlite3"


def resolve_path(setting: Any = None) -> Path | None:
    """The store's path for a setting: None/True = ``NBCHAT_HISTORY`` or the default; False or
    ``0/false/off/no`` = no store (None); else a path (``~`` expanded)."""
    if setting is None or setting is True:
        env = os.environ.get("NBCHAT_HISTORY")
        if env is None:
            return default_path()
        setting = env
    if setting is False:
        return None
    text = str(setting).strip()
    if text.lower() in OFF:
        return None
    if text.lower() in ("1", "true", "on", "yes"):
        return default_path()
    return Path(text).expanduser()


def connect(path: Path | str, *, create: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place. ``create=False`` refuses a missing
    file (reading never creates a store)."""
    path = Path(path)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # 0600 from the first byte; SQLite copies this mode to the -wal and -shm files
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    elif not path.exists():
        raise FileNotFoundError(f"no history store at {path}")
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            _migrate(conn)
        elif version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"history store {path} has schema version {version}; this nbchat knows "
                f"{SCHEMA_VERSION} (upgrade nbchat)"
            )
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch the history store to WAL (got {mode})")
    conn.execute("BEGIN IMMEDIATE")  # two processes creating the store at once: one wins
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    return [s for s in out if s]
