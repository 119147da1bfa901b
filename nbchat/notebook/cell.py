"""What one ``%%chat`` cell does: parse, build the exact request, then run it live or static.

* **Live** (an interactive front end, see `kernel.is_live`): the cell returns at once and a
  worker streams into a `TurnView`.
* **Static** (nbclient, nbconvert --execute, papermill, terminal IPython): the turn runs in the
  cell, errors raise (a failed call fails the run) and the output is a text/plain +
  text/markdown + text/html bundle.
* ``--dry-run``: the validated request is shown as JSON; nothing is sent or changed.

Re-running a cell replaces its turn: the key is the front end's cell id (``cellId`` in the
execute_request metadata). Without one (terminal IPython, nbclient) every run appends.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .dryrun import show_request as _show_request
from .flags import flag_message, request_fields
from .interpolate import interpolate
from .interrupt import install as _install_interrupt
from .interrupt import watch
from .kernel import cell_info, is_live
from .values import tool_functions

if TYPE_CHECKING:  # pragma: no cover
    from .host import ChatHost

__all__ = ["run_cell"]


def run_cell(m: ChatHost, line: str, cell: str) -> None:
    from .host import check_name

    s = m.settings
    ns = m.shell.user_ns
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%%chat: cannot parse the flags: {exc}") from None
    do_interp = s.interpolate and "--no-interpolate" not in tokens
    err = m.errors.lookup  # @{Err} / @{Err[n]}
    if do_interp:
        tokens = [interpolate(t, ns, "the %%chat flags", err) for t in tokens]
    args = parse_flags(m.chat_cell.parser, tokens)
    prompt = interpolate(cell, ns, special=err) if do_interp else cell
    prompt = prompt.strip("\n")
    if not prompt.strip():
        raise UsageError("%%chat: the cell is empty; write the message below the %%chat line")
    if args.context:
        from .context import describe
        from .values import lookup

        described = [describe(v, lookup(ns, v, "--context")) for v in args.context]
        prompt = "\n\n".join([prompt, *described])

    name = check_name(args.name or s.conversation, "-n/--name")
    backend_name = m.backend_name(args.backend)
    conv = m.conversation(name, new=args.new, create=not args.dry_run)
    params = _params(m, args, conv)
    tools = tool_functions(ns, args.tools) if args.tools else None
    info = cell_info(m.shell)
    if args.compare:
        from .comparecell import run_compare

        return run_compare(m, args, prompt, conv, name, params, tools, info, backend_name)
    if args.keep is not None:
        raise UsageError("--keep: only with --compare (which variant becomes the reply)")
    backend = m.backend(backend_name, params.get("model"))

    # The exact request, composed and validated now the way the runner will (`compose`): a
    # bad value changes nothing and sends nothing, and --dry-run shows the body as sent.
    request = _request(conv, prompt, params, backend, tools, info)
    if args.dry_run:
        _show_request(request)
        return None

    assert conv is not None
    params["model"] = request["model"]  # resolved once (a server may have been asked)
    _check_backend(backend, request)
    ns[name] = conv  # bind before starting: later cells can wait() on it at once
    from .. import runner
    from ..errors import NbChatError, ValidationError
    from .render import shown_params

    approve_all = s.auto_approve_tools
    if is_live(m.shell, s.live):
        from .view import TurnView

        view = TurnView(
            prompt,
            params=shown_params(params, tools),
            title=f"{name} · {params['model']}",
            images=_thumbnails(request),
        )
        view.display()
        from .viewactions import ViewActions

        actions = view.actions = ViewActions(view, conv, backend)
        try:
            # Returns at once; a turn still streaming in this conversation is waited for
            # in the worker, and a re-run of the same cell cancels and replaces its turn.
            handle = runner.start_turn(
                conv,
                backend,
                prompt,
                params,
                cell=info,
                listener=_code_to_cell(m, args, actions.listener(view.listener()), view),
                tools=tools,
                approve=None if approve_all else view.approve,
                background=True,
            )
        except ValidationError as exc:
            raise UsageError(flag_message(exc)) from None
        view.attach(handle)
        watch_interrupts(m.shell, conv)
        if args.wait:
            handle.wait()  # Ctrl-C cancels the turn
            handle.turn.raise_for_status()
        return None

    # No live front end: run here, show a static bundle, raise if the call failed.
    recorder = _Recorder()
    try:
        runner.start_turn(
            conv,
            backend,
            prompt,
            params,
            cell=info,
            listener=_code_to_cell(m, args, recorder, None),
            tools=tools,
            approve=None if approve_all else lambda calls: _headless_approve(m.shell, calls),
            background=False,
        )
    except ValidationError as exc:
        if recorder.turn is None:  # rejected before anything was sent
            raise UsageError(flag_message(exc)) from None
        _show_static(recorder.turn)
        raise
    except (NbChatError, KeyboardInterrupt, Exception):
        if recorder.turn is not None:
            _show_static(recorder.turn)
        raise
    _show_static(recorder.turn)
    return None


def _code_to_cell(m: ChatHost, args: Any, listener: Any, view: Any) -> Any:
    """--code: the listener, wrapped to put the reply's first code block into a new cell."""
    if not args.code:
        return listener
    from .actions import CodeToCell

    return CodeToCell(listener, m.shell, view)


def _params(m: ChatHost, args: Any, conv: Any) -> dict[str, Any]:
    """v2 request fields: NbChat.defaults, then the conversation's, then the flags; the model
    only when one is named (else `compose` asks the backend registry's policy)."""
    s = m.settings
    flags = request_fields(args, m.shell.user_ns)
    conv_params = dict(conv.params or {}) if conv is not None else {}
    params = {**s.checked_defaults(), **conv_params, **flags}
    model = args.model or params.get("model") or s.model
    params.pop("model", None)
    if model:
        params["model"] = model
    if args.system is not None:
        params["system"] = args.system  # this request uses it; the turn stores it
    window = args.history if args.history is not None else s.history_window
    if window is not None:  # not v2 fields: compose takes them out (see nbchat.context)
        if window < 0:
            raise UsageError(f"--history: {window} must be >= 0 (turns to send)")
        params["history_window"] = window
    if s.max_input_tokens is not None:
        params["max_input_tokens"] = s.max_input_tokens
    return params


def _request(
    conv: Any,
    prompt: str,
    params: dict[str, Any],
    backend: Any,
    tools: list[Any] | None,
    info: dict[str, Any],
) -> dict[str, Any]:
    """The first-round body the runner will send: validated, or a UsageError naming the flag."""
    from ..compose import build_request
    from ..errors import ValidationError

    try:
        composed = build_request(conv, prompt, params, backend=backend, tools=tools, cell=info)
    except ValidationError as exc:
        raise _usage(exc) from None
    return dict(composed.request)


def _check_backend(backend: Any, request: dict[str, Any]) -> None:
    """The backend's own refusal (e.g. the embedded model and images), before any output."""
    from ..errors import ValidationError

    check = getattr(backend, "check_request", None)
    if not callable(check):
        return
    try:
        check(request)
    except ValidationError as exc:
        raise _usage(exc) from None


def _usage(exc: Any) -> UsageError:
    """A ValidationError as a UsageError naming the flag (an image refused: --image)."""
    if exc.value == "image_url":
        return UsageError(f"--image: {exc.message}")
    return UsageError(flag_message(exc))


def _thumbnails(request: dict[str, Any]) -> list[str]:
    """What the view shows for the images of the request's new user message."""
    from ..images import count_images, placeholder, thumbnail

    blocks = count_images(request["messages"][-1:])
    return [thumbnail(b) or placeholder(b) for b in blocks]


class _Recorder:
    """Listener for a headless run: keeps the turn so it can be shown even when it failed."""

    turn: Any = None

    def on_done(self, turn: Any) -> None:
        self.turn = turn


def _show_static(turn: Any) -> None:
    from IPython.display import display

    from .render import static_bundle  # (render avoids loading anywidget)

    display(static_bundle(turn), raw=True)


def _headless_approve(shell: Any, calls: list[dict[str, Any]]) -> bool:
    """No live view to click in: ask on a terminal, else deny (and say how to allow)."""
    names = ", ".join((c.get("function") or {}).get("name", "?") for c in calls)
    if getattr(shell, "kernel", None) is None and sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"nbchat: run tool call(s) {names}? [y/N] ")
        return answer.strip().lower() in ("y", "yes")
    print(
        f"nbchat: tool call(s) {names} denied: no live front end to approve them. "
        "Set %config NbChat.auto_approve_tools = True to run tools in headless runs.",
        file=sys.stderr,
    )
    return False


def watch_interrupts(shell: Any, conv: Any) -> None:
    """Kernel → Interrupt stops this conversation's streaming replies (see interrupt.py)."""
    watch(conv)
    _install_interrupt(shell)


def parse_flags(parser: Any, tokens: list[str]) -> Any:
    """argparse, plus "did you mean --temperature?" for a mistyped flag."""
    import difflib

    try:
        return parser.parse_args(tokens)
    except UsageError as exc:
        from .flags import FLAGS

        known = sorted({n for f in FLAGS for n in f.names} | {"--help"})
        hints = []
        for tok in tokens:
            flag = tok.split("=", 1)[0]
            if flag.startswith("-") and flag not in known and len(flag) > 2:
                close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
                if close:
                    hints.append(f"{flag}: did you mean {close[0]}?")
        if not hints:
            raise
        raise UsageError(f"{exc}\n" + "\n".join(hints)) from None
