"""The kernel's exceptions as context: ``@{Err}`` / ``@{Err[n]}`` and ``%chat fix``.

`ErrorLog` is an IPython ``post_run_cell`` hook (registered by ``%load_ext nbchat``): each cell
that raised is recorded with its execution count, its source and the exception. `format_error`
turns one into the text a model needs: the exception type and message, then the traceback
trimmed to what matters (IPython's own frames dropped, long middles cut), with secrets
redacted (known keys and ``key = "..."``-style assignments).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError

__all__ = ["ErrorLog", "SeenError", "format_error", "scrub", "ERR_EXPR"]

ERR_EXPR = re.compile(r"^Err(?:\s*\[\s*(-?\d+)\s*\])?$")
_OWN_MAGICS = ("%%chat", "%chat", "%%nbchat", "%nbchat")
KEEP = 50  # errors remembered (oldest dropped)
MAX_FRAMES = 8  # frames shown: the first 2 and the last 6 when there are more
MAX_MESSAGE = 2000  # characters of the exception message
_SKIP_DIRS = tuple(  # frames of IPython's own machinery are not the user's problem
    os.path.dirname(os.path.abspath(m.__file__)) + os.sep
    for m in (sys.modules.get("IPython"), sys.modules.get("ipykernel"))
    if m is not None and getattr(m, "__file__", None)
)
_SECRET_ASSIGN = re.compile(
    r"(?i)((?:api[_-]?key|token|secret|password|passwd|authorization)\w*['\"]?\s*[=:]\s*)"
    r"(['\"])[^'\"\n]{4,}\2"
)


@dataclass
class SeenError:
    """One cell's exception: its execution count (None when unknown), source and exception."""

    count: int | None
    source: str
    exception: BaseException


def scrub(text: str) -> str:
    """Redact known secrets and the values of ``api_key = "..."``-style assignments."""
    from ..errors import redact

    return redact(_SECRET_ASSIGN.sub(r"\1\2***\2", text))


class ErrorLog:
    """The exceptions raised by cells of this kernel, oldest first (at most `KEEP`)."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.errors: list[SeenError] = []

    def register(self) -> None:
        last = getattr(sys, "last_value", None)  # raised before %load_ext nbchat: no source
        if isinstance(last, BaseException) and not self.errors:
            self.errors.append(SeenError(None, "", last))
        self.shell.events.register("post_run_cell", self.on_result)

    def unregister(self) -> None:
        try:
            self.shell.events.unregister("post_run_cell", self.on_result)
        except ValueError:
            pass

    def on_result(self, result: Any) -> None:
        exc = getattr(result, "error_in_exec", None)
        if exc is None:
            return
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", "") or ""
        if source.lstrip().startswith(_OWN_MAGICS):
            return  # nbchat's own errors (a bad flag, @{Err} with no error) are not the topic
        self.errors.append(SeenError(getattr(result, "execution_count", None), source, exc))
        del self.errors[:-KEEP]

    def get(self, n: int | None = None, what: str = "") -> SeenError:
        """The last error (`n` None or -1), the error of cell ``[n]``, or a UsageError
        (starting with `what`, default ``@{Err}`` / ``@{Err[n]}``)."""
        if n is None or n == -1:
            if self.errors:
                return self.errors[-1]
            raise UsageError(
                f"{what or '@{Err}'}: no exception has been raised in this kernel yet "
                "(run the failing cell first, then use @{Err} or %chat fix)"
            )
        for e in reversed(self.errors):
            if e.count == n:
                return e
        counts = ", ".join(str(e.count) for e in self.errors if e.count is not None)
        raise UsageError(
            f"{what or f'@{{Err[{n}]}}'}: cell [{n}] raised no exception"
            + (f"; cells that did: {counts}" if counts else "; no cell has raised one yet")
        )

    def lookup(self, expr: str) -> str | None:
        """``Err`` / ``Err[n]`` formatted (for `interpolate`), None for any other expression."""
        m = ERR_EXPR.match(expr.strip())
        if m is None:
            return None
        return self.format(self.get(int(m.group(1)) if m.group(1) else None))

    def format(self, err: SeenError) -> str:
        """`format_error` naming cell frames as IPython does (``Cell In[3]``)."""
        compiler = getattr(self.shell, "compile", None)
        return format_error(err, getattr(compiler, "format_code_name", None))


def _frames(exc: BaseException, namer: Any = None) -> list[str]:
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not os.path.abspath(f.filename).startswith(_SKIP_DIRS)
    ]
    lines = [_where(f, namer) + (f"\n    {f.line}" if f.line else "") for f in frames]
    if len(lines) > MAX_FRAMES:
        cut = len(lines) - MAX_FRAMES
        lines = [*lines[:2], f"  ... {cut} frame(s) omitted ...", *lines[-(MAX_FRAMES - 2) :]]
    return lines


def _where(f: traceback.FrameSummary, namer: Any) -> str:
    label = namer(f.filename) if callable(namer) else None
    if label:  # a notebook cell: ("Cell", "In[3]")
        return f"  {label[0]} {label[1]}, line {f.lineno}" + (
            "" if f.name == "<module>" else f", in {f.name}"
        )
    return f'  File "{f.filename}", line {f.lineno}, in {f.name}'


def _headline(exc: BaseException) -> str:
    message = str(exc)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + f" ... [{len(message) - MAX_MESSAGE} characters cut]"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def format_error(err: SeenError, namer: Any = None) -> str:
    """Exception type and message, the trimmed traceback, the exception it was raised from.
    `namer(filename)`: a (label, name) for a cell's frames (IPython's ``format_code_name``)."""
    exc = err.exception
    where = f" in cell [{err.count}]" if err.count is not None else ""
    parts = [_headline(exc) + where]
    frames = _frames(exc, namer)
    if frames:
        parts.append("Traceback (most recent call last, trimmed):\n" + "\n".join(frames))
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None:
        parts.append(f"(raised while handling {_headline(cause)})")
    return scrub("\n".join(parts))
