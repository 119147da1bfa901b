"""`ConversationIO`: the save/load and table methods of `Conversation` (a mixin).

Thin delegates to `nbchat.export` (JSON/JSONL round trip, DataFrame/CSV views) and to the
history store for `load` by id; kept apart so `conversation.py` holds state only.
"""

from __future__ import annotations

from typing import Any, TypeVar

from . import export

__all__ = ["ConversationIO"]

C = TypeVar("C", bound="ConversationIO")


class ConversationIO:
    """JSON/JSONL (lossless) and DataFrame/CSV (views) for `Conversation`."""

    # -- JSON / JSONL (lossless) ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return export.to_dict(self)

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        return export.from_dict(cls, d)  # type: ignore[no-any-return]

    def to_json(self, indent: int | None = None) -> str:
        """The whole conversation (turns with all their metadata) as JSON text."""
        return export.to_json(self, indent)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Inverse of `to_json` (a plain JSON list of v2 messages is accepted too)."""
        return export.from_json(cls, text)  # type: ignore[no-any-return]

    def to_jsonl(self) -> str:
        """A header line, then one JSON line per turn (`from_jsonl` reads it back)."""
        return export.to_jsonl(self)

    @classmethod
    def from_jsonl(cls: type[C], text: str) -> C:
        return export.from_jsonl(cls, text)  # type: ignore[no-any-return]

    def save(self, path: Any) -> None:
        """Write `to_json()` to `path` (UTF-8); JSONL when the name ends with ``.jsonl``."""
        export.save(self, path)

    @classmethod
    def load(cls: type[C], source: Any) -> C:
        """A saved file (`save`: ``.json`` or ``.jsonl``) or a conversation from the history
        store (its id or a unique prefix, see ``%chat history --all``).

        `source` is a file when it is a path object, names an existing file, contains a path
        separator or ends in ``.json``/``.jsonl``; any other string is a history id.
        ``nbchat.history.load(id)`` never reads a file."""
        from .history.query import is_history_id, read_stored
        from .history.store import set_conversation_id

        if not is_history_id(source):
            return export.load(cls, source)  # type: ignore[no-any-return]
        cid, data = read_stored(source)
        conv = cls.from_dict(data)
        set_conversation_id(conv, cid)
        return conv

    # -- DataFrame / CSV (views) ------------------------------------------------------------------
    COLUMNS = export.COLUMNS

    def to_dataframe(self) -> Any:
        """A pandas DataFrame with one row per message (the system message has turn -1).

        Columns: turn, role, text, tool_plan, tool_calls, tool_call_id, citations,
        finish_reason, input_tokens, output_tokens, ttft, total, tokens_per_second (s), params,
        status, cell_id, execution_count, response_id, turn_id and message (the v2 message).
        tool_calls, citations, params and message hold JSON text; token counts are integers,
        so a CSV keeps every value. Per-turn values repeat on each row of the turn.
        `from_dataframe` reads it back; an edited ``text`` cell replaces that message's text.
        """
        return export.to_dataframe(self)

    @classmethod
    def from_dataframe(cls: type[C], df: Any) -> C:
        """Rebuild a conversation from `to_dataframe()` output (possibly edited, or read back
        from CSV). Without a ``message`` column, rows are built from role/text/tool_calls/
        tool_call_id/citations."""
        return export.from_dataframe(cls, df)  # type: ignore[no-any-return]

    def to_csv(self, path: Any) -> Any:
        """Write `to_dataframe()` to `path` as CSV; returns the DataFrame."""
        return export.to_csv(self, path)
