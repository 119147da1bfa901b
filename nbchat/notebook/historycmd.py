"""The %chat commands that read the history store: history, resume, search.

* ``%chat history [-n VAR]``: the transcript of VAR (default ``chat``), then this kernel's
  stored conversations; ``%chat history --all``: every stored conversation (a DataFrame when
  pandas is installed, else a table).
* ``%chat resume [ID] [-n VAR]``: VAR becomes the stored conversation ID (an id or a unique
  prefix), which continues where it stopped; without ID, the last conversation of this
  notebook (``JPY_SESSION_NAME``), else the last one stored, never the one VAR already holds.
* ``%chat search TEXT``: turns whose prompt, reply or thinking contain every word (FTS5).
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

ChatMagics = Any  # the magics object (not imported: commands -> here is the only edge)

__all__ = ["history_command", "resume_command", "search_command", "notebook_of"]


def notebook_of(shell: Any) -> str | None:
    """The notebook this kernel runs: ipykernel's ``__session__`` (from JPY_SESSION_NAME),
    VS Code's ``__vsc_ipynb_file__``, else the environment."""
    from .. import history

    ns = getattr(shell, "user_ns", None) or {}
    for key in ("__session__", "__vsc_ipynb_file__"):
        value = ns.get(key)
        if isinstance(value, str) and value:
            return value
    return history.notebook_path()


def _store_path() -> Any:
    from .. import history

    store = history.current_store()
    if store is None:
        raise UsageError(
            "the chat history is off (%config NbChat.history = False or NBCHAT_HISTORY=0); "
            "set NbChat.history = True (or a path) to record and read it"
        )
    store.flush(10)  # what this kernel queued is readable
    return store.path


def _table(rows: list[dict[str, Any]], kind: str) -> Any:
    from .. import history

    try:
        import pandas as pd
    except ImportError:
        columns = history.CONVERSATION_COLUMNS[:6] if kind == "conv" else history.SEARCH_COLUMNS
        print(history.format_table(rows, columns) if rows else "(nothing stored)")
        return None
    columns = history.CONVERSATION_COLUMNS if kind == "conv" else history.SEARCH_COLUMNS
    df = pd.DataFrame(rows, columns=list(columns))
    for col in ("last_used", "created", "finished_at"):
        if col in df:
            df[col] = pd.to_datetime(df[col], unit="s")
    return df


def history_command(m: ChatMagics, *, name: str | None, args: list[str]) -> Any:
    from IPython.display import display

    from .. import history

    if args not in ([], ["--all"]):
        raise UsageError(f"%chat history: unexpected arguments {' '.join(args)!r}; allowed: --all")
    if args == ["--all"]:
        return _table(history.conversations(_store_path()), "conv")
    conv = m.named(name)
    display(conv)
    if history.current_store() is None:
        print("(history off: nothing is stored)")
        return None
    mine = history.conversations(_store_path(), session=history.SESSION)
    cid = history.conversation_id(conv)
    print(
        f"stored as {cid}; this kernel stored {len(mine)} conversation(s)"
        " (%chat history --all: every stored one; %chat resume ID: continue one)"
    )
    return _table(mine, "conv") if len(mine) > 1 else None


def resume_command(m: ChatMagics, *, name: str | None, args: list[str]) -> None:
    from .. import history
    from ..conversation import Conversation
    from ..errors import ValidationError

    if len(args) > 1:
        raise UsageError("%chat resume takes at most one conversation id (see %chat history --all)")
    var = name or m.settings.conversation
    if not var.isidentifier():
        raise UsageError(f"-n/--name: {var!r} is not a valid Python variable name")
    current = m.shell.user_ns.get(var)
    if isinstance(current, Conversation) and current.running:
        raise UsageError(f"{var!r} is still streaming a reply: %chat stop first")
    path = _store_path()
    if args:
        cid = args[0]
    else:
        skip = history.conversation_id(current) if isinstance(current, Conversation) else None
        notebook = notebook_of(m.shell)
        found = [c for c in history.conversations(path, notebook=notebook) if c["id"] != skip]
        if not found and notebook is not None:
            found = [c for c in history.conversations(path) if c["id"] != skip]
        if not found:
            raise UsageError("%chat resume: no stored conversation to resume yet")
        cid = found[0]["id"]
    try:
        conv = history.load(cid, path)
    except ValidationError as exc:
        raise UsageError(f"%chat resume: {exc.message}") from None
    m.shell.user_ns[var] = conv
    [info] = [c for c in history.conversations(path) if c["id"] == history.conversation_id(conv)]
    print(
        f"resumed {info['id']} into {var!r}: {len(conv)} turn(s), first prompt "
        f"{info['title']!r}" + (f", from {info['notebook']}" if info["notebook"] else "")
    )


def search_command(m: ChatMagics, *, name: str | None, args: list[str]) -> Any:
    from .. import history
    from ..errors import ValidationError

    try:
        rows = history.search(" ".join(args), _store_path())
    except ValidationError as exc:
        raise UsageError(f"%chat search TEXT: {exc.message}") from None
    return _table(rows, "search")
