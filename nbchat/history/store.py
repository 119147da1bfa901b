"""Writing the history store: every finished turn, off the streaming path, never breaking one.

`Store.record(conversation, turn)` runs after the turn is final (the runner calls it from the
worker thread once the views have their last update, so nothing on the streaming path waits
for SQLite). It snapshots the turn, redacts it (no key, no bearer token: `nbchat.errors.redact`
over the JSON text) and commits it in one short ``BEGIN IMMEDIATE`` transaction, right there
when the store is free: once `record` returns, a SIGKILL cannot lose the turn (WAL with
``synchronous=NORMAL`` survives a process crash; only a power cut may lose the last commits).
When another process holds the write lock for more than `FAST_BUSY_MS`, or earlier turns are
still queued, the turn goes to a daemon writer thread instead, which waits up to the busy
timeout and commits whatever has queued in one transaction. A store that cannot be opened or
written (read-only disk, locked past the busy timeout, corrupt file) warns once
(`HistoryWarning`, and the ``nbchat`` logger) and then drops further writes: a turn never fails
because of its history. `flush()` waits for the queue; an ``atexit`` hook flushes it on a
normal exit (kernel shutdown or restart).

Re-running a cell replaces its turn in place in the conversation; the store does the same:
a turn with the ``cell_id`` of a stored turn of the same conversation takes its row's place
(``seq``), so a restored conversation has the turns the notebook showed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
import warnings
import weakref
from pathlib import Path
from typing import Any

from . import schema
from .schema import connect

__all__ = ["Store", "HistoryWarning", "SESSION", "conversation_id", "set_conversation_id"]

log = logging.getLogger("nbchat")

SESSION = uuid.uuid4().hex[:12]  # this process: "%chat history" lists what it recorded
TITLE_CHARS = 80
MAX_BATCH = 200  # turns per transaction when the writer is behind
LOCK_WAIT_S = 0.2  # record() waits this long for another thread's write before queueing
WRITER_IDLE_S = 2.0  # the writer thread exits after this long with nothing queued
FAST_BUSY_MS = 50  # how long record() waits for another process's lock before queueing


class HistoryWarning(UserWarning):
    """The history store could not be opened or written; turns go on without it."""


# -- which conversation --------------------------------------------------------------------------
_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_ids_lock = threading.Lock()


def conversation_id(conversation: Any) -> str:
    """The stored id of a Conversation (made on first use; restored ones keep theirs)."""
    with _ids_lock:
        cid = _ids.get(conversation)
        if cid is None:
            cid = _ids[conversation] = uuid.uuid4().hex[:12]
        return cid


def set_conversation_id(conversation: Any, cid: str) -> None:
    """Make later turns of `conversation` continue the stored conversation `cid`."""
    with _ids_lock:
        _ids[conversation] = cid


# -- the store -----------------------------------------------------------------------------------
class Store:
    """One history database: `record()` queues finished turns, a writer thread commits them.

    ``Store(path)`` opens nothing until the first write (or `open()`); reading goes through
    `nbchat.history` (``conversations``, ``search``, ``load``, ``to_dataframe``) with its own
    connections. ``warning`` holds the text of the (single) warning once writing failed.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.warning: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._thread_lock = threading.Lock()
        # turns queued and not yet committed (queue + the writer's batch in hand): a turn is
        # written directly only when this is 0, so a conversation's turns keep their order
        self._pending = 0
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._written = 0

    def __repr__(self) -> str:
        state = "broken" if self._broken else "ok"
        return f"Store({str(self.path)!r}, {state}, written={self._written})"

    # -- writing (any thread) ------------------------------------------------------------------
    def record(self, conversation: Any, turn: Any, *, notebook: str | None = None) -> bool:
        """Write a finished turn of `conversation` now if the store is free (at most
        `FAST_BUSY_MS` of waiting), else queue it for the writer thread. Running turns are
        ignored. Returns False when the store is broken (the one warning was given)."""
        if self._broken:
            return False
        snap = turn.to_dict()
        if snap.get("status") == "running":
            return False
        system = conversation.system
        params = dict(conversation.params)
        item = {
            "conversation": conversation_id(conversation),
            "turn": snap,
            "title": _text(snap.get("input") or []),  # the first one written stays
            "system": system,
            "params": params,
            "notebook": notebook,
            "finished_at": _finished_at(snap),
        }
        # Nothing queued before it: write it here, now (waiting briefly for another thread of
        # this process that is writing; the writer thread may be waiting on a busy store).
        if self._pending == 0 and self._lock.acquire(timeout=LOCK_WAIT_S):
            try:
                if self._write_now(item):
                    return True
            finally:
                self._lock.release()
            if self._broken:
                return False
        with self._thread_lock:
            self._pending += 1
        self._enqueue(item)
        return True

    def _write_now(self, item: dict[str, Any]) -> bool:
        """One write in the calling thread with a short busy timeout; False when the store
        is busy (another process writing: the caller queues the turn) or broken."""
        if not self._open_locked():
            return False
        conn = self._conn
        assert conn is not None
        try:
            conn.execute(f"PRAGMA busy_timeout = {FAST_BUSY_MS}")
            try:
                _write(conn, [item])
            finally:
                conn.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) in (5, 6) or "locked" in str(exc):
                return False  # SQLITE_BUSY / SQLITE_LOCKED: the writer thread waits longer
            self._fail(exc)
            return False
        except Exception as exc:
            self._fail(exc)
            return False
        self._written += 1
        return True

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every queued turn is written (or dropped); True if the queue drained."""
        if self._thread is None and self._queue.empty():
            return True
        done = threading.Event()
        self._enqueue(done)
        return done.wait(timeout)

    def open(self) -> bool:
        """Open (creating) the database now; False (after the one warning) if it cannot be."""
        with self._lock:
            return self._open_locked()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writer thread -------------------------------------------------------------------------
    def _enqueue(self, item: Any) -> None:
        """Queue for the writer thread, starting it if it is not running (it exits when idle)."""
        self._queue.put(item)
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="nbchat-history", daemon=True
                )
                self._thread.start()
                _live_stores.add(self)

    def _drain(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=WRITER_IDLE_S)
            except queue.Empty:
                with self._thread_lock:  # nothing can be queued unseen while we decide
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:  # group commit: whatever queued meanwhile, at once
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [x for x in batch if not isinstance(x, threading.Event)]
            if items and not self._broken:
                try:
                    with self._lock:
                        if self._open_locked():
                            _write(self._conn, items)  # type: ignore[arg-type]
                            self._written += len(items)
                except Exception as exc:  # never let the history break anything
                    self._fail(exc)
            with self._thread_lock:
                self._pending -= len(items)
            for x in batch:
                if isinstance(x, threading.Event):
                    x.set()

    def _open_locked(self) -> bool:
        if self._broken:
            return False
        if self._conn is not None:
            return True
        try:
            self._conn = connect(self.path, create=True)
            return True
        except Exception as exc:
            self._fail(exc)
            return False

    def _fail(self, exc: BaseException) -> None:
        from ..errors import redact

        if self._broken:
            return
        self._broken = True
        self.warning = redact(
            f"nbchat: the chat history at {self.path} cannot be written "
            f"({type(exc).__name__}: {exc}); turns are not being recorded. "
            "Set NBCHAT_HISTORY (or %config NbChat.history) to another path, or to 0 to turn it off."
        )
        log.warning("%s", self.warning)
        warnings.warn(self.warning, HistoryWarning, stacklevel=2)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


_live_stores: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:  # a normal exit (kernel shutdown or restart) writes what is queued
    for store in list(_live_stores):
        with contextlib.suppress(Exception):
            store.flush(5.0)


# -- one write -----------------------------------------------------------------------------------
def _write(conn: sqlite3.Connection, items: list[dict[str, Any]]) -> None:
    """Insert queued turns in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for item in items:
            _insert(conn, item)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise


def _insert(conn: sqlite3.Connection, item: dict[str, Any]) -> None:
    from ..errors import redact

    snap = item["turn"]
    cid = item["conversation"]
    data = redact(json.dumps(snap, ensure_ascii=False, default=repr))
    params = redact(json.dumps(item["params"], ensure_ascii=False, default=repr))
    system = item["system"]
    system_json = redact(json.dumps(system, ensure_ascii=False)) if system is not None else None
    cell = snap.get("cell") or {}
    cell_id = str(cell["cell_id"]) if cell.get("cell_id") else None
    usage = snap.get("usage") or {}
    tokens = usage.get("tokens") or usage.get("billed_units") or {}
    timings = snap.get("timings") or {}
    output = snap.get("output") or []
    status = snap.get("status") or "complete"
    turn_params = snap.get("params") or {}
    model = turn_params.get("model")
    reply, thinking = _reply_texts(output)
    prompt = redact(_text(snap.get("input") or []))
    title = " ".join(redact(item["title"] or "").split())[:TITLE_CHARS]
    now = item["finished_at"]
    conn.execute(
        "INSERT INTO conversations (id, title, notebook, session, system, params, model, "
        "backend, created, updated, turns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) "
        "ON CONFLICT(id) DO UPDATE SET notebook = COALESCE(excluded.notebook, notebook), "
        "session = excluded.session, system = excluded.system, params = excluded.params, "
        "model = COALESCE(excluded.model, model), "
        "backend = COALESCE(excluded.backend, backend), updated = excluded.updated, "
        "title = CASE WHEN title = '' THEN excluded.title ELSE title END",
        (
            cid,
            title,
            item["notebook"],
            SESSION,
            system_json,
            params,
            model,
            snap.get("backend"),
            now,
            now,
        ),
    )
    # the same turn again, or a re-run of the same cell: take its place
    seq = None
    old = conn.execute(
        "SELECT id, seq FROM turns WHERE conversation = ? AND (turn_id = ? OR "
        "(cell_id IS NOT NULL AND cell_id = ?)) ORDER BY seq LIMIT 1",
        (cid, snap["id"], cell_id),
    ).fetchone()
    if old is not None:
        seq = old[1]
        conn.execute("DELETE FROM turns WHERE id = ?", (old[0],))
    if seq is None:
        seq = conn.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM turns WHERE conversation = ?", (cid,)
        ).fetchone()[0]
    conn.execute(
        "INSERT INTO turns (conversation, seq, turn_id, status, finish_reason, cancelled, "
        "partial, error, model, backend, notebook, cell_id, execution_count, prompt, reply, "
        "thinking, input_tokens, output_tokens, ttft, total, started_at, finished_at, "
        "session, pid, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?, ?)",
        (
            cid,
            seq,
            snap["id"],
            status,
            snap.get("finish_reason"),
            int(status == "cancelled"),
            int(status != "complete" and any(len(m) > 1 for m in output)),
            redact(snap["error"]) if snap.get("error") else None,
            model,
            snap.get("backend"),
            item["notebook"],
            cell_id,
            _int(cell.get("execution_count")),
            prompt,
            redact(reply),
            redact(thinking),
            _num(tokens.get("input_tokens")),
            _num(tokens.get("output_tokens")),
            _num(timings.get("ttft")),
            _num(timings.get("total")),
            _num(timings.get("started_at")),
            now,
            SESSION,
            os.getpid(),
            data,
        ),
    )
    conn.execute(
        "UPDATE conversations SET turns = (SELECT COUNT(*) FROM turns WHERE conversation = ?) "
        "WHERE id = ?",
        (cid, cid),
    )


def _text(messages: list[dict[str, Any]]) -> str:
    """The text of user messages (text blocks; images and documents are not text)."""
    from ..protocol.messages import message_text

    return "\n".join(message_text(m) for m in messages)


def _reply_texts(output: list[dict[str, Any]]) -> tuple[str, str]:
    """The turn's answer text (every assistant message, tool plans included) and thinking."""
    reply: list[str] = []
    thinking: list[str] = []
    for m in output:
        if m.get("role") != "assistant":
            continue
        if m.get("tool_plan"):
            reply.append(str(m["tool_plan"]))
        content = m.get("content")
        if isinstance(content, str):
            reply.append(content)
            continue
        for block in content or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "thinking":
                thinking.append(str(block.get("thinking") or ""))
            elif block.get("type") in (None, "text"):
                reply.append(str(block.get("text") or ""))
    return "\n".join(p for p in reply if p), "\n".join(p for p in thinking if p)


def _finished_at(snap: dict[str, Any]) -> float:
    timings = snap.get("timings") or {}
    start, total = _num(timings.get("started_at")), _num(timings.get("total"))
    return start + total if start is not None and total is not None else time.time()


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None
