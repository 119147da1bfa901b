"""Notebook actions on a reply: its code into a new cell (``--code``) and ``%chat fix``.

A reply's code reaches the notebook in one of two ways:

* headless / inline turns (nbconvert, papermill, terminal IPython, ``--wait``): the turn ends
  while the cell still executes, so IPython's ``set_next_input`` (a payload of the execute
  reply) creates the cell;
* live turns end after the cell has returned, when no payload can be sent: the kernel sends the
  live view an ``insert-below`` message, and js/view.js asks the nbchat JupyterLab/Notebook 7
  extension (labext/) to insert a code cell below the chat cell. Without the extension (VS
  Code, static HTML) nothing is inserted.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["first_code_block", "CodeToCell", "fix_prompt"]

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\n`]*)\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)


def first_code_block(text: str) -> str | None:
    """The body of the first fenced code block of `text` (None when there is none)."""
    m = _FENCE.search(text or "")
    if m is None:
        return None
    return m.group(3).rstrip("\n")


class CodeToCell:
    """Listener wrapper: when the turn completes, its first code block goes into a new cell.

    `inner` is the view's (or the headless recorder's) listener; every call is passed on.
    `view`: the live TurnView (sends ``insert-below``), or None to use ``shell.set_next_input``.
    """

    def __init__(self, inner: Any, shell: Any, view: Any = None) -> None:
        self.inner = inner
        self.shell = shell
        self.view = view
        self.code: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_done(self, turn: Any) -> None:
        done = getattr(self.inner, "on_done", None)
        if callable(done):
            done(turn)
        if getattr(turn, "status", None) != "complete":
            return
        self.code = first_code_block(turn.text)
        if self.code is None:
            return
        if self.view is not None:
            self.view._send_patch({"type": "insert-below", "code": self.code})  # our own view
        else:
            self.shell.set_next_input(self.code, replace=False)


_FIX = """Fix the error raised by this notebook cell. Reply with the whole corrected cell as one \
```python code block first, then one or two sentences on the cause.

The cell{where}:
```python
{source}
```

The error:
```
{error}
```"""


def fix_prompt(err: Any, error_text: str) -> str:
    """The %chat fix message: the failing cell's source and its formatted, redacted error."""
    from .errors_seen import scrub

    source = err.source.strip("\n") or "(source unknown: the error was raised before nbchat loaded)"
    where = f" [{err.count}]" if err.count is not None else ""
    return _FIX.format(where=where, source=scrub(source), error=error_text)
