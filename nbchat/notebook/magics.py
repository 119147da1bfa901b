"""The ``%%chat`` cell magic and the ``%chat`` command magic: IPython wiring only.

``%load_ext nbchat`` registers ``%%chat`` and ``%%nbchat`` (the same magic; ``chat`` is skipped
with a warning when another extension already owns it) and the line magic ``%chat <command>``.
Where the work is done:

* `flags`: the flag <-> request field table (argparse, the panel's controls, this help);
* `cell`: what a %%chat cell does (request, live or static run, --dry-run);
* `commands`: the %chat commands; `settings`: `NbChat`; `interpolate`: ``@{expr}``;
* `kernel`: the current cell's request, live detection, output routing.

Import cost matters (``%load_ext`` must stay well under 0.3 s): only IPython, traitlets and
the standard library are imported here; backends, the runner and the view load on first use.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import kwds, magic_arguments

from .commands import COMMANDS_HELP, run_command
from .errors_seen import ErrorLog
from .flags import add_arguments
from .host import check_name
from .interpolate import interpolate
from .kernel import is_live, parent_message
from .settings import NbChat

if TYPE_CHECKING:  # pragma: no cover
    from ..conversation import Conversation

__all__ = [
    "ChatMagics",
    "NbChat",
    "interpolate",
    "is_live",
    "parent_message",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_CHAT_HELP = """Send the cell as the next user message and show the reply below it.

The conversation lives in a kernel variable (default ``chat``, an nbchat.Conversation;
created when missing): ``chat.messages`` is the plain v2 message list, ``chat.wait()``
blocks until a streaming reply is done, ``chat.to_dataframe()`` gives a table.

Interpolation: ``@{expr}`` in the cell or in a flag value is replaced by ``str(expr)``
evaluated in the notebook; ``@@{`` writes a literal ``@{``. Plain braces are never
touched, so code with dicts, f-strings or JSON is sent as written. A missing variable
is an error naming it. Off: --no-interpolate or %config NbChat.interpolate = False.
``@{Err}`` / ``@{Err[n]}``: the last exception of this kernel / the one of cell [n]
(type, message, trimmed traceback, secrets redacted). ``--context df``: a compact
description of a DataFrame or array instead of str(df). ``--code``: the reply's first
code block goes into a new cell below.

Re-running a cell replaces the turn it produced (keyed by the front end's cell id;
without one, e.g. in terminal IPython, each run appends).

Live front ends (JupyterLab, Notebook, VS Code) stream in the background and the cell
returns at once; headless runs (nbconvert --execute, papermill, terminal IPython) wait,
raise on errors and leave a static Markdown/HTML/text output. Override with
%config NbChat.live = "always" | "never".

Settings: %config NbChat (backend, model, base_url, api_key, defaults, auto_approve_tools,
interpolate, live, conversation, history). API keys come from CO_API_KEY or NbChat.api_key, never
from a flag. Commands: %chat panel | reset | history [--all] | resume [ID] | search TEXT |
models | export [path] | config | stop | continue | regenerate | fix [N].

Examples
--------
%%chat -t 0.2 --max-tokens 200
Explain what this does: {"a": 1} and f"{x!r}"

%%chat --documents docs --citations accurate
What do the notes say about the deadline? (docs: list of str/dicts or a DataFrame)

%%chat --tools my_tools -n agent
What is the weather in @{city}?

%%chat --json --schema person_schema --dry-run
Describe a person.
"""


@magics_class
class ChatMagics(Magics):
    """%%chat / %%nbchat and %chat; settings live in the `NbChat` configurable (`.settings`)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.settings = NbChat(parent=shell)
        self._backends: dict[tuple[Any, ...], Any] = {}
        self.errors = ErrorLog(shell)  # the cells that raised: @{Err}, %chat fix

    @magic_arguments(name="%chat")  # IPython prefixes one more "%"
    @kwds(description=_CHAT_HELP)
    @add_arguments
    @no_var_expand
    @cell_magic("nbchat")
    def chat_cell(self, line: str, cell: str) -> None:
        from .cell import run_cell

        return run_cell(self, line, cell)

    @no_var_expand
    @line_magic("nbchat")
    def chat_line(self, line: str) -> Any:
        return run_command(self, line)

    chat_line.__doc__ = COMMANDS_HELP

    # -- shared by the cell magic, the commands and the panel ----------------------------------------
    def conversation(self, name: str, *, new: bool, create: bool) -> Conversation | None:
        """The Conversation in variable `name` (a new one with `new`, or when missing and
        `create`); UsageError when the variable holds something else."""
        from ..conversation import Conversation

        current = self.shell.user_ns.get(name)
        if new or current is None:
            return Conversation() if create or new else None
        if not isinstance(current, Conversation):
            raise UsageError(
                f"-n/--name: the variable {name!r} holds a {type(current).__name__}, not an "
                "nbchat.Conversation; pick another name or use --new to replace it"
            )
        return current

    def named(self, name: str | None, create: bool = False) -> Any:
        """The conversation a %chat command acts on (bound in the namespace with `create`)."""
        name = check_name(name or self.settings.conversation, "-n/--name")
        conv = self.conversation(name, new=False, create=create)
        if conv is None:
            raise UsageError(f"no conversation {name!r} yet: run a %%chat cell first (or -n VAR)")
        if create:
            self.shell.user_ns.setdefault(name, conv)
        return conv

    def backend_name(self, flag: str | None) -> str:
        """--backend NAME (or NbChat.backend) resolved to a backend name ("auto" decided)."""
        from ..backends import resolve_name
        from ..errors import ValidationError

        try:
            return resolve_name(flag or self.settings.backend)
        except ValidationError as exc:
            where = "--backend" if flag else "NbChat.backend"
            raise UsageError(f"{where}: {exc.message}") from None

    def backend(self, name: str, model: str | None) -> Any:
        """The backend `name` built by the registry with NbChat's endpoint and key, one object
        per (name, endpoint, key, model named): a local engine is shared, a client reused."""
        from ..backends import get_backend
        from ..errors import NbChatError

        s = self.settings
        key = (name, s.base_url, hash(s.api_key), model)
        backend = self._backends.get(key)
        if backend is None:
            try:
                backend = get_backend(
                    name, model=model, base_url=s.base_url or None, api_key=s.api_key or None
                )
            except NbChatError as exc:
                raise UsageError(f"backend {name!r}: {exc.message}") from None
            self._backends[key] = backend
        return backend

    def preconnect(self) -> None:
        """At %load_ext: open the hosted backend's connection in the background, so the first
        turn skips TCP and TLS (bench/hosted_turns.py). No request is sent, nothing is shown
        on failure; NBCHAT_PRECONNECT=0 turns it off."""
        import os
        import threading

        if os.environ.get("NBCHAT_PRECONNECT", "1") == "0":
            return

        def run() -> None:
            try:
                name = self.backend_name(None)
                if name in ("cohere", "v2"):  # the same instance the first %%chat takes
                    self.backend(name, self.settings.model or None).preconnect()
            except Exception:
                pass

        threading.Thread(target=run, name="nbchat-preconnect", daemon=True).start()


# -- extension hooks --------------------------------------------------------------------------------
def _owned_by_us(func: Any) -> bool:
    return isinstance(getattr(func, "__self__", None), ChatMagics)


def plain_help(doc: str | None) -> str:
    """`%%chat?` shows docstrings as they are: drop the reST markup (``::``, double backticks)
    that IPython's magic_arguments and our own text would otherwise show raw."""
    text = (doc or "").replace("``", "")
    if text.startswith("::\n"):
        text = text[3:].lstrip("\n")
    return text


ChatMagics.chat_cell.__doc__ = plain_help(ChatMagics.chat_cell.__doc__)
ChatMagics.chat_line.__doc__ = plain_help(ChatMagics.chat_line.__doc__)


def load_ipython_extension(ipython: Any) -> None:
    """Register %%nbchat/%nbchat always, %%chat/%chat unless another extension owns them."""
    unload_ipython_extension(ipython)  # %reload_ext: drop our previous instance first
    magics = ChatMagics(ipython)
    ipython.register_magics(magics)
    magics.errors.register()
    if magics.settings not in ipython.configurables:
        ipython.configurables.append(magics.settings)  # reachable from %config NbChat
    table = ipython.magics_manager.magics
    for kind, func in (("cell", magics.chat_cell), ("line", magics.chat_line)):
        owner = table[kind].get("chat")
        if owner is not None and not _owned_by_us(owner):
            prefix = "%%" if kind == "cell" else "%"
            where = (
                getattr(owner, "__module__", None)
                or type(getattr(owner, "__self__", owner)).__module__
            )
            warnings.warn(
                f"nbchat: {prefix}chat is already defined (by {where}); not replacing it. "
                f"Use {prefix}nbchat instead.",
                stacklevel=2,
            )
            continue
        ipython.magics_manager.register_function(func, kind, "chat")
    magics.preconnect()


def unload_ipython_extension(ipython: Any) -> None:
    table = ipython.magics_manager.magics
    for kind in ("cell", "line"):
        for name in ("chat", "nbchat"):
            func = table[kind].get(name)
            if _owned_by_us(func):
                func.__self__.errors.unregister()
                del table[kind][name]
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, NbChat)]
