"""The ``%chat <command>`` line magic: panel, reset, history, resume, search, models, export,
config, stop (the history store's commands are in `historycmd`)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .kernel import is_live

if TYPE_CHECKING:  # pragma: no cover
    from .host import ChatHost

__all__ = ["run_command", "COMMANDS_HELP"]

COMMANDS_HELP = """Conversation commands: %chat <command> [-n VAR].

Commands
--------
panel             show (and return) the parameter panel driving the conversation
reset             forget every turn (the system prompt stays); stops a running reply
history [--all]   the transcript and this kernel's stored conversations; --all: every
                  stored conversation (id, title, notebook, turns, last used, model)
resume [ID]       continue a stored conversation in the variable (-n VAR); no ID: this
                  notebook's last conversation
search TEXT       stored turns whose prompt, reply or thinking contain every word
models            list the models the backend offers (--backend NAME to pick one)
export [PATH]     PATH.json (Conversation.save) or PATH.csv (to_dataframe); no path:
                  return the DataFrame
config            show the NbChat settings (the API key only as set/unset)
stop              stop the streaming reply (the partial text stays, flagged)
continue          continue the last reply where MAX_TOKENS or Stop cut it (same turn)
regenerate        re-run the last turn, replacing it (the old reply: turn.alternatives)
fix [N] [FLAGS]   send the last error (or cell [N]'s) with the source of the cell that
                  raised it, asking for the corrected cell; FLAGS are %%chat flags
                  (e.g. --code: the fix goes into a new cell below)

``-n VAR`` picks the Conversation variable (default: NbChat.conversation, "chat").
"""


def run_command(magics: ChatHost, line: str) -> Any:
    """Parse and run one ``%chat`` line."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%chat: {exc}") from None
    names = ", ".join(_COMMANDS)
    if not tokens:
        var = magics.settings.conversation
        if var not in magics.shell.user_ns:
            # typing `chat` (the variable) after a restart reaches here through automagic
            raise UsageError(
                f"{var!r} is not defined in this kernel (restarted?). Run a %%chat cell to "
                "start a conversation, or %chat resume to reload the last one from history. "
                f"Commands: %chat {' | '.join(_COMMANDS)}"
            )
        raise UsageError(
            "%chat needs a command: panel, reset, history [--all], resume [ID], search TEXT, "
            "models, export [path], config, stop, continue, regenerate, fix [N] "
            "(%%chat with a cell body sends a message; see %%chat?)"
        )
    command, rest = tokens[0].lower(), tokens[1:]
    name, backend, rest = _pop_options(rest)
    handler = _COMMANDS.get(command)
    if handler is None:
        raise UsageError(f"%chat: unknown command {command!r}; allowed: {names}")
    if command == "fix":
        return _fix(magics, name=name, backend=backend, args=rest)
    if rest and command not in ("export", "history", "resume", "search"):
        raise UsageError(f"%chat {command}: unexpected arguments {' '.join(rest)!r}")
    return handler(magics, name=name, backend=backend, args=rest)


def _panel(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> Any:
    """Returns the panel: it shows as the cell's result, and `p = %chat panel` binds it."""
    from .panel import Panel

    conv = m.named(name, create=True)
    model = m.settings.model or None
    b = m.backend(m.backend_name(backend), model)
    return Panel(conv, b, model=model, defaults=m.settings.checked_defaults())


def _reset(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    m.named(name).reset()


def _history(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> Any:
    from .historycmd import history_command

    return history_command(m, name=name, args=args)


def _resume(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    from .historycmd import resume_command

    resume_command(m, name=name, args=args)


def _search(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> Any:
    from .historycmd import search_command

    return search_command(m, name=name, args=args)


def _models(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    from ..errors import NbChatError

    bname = m.backend_name(backend)
    try:
        models = m.backend(bname, m.settings.model or None).models()
    except NbChatError as exc:
        raise UsageError(f"%chat models ({bname}): {exc.message}") from None
    print("\n".join(models) if models else f"({bname}: no model list available)")


def _export(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> Any:
    conv = m.named(name)
    if len(args) > 1:
        raise UsageError("%chat export takes one path (.json or .csv)")
    if not args:
        return conv.to_dataframe()
    path = args[0]
    if path.lower().endswith(".json"):
        conv.save(path)
    elif path.lower().endswith(".csv"):
        conv.to_dataframe().to_csv(path, index=False)
    else:
        raise UsageError(f"%chat export: {path!r} must end in .json or .csv")
    print(f"saved {len(conv)} turn(s) to {path}")
    return None


def _config(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    import os

    from ..errors import redact

    s = m.settings
    env = [k for k in ("CO_API_KEY", "COHERE_API_KEY") if os.environ.get(k)]
    key = (
        "set in NbChat.api_key (hidden)"
        if s.api_key
        else (f"from {env[0]} (hidden)" if env else "not set")
    )
    try:
        resolved = m.backend_name(None)
    except UsageError as exc:
        resolved = str(exc)
    live = "live" if is_live(m.shell, s.live) else "static"
    from ..backends import backend_names

    rows = [
        ("backend", f"{s.backend!r} -> {resolved} (known: {', '.join(backend_names())})"),
        ("model", repr(s.model) + ("" if s.model else " (backend default)")),
        ("base_url", repr(s.base_url) + ("" if s.base_url else " (backend default)")),
        ("api_key", key),
        ("defaults", repr(dict(s.defaults))),
        ("auto_approve_tools", repr(s.auto_approve_tools)),
        ("interpolate", repr(s.interpolate)),
        ("live", f"{s.live!r} (this cell: {live})"),
        ("conversation", repr(s.conversation)),
        ("history", _history_setting(s.history)),
    ]
    print(redact("\n".join(f"NbChat.{k:<19} {v}" for k, v in rows)))


def _history_setting(value: Any) -> str:
    from ..history import resolve_path

    path = resolve_path(value)
    return f"{value!r} -> " + (str(path) if path is not None else "off")


def _fix(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    from .actions import fix_prompt
    from .cell import run_cell

    n = None
    if args and args[0].lstrip("-").isdigit():
        n, args = int(args[0]), args[1:]
    err = m.errors.get(n, "%chat fix")
    flags = [*args, "--no-interpolate"]
    if name:
        flags += ["-n", name]
    if backend:
        flags += ["--backend", backend]
    return run_cell(m, shlex.join(flags), fix_prompt(err, m.errors.format(err)))


def _continue(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    _followup(m, name, backend, "continue")


def _regenerate(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    _followup(m, name, backend, "regenerate")


def _followup(m: ChatHost, name: str | None, backend: str | None, kind: str) -> None:
    """%chat continue / regenerate: live view or static bundle, like a %%chat cell."""
    from ..errors import ValidationError
    from .cell import _Recorder, _show_static

    conv = m.named(name)
    last = conv.last
    model = (last.model if last is not None else None) or m.settings.model or None
    b = m.backend(m.backend_name(backend), model)
    live = is_live(m.shell, m.settings.live)
    view = None
    listener: Any = _Recorder()
    if live:
        from .view import TurnView

        prompt = last.prompt if last is not None else ""
        view = TurnView(prompt, title=f"{kind} · {model or ''}".strip(" ·"), refresh_fallback=False)
        view.display()
        listener = view.listener()
    run = conv.continue_ if kind == "continue" else conv.regenerate
    try:
        turn = run(b, wait=not live, listener=listener)
    except ValidationError as exc:
        if view is not None:
            view.show_error(exc)
        raise UsageError(f"%chat {kind}: {exc}") from None
    except Exception:
        if listener.__class__ is _Recorder and listener.turn is not None:
            _show_static(listener.turn)
        raise
    if view is not None:
        handles = conv.running_handles()
        if handles:
            view.attach(handles[-1])
    else:
        _show_static(turn)


def _stop(m: ChatHost, *, name: str | None, backend: str | None, args: list[str]) -> None:
    conv = m.named(name)
    label = name or m.settings.conversation
    handles = conv.running_handles()
    if not handles:
        print(f"nothing to stop: no reply is streaming in {label}")
        return
    for h in handles:
        h.cancel()
    for h in handles:
        h.wait(5)
        t = h.turn
        n = len(t.text or "")
        print(
            f"stopped the reply to {_short(t.prompt)} in {label} after {n} character"
            f"{'' if n == 1 else 's'} (partial reply kept, marked stopped)"
        )


def _short(prompt: Any) -> str:
    text = " ".join(str(prompt or "").split())
    return repr(text if len(text) <= 40 else text[:39] + "…")


_COMMANDS = {
    "panel": _panel,
    "reset": _reset,
    "history": _history,
    "resume": _resume,
    "search": _search,
    "models": _models,
    "export": _export,
    "config": _config,
    "stop": _stop,
    "fix": _fix,
    "continue": _continue,
    "regenerate": _regenerate,
}


def _pop_options(tokens: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Take -n/--name VAR and --backend NAME out of a %chat command line."""
    name = backend = None
    rest: list[str] = []
    it = iter(tokens)
    for tok in it:
        if tok in ("-n", "--name", "--backend"):
            value = next(it, None)
            if value is None:
                raise UsageError(f"%chat: {tok} needs a value")
            if tok == "--backend":
                backend = value
            else:
                name = value
        elif tok.startswith("--name="):
            name = tok.split("=", 1)[1]
        elif tok.startswith("--backend="):
            backend = tok.split("=", 1)[1]
        else:
            rest.append(tok)
    return name, backend, rest
