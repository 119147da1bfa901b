"""The ``%%chat`` cell magic, the ``%chat`` command magic and the ``NbChat`` settings.

``%load_ext nbchat`` registers ``%%chat`` and ``%%nbchat`` (the same magic; ``chat`` is skipped
with a warning when another extension already owns it) and the line magic ``%chat <command>``.

Rules this module implements (they are also in the ``%%chat?`` help):

* **Interpolation**: ``@{expr}`` in the cell (and in flag values) is replaced by ``str(expr)``
  evaluated in the notebook namespace; ``@@{`` is a literal ``@{``. Braces alone never mean
  anything, so dicts, f-strings, JSON and templates pass through untouched. An undefined name
  is a UsageError naming it. Off with ``--no-interpolate`` or ``%config NbChat.interpolate = False``.
* **Re-running a cell replaces its turn**: the key is the front end's cell id (``cellId`` in the
  execute_request metadata; JupyterLab, Notebook 7 and VS Code send it). Without a cell id
  (terminal IPython, nbclient) every run appends: there is no "same cell" to recognise, and a
  content hash would merge deliberate repeats while missing an edited re-run.
* **Live or static**: live (the cell returns at once, a worker streams into the view) when the
  kernel's execute_request has ``allow_stdin: true`` — interactive front ends (JupyterLab,
  Notebook, VS Code) send it, headless executors (nbclient, so nbconvert --execute and
  papermill) send false because nobody can answer ``input()``. No kernel (terminal IPython,
  a bare InteractiveShell) is not live. ``%config NbChat.live = "always" | "never"`` overrides.
  Not live: the turn runs in the cell, errors raise (a failed call fails the run) and the
  output is a static text/plain + text/markdown + text/html bundle.

Import cost matters (``%load_ext`` must stay well under 0.3 s): only IPython, traitlets and
the standard library are imported here; backends, the runner and the view load on first use.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import warnings
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, kwds, magic_arguments
from traitlets import Bool, Dict, Enum, Unicode, observe
from traitlets.config import Configurable

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

# Cohere's names for each request field, mapped to the flag a user would fix.
FIELD_FLAGS = {
    "model": "-m/--model",
    "temperature": "-t/--temperature",
    "p": "-p",
    "k": "-k",
    "frequency_penalty": "--frequency-penalty",
    "presence_penalty": "--presence-penalty",
    "max_tokens": "--max-tokens",
    "seed": "--seed",
    "stop_sequences": "--stop",
    "safety_mode": "--safety-mode",
    "citation_options": "--citations",
    "logprobs": "--logprobs",
    "priority": "--priority",
    "tool_choice": "--tool-choice",
    "strict_tools": "--strict-tools",
    "response_format": "--json/--schema",
    "documents": "--documents",
    "tools": "--tools",
    "messages": "the prompt / --system",
}

# -- interpolation -------------------------------------------------------------------------------
_INTERP = re.compile(r"@@\{|@\{([^{}]*)\}")


def interpolate(text: str, namespace: dict[str, Any], where: str = "the prompt") -> str:
    """Replace each ``@{expr}`` in `text` with ``str(eval(expr, namespace))``; ``@@{`` -> ``@{``.

    Any other character (``{``, ``}``, ``$``, ``{{``) is left alone. Errors are UsageErrors
    naming the expression and the missing variable.
    """

    def substitute(m: re.Match[str]) -> str:
        if m.group(1) is None:  # the @@{ escape
            return "@{"
        expr = m.group(1).strip()
        if not expr:
            raise UsageError(f"empty @{{}} in {where}: write @{{name}}, or @@{{ for a literal @{{")
        try:
            value = eval(expr, namespace)  # the user's own kernel namespace, like {expr} in IPython
        except NameError as exc:
            name = getattr(exc, "name", None) or str(exc)
            raise UsageError(
                f"@{{{expr}}} in {where}: variable {name!r} is not defined "
                "(define it first; write @@{ for a literal @{, or use --no-interpolate)"
            ) from None
        except Exception as exc:
            raise UsageError(
                f"@{{{expr}}} in {where} failed: {type(exc).__name__}: {exc} "
                "(write @@{ for a literal @{, or use --no-interpolate)"
            ) from None
        return value if isinstance(value, str) else str(value)

    return _INTERP.sub(substitute, text)


# -- the front end ---------------------------------------------------------------------------------
def parent_message(shell: Any) -> dict[str, Any] | None:
    """The kernel's current execute_request (header, metadata, content), or None without a kernel."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "get_parent"):
        return None
    try:
        msg = kernel.get_parent("shell")
    except TypeError:  # very old ipykernel: no channel argument
        msg = kernel.get_parent()
    return msg or None


def is_live(shell: Any, mode: str = "auto") -> bool:
    """Whether a live front end (one that renders widgets as they change) ran this cell.

    ``mode`` "always"/"never" override. Otherwise: a kernel request with ``allow_stdin`` true.
    JupyterLab/Notebook 7 default ``allow_stdin: true`` (``KernelConnection.requestExecute``);
    nbclient sets ``kc.allow_stdin = False`` (nbconvert --execute and papermill run on it).
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    msg = parent_message(shell)
    if not msg:
        return False
    content = msg.get("content") or {}
    return bool(content.get("allow_stdin", False))


def _cell_info(shell: Any) -> dict[str, Any]:
    msg = parent_message(shell) or {}
    cell_id = (msg.get("metadata") or {}).get("cellId")
    return {"cell_id": str(cell_id) if cell_id else None, "execution_count": shell.execution_count}


# -- settings ---------------------------------------------------------------------------------------
class _HiddenStr(str):
    """A str whose repr never shows it: `%config NbChat` prints ``Current: <repr>``."""

    def __repr__(self) -> str:
        return "'<hidden>'" if self else "''"


class _Secret(Unicode):
    def validate(self, obj: Any, value: Any) -> str:
        return _HiddenStr(super().validate(obj, value))


class NbChat(Configurable):
    """Persistent %%chat settings: ``%config NbChat.model = "..."`` or ``c.NbChat.model`` in
    ipython_config.py. Flags on a %%chat line override them for that cell."""

    backend = Unicode(
        "auto",
        help="Where replies come from: auto (Cohere if CO_API_KEY/COHERE_API_KEY is set, else "
        "the embedded model), cohere, v2 (any v2 endpoint at base_url, e.g. nbchat serve), "
        "local (embedded SmolLM2), openai.",
    ).tag(config=True)
    model = Unicode(
        "", help="Model name; empty: the backend's default (smollm2-135m locally)."
    ).tag(config=True)
    base_url = Unicode(
        "", help="Base URL of the v2 (or OpenAI-compatible) endpoint; empty: the backend default."
    ).tag(config=True)
    api_key = _Secret(
        "",
        help="API key (empty: CO_API_KEY / COHERE_API_KEY from the environment). Never a flag, "
        "never shown: prefer the environment so notebooks never hold it.",
    ).tag(config=True)
    defaults = Dict(
        help="Request parameters sent with every %%chat unless a flag overrides them, e.g. "
        "{'temperature': 0.2, 'max_tokens': 300}. Keys are v2 field names."
    ).tag(config=True)
    auto_approve_tools = Bool(
        False, help="Run tool calls without asking (else Approve/Deny in the view)."
    ).tag(config=True)
    interpolate = Bool(
        True, help="Replace @{expr} in prompts with the value of expr (@@{ = literal @{)."
    ).tag(config=True)
    live = Enum(
        ["auto", "always", "never"],
        "auto",
        help="auto: stream in the background when the front end is interactive (allow_stdin), "
        "else run synchronously with a static output; always/never force it.",
    ).tag(config=True)
    conversation = Unicode(
        "chat", help="Name of the Conversation variable %%chat uses when -n/--name is not given."
    ).tag(config=True)

    @observe("api_key")
    def _register_key(self, change: dict[str, Any]) -> None:
        from ..errors import register_secret

        register_secret(change["new"])  # so redact() hides it everywhere

    def __repr__(self) -> str:  # never show the key
        key = "set" if self.api_key else "unset"
        return f"NbChat(backend={self.backend!r}, model={self.model!r}, api_key=<{key}>)"


def _upper(value: str) -> str:
    return value.upper()


def _check_name(name: str, flag: str) -> str:
    if not name.isidentifier():
        raise UsageError(f"{flag}: {name!r} is not a valid Python variable name")
    return name


_CHAT_HELP = """Send the cell as the next user message and show the reply below it.

The conversation lives in a kernel variable (default ``chat``, an nbchat.Conversation;
created when missing): ``chat.messages`` is the plain v2 message list, ``chat.wait()``
blocks until a streaming reply is done, ``chat.to_dataframe()`` gives a table.

Interpolation: ``@{expr}`` in the cell or in a flag value is replaced by ``str(expr)``
evaluated in the notebook; ``@@{`` writes a literal ``@{``. Plain braces are never
touched, so code with dicts, f-strings or JSON is sent as written. A missing variable
is an error naming it. Off: --no-interpolate or %config NbChat.interpolate = False.

Re-running a cell replaces the turn it produced (keyed by the front end's cell id;
without one, e.g. in terminal IPython, each run appends).

Live front ends (JupyterLab, Notebook, VS Code) stream in the background and the cell
returns at once; headless runs (nbconvert --execute, papermill, terminal IPython) wait,
raise on errors and leave a static Markdown/HTML/text output. Override with
%config NbChat.live = "always" | "never".

Settings: %config NbChat (backend, model, base_url, api_key, defaults, auto_approve_tools,
interpolate, live, conversation). API keys come from CO_API_KEY or NbChat.api_key, never
from a flag. Commands: %chat panel | reset | history | models | export [path] | config | stop.

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

    # -- %%chat -----------------------------------------------------------------------------------
    @magic_arguments(name="%chat")  # IPython prefixes one more "%"
    @kwds(description=_CHAT_HELP)
    @argument(
        "-m",
        "--model",
        metavar="NAME",
        help="Model name, e.g. command-a-03-2025 or smollm2-135m. Unset: NbChat.model, else the backend's default.",
    )
    @argument(
        "-t",
        "--temperature",
        metavar="TEMP",
        type=float,
        help="Randomness, 0..1 (0 = greedy). Unset: not sent (API default 0.3).",
    )
    @argument(
        "-p", type=float, help="Top-p nucleus mass, 0.01..0.99. Unset: not sent (API default 0.75)."
    )
    @argument("-k", type=int, help="Top-k, 0..500 (0 = off). Unset: not sent (API default 0).")
    @argument(
        "--frequency-penalty",
        metavar="X",
        type=float,
        help="0..1, penalises tokens by how often they appeared. Unset: not sent (0).",
    )
    @argument(
        "--presence-penalty",
        metavar="X",
        type=float,
        help="0..1, penalises tokens that appeared at all. Unset: not sent (0).",
    )
    @argument(
        "--max-tokens",
        metavar="N",
        type=int,
        help="Maximum output tokens, >= 1 (finish reason MAX_TOKENS). Unset: the model's limit.",
    )
    @argument(
        "--seed",
        metavar="N",
        type=int,
        help="0..2**64-1; same seed + parameters -> same output (best effort). Unset: random.",
    )
    @argument(
        "--stop",
        action="append",
        metavar="TEXT",
        help="A stop sequence; repeat for several (at most 5). Unset: none.",
    )
    @argument(
        "--safety-mode",
        type=_upper,
        choices=["CONTEXTUAL", "STRICT", "OFF"],
        help="CONTEXTUAL, STRICT or OFF (any case). Unset: not sent (API default CONTEXTUAL).",
    )
    @argument(
        "--citations",
        type=_upper,
        choices=["FAST", "ACCURATE", "OFF", "ENABLED", "DISABLED"],
        metavar="MODE",
        help="Citation mode with --documents/--tools: FAST, ACCURATE, OFF (also ENABLED, DISABLED). Unset: API default (ACCURATE).",
    )
    @argument(
        "--logprobs",
        action="store_true",
        default=None,
        help="Return per-token log probabilities. Unset: off.",
    )
    @argument(
        "--priority",
        metavar="N",
        type=int,
        help="0..999, lower runs first when requests queue. Unset: not sent (0).",
    )
    @argument(
        "--tool-choice",
        type=_upper,
        choices=["REQUIRED", "NONE"],
        help="With --tools: REQUIRED (must call a tool) or NONE (must not). Unset: the model decides.",
    )
    @argument(
        "--strict-tools",
        action="store_true",
        default=None,
        help="Tool call arguments must match the tool schemas. Unset: off.",
    )
    @argument(
        "--json",
        action="store_true",
        default=None,
        help="Reply with a JSON object (response_format json_object). Unset: text.",
    )
    @argument(
        "--schema",
        metavar="VAR",
        help="A variable holding a JSON schema (dict, JSON string or pydantic model); implies --json. Unset: any JSON object.",
    )
    @argument(
        "--documents",
        metavar="VAR",
        help="A variable holding documents for grounded replies: a list of str/dicts, or a pandas DataFrame (one document per row). Unset: none.",
    )
    @argument(
        "--tools",
        metavar="VAR",
        help="A variable holding a Python function or a list of them; each becomes a tool (schema from signature, hints and docstring). Unset: none.",
    )
    @argument(
        "--system",
        metavar="TEXT",
        help="Set the conversation's system prompt (kept for later turns). Unset: keep the current one.",
    )
    @argument(
        "-n",
        "--name",
        metavar="VAR",
        help="The Conversation variable to use (created if missing). Unset: NbChat.conversation ('chat').",
    )
    @argument(
        "--new",
        action="store_true",
        help="Start a fresh Conversation in that variable (the old one is dropped).",
    )
    @argument(
        "--wait",
        action="store_true",
        help="Block until the reply is complete, even with a live front end.",
    )
    @argument(
        "--dry-run",
        action="store_true",
        help="Show the exact validated request as JSON; send nothing, change nothing.",
    )
    @argument(
        "--backend",
        type=str.lower,
        choices=["auto", "cohere", "v2", "local", "openai"],
        help="auto, cohere, v2, local or openai. Unset: NbChat.backend (auto: Cohere when a key is set, else local).",
    )
    @argument(
        "--no-interpolate",
        action="store_true",
        help="Send @{...} literally. Unset: NbChat.interpolate (on).",
    )
    @no_var_expand
    @cell_magic("nbchat")
    def chat_cell(self, line: str, cell: str) -> None:
        return self._run_cell(line, cell)

    # -- %chat ------------------------------------------------------------------------------------
    @no_var_expand
    @line_magic("nbchat")
    def chat_line(self, line: str) -> Any:
        """Conversation commands: %chat <command> [-n VAR].

        Commands
        --------
        panel             show the parameter panel driving the conversation
        reset             forget every turn (the system prompt stays); stops a running reply
        history           show the transcript
        models            list the models the backend offers (--backend NAME to pick one)
        export [PATH]     PATH.json (Conversation.save) or PATH.csv (to_dataframe); no path:
                          return the DataFrame
        config            show the NbChat settings (the API key only as set/unset)
        stop              stop the streaming reply (the partial text stays, flagged)

        ``-n VAR`` picks the Conversation variable (default: NbChat.conversation, "chat").
        """
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%chat: {exc}") from None
        if not tokens:
            raise UsageError(
                "%chat needs a command: panel, reset, history, models, export [path], config, stop "
                "(%%chat with a cell body sends a message; see %%chat?)"
            )
        command, rest = tokens[0].lower(), tokens[1:]
        name, backend, rest = _pop_options(rest)
        handler = {
            "panel": self._cmd_panel,
            "reset": self._cmd_reset,
            "history": self._cmd_history,
            "models": self._cmd_models,
            "export": self._cmd_export,
            "config": self._cmd_config,
            "stop": self._cmd_stop,
        }.get(command)
        if handler is None:
            raise UsageError(
                f"%chat: unknown command {command!r}; allowed: panel, reset, history, models, export, config, stop"
            )
        if rest and command != "export":
            raise UsageError(f"%chat {command}: unexpected arguments {' '.join(rest)!r}")
        return handler(name=name, backend=backend, args=rest)

    # -- the cell magic's work ----------------------------------------------------------------------
    def _run_cell(self, line: str, cell: str) -> None:
        s = self.settings
        ns = self.shell.user_ns
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%%chat: cannot parse the flags: {exc}") from None
        do_interp = s.interpolate and "--no-interpolate" not in tokens
        if do_interp:
            tokens = [interpolate(t, ns, "the %%chat flags") for t in tokens]
        args = self.chat_cell.parser.parse_args(tokens)
        prompt = interpolate(cell, ns) if do_interp else cell
        prompt = prompt.strip("\n")
        if not prompt.strip():
            raise UsageError("%%chat: the cell is empty; write the message below the %%chat line")

        name = _check_name(args.name or s.conversation, "-n/--name")
        backend_name = self._backend_name(args.backend)
        conv = self._conversation(name, new=args.new, create=not args.dry_run)
        params = self._params(args, backend_name, conv)
        if not params["model"]:  # e.g. an OpenAI-compatible server: ask it which model it serves
            from ..backends import resolve_model
            from ..errors import NbChatError

            try:
                params["model"] = resolve_model(self._backend(backend_name, None))
            except NbChatError as exc:
                raise UsageError(f"-m/--model: {exc.message}") from None
        tools = self._tools(args.tools) if args.tools else None
        cell_info = _cell_info(self.shell)
        system = args.system if args.system is not None else (conv.system if conv else None)

        # The exact request, validated now: a bad value changes nothing and sends nothing.
        request = self._request(conv, prompt, params, tools, system, cell_info)
        if args.dry_run:
            _show_request(request)
            return None

        assert conv is not None
        if args.system is not None:
            params["system"] = args.system  # the runner sets it together with the new turn
        backend = self._backend(backend_name, params.get("model"))
        ns[name] = conv  # bind before starting: later cells can wait() on it at once
        from .. import runner
        from ..errors import NbChatError, ValidationError

        if is_live(self.shell, s.live):
            from .view import TurnView

            view = TurnView(
                prompt, params=_shown_params(params, tools), title=f"{name} · {params['model']}"
            )
            view.display()
            try:
                # Returns at once; a turn still streaming in this conversation is waited for
                # in the worker, and a re-run of the same cell cancels and replaces its turn.
                handle = runner.start_turn(
                    conv,
                    backend,
                    prompt,
                    params,
                    cell=cell_info,
                    listener=view.listener(),
                    tools=tools,
                    approve=None if s.auto_approve_tools else view.approve,
                    background=True,
                )
            except ValidationError as exc:
                raise UsageError(_flag_message(exc)) from None
            view.attach(handle)
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
                cell=cell_info,
                listener=recorder,
                tools=tools,
                approve=None if s.auto_approve_tools else self._headless_approve,
                background=False,
            )
        except ValidationError as exc:
            if recorder.turn is None:  # rejected before anything was sent
                raise UsageError(_flag_message(exc)) from None
            self._show_static(recorder.turn)
            raise
        except (NbChatError, KeyboardInterrupt, Exception):
            if recorder.turn is not None:
                self._show_static(recorder.turn)
            raise
        self._show_static(recorder.turn)
        return None

    @staticmethod
    def _show_static(turn: Any) -> None:
        from IPython.display import display

        from .render import static_bundle  # (re-exported by view; render avoids loading anywidget)

        display(static_bundle(turn), raw=True)

    def _headless_approve(self, calls: list[dict[str, Any]]) -> bool:
        """No live view to click in: ask on a terminal, else deny (and say how to allow)."""
        names = ", ".join((c.get("function") or {}).get("name", "?") for c in calls)
        if (
            getattr(self.shell, "kernel", None) is None
            and sys.stdin is not None
            and sys.stdin.isatty()
        ):
            answer = input(f"nbchat: run tool call(s) {names}? [y/N] ")
            return answer.strip().lower() in ("y", "yes")
        print(
            f"nbchat: tool call(s) {names} denied: no live front end to approve them. "
            "Set %config NbChat.auto_approve_tools = True to run tools in headless runs.",
            file=sys.stderr,
        )
        return False

    # -- building blocks -----------------------------------------------------------------------------
    def _backend_name(self, flag: str | None) -> str:
        from ..backends import resolve_name
        from ..errors import ValidationError

        try:
            return resolve_name(flag or self.settings.backend)
        except ValidationError as exc:
            where = "--backend" if flag else "NbChat.backend"
            raise UsageError(f"{where}: {exc.message}") from None

    def _backend(self, name: str, model: str | None) -> Any:
        """One backend object per (name, endpoint[, GGUF path]); the local engine loads once."""
        from ..backends import get_backend
        from ..errors import NbChatError

        s = self.settings
        gguf = model if name == "local" and model and model.endswith(".gguf") else None
        key = (name, s.base_url, hash(s.api_key), gguf, model if name == "openai" else None)
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

    def _params(self, args: Any, backend_name: str, conv: Any) -> dict[str, Any]:
        """v2 request fields: NbChat.defaults, then the conversation's, then the flags."""
        from ..backends import default_model
        from ..protocol.request import PARAM_FIELDS

        s = self.settings
        for key in s.defaults:
            if key not in PARAM_FIELDS or key == "stream":
                raise UsageError(
                    f"NbChat.defaults: unknown request field {key!r}; allowed: "
                    + ", ".join(f for f in PARAM_FIELDS if f != "stream")
                )
        ns = self.shell.user_ns
        flags: dict[str, Any] = {
            "temperature": args.temperature,
            "p": args.p,
            "k": args.k,
            "frequency_penalty": args.frequency_penalty,
            "presence_penalty": args.presence_penalty,
            "max_tokens": args.max_tokens,
            "seed": args.seed,
            "stop_sequences": args.stop,
            "safety_mode": args.safety_mode,
            "logprobs": args.logprobs,
            "priority": args.priority,
            "tool_choice": args.tool_choice,
            "strict_tools": args.strict_tools,
        }
        if args.citations:
            flags["citation_options"] = {"mode": args.citations}
        if args.schema:
            flags["response_format"] = {
                "type": "json_object",
                "json_schema": _schema(_lookup(ns, args.schema, "--schema")),
            }
        elif args.json:
            flags["response_format"] = {"type": "json_object"}
        if args.documents:
            flags["documents"] = _documents(_lookup(ns, args.documents, "--documents"))
        conv_params = dict(conv.params or {}) if conv is not None else {}
        params = {**s.defaults, **conv_params, **{k: v for k, v in flags.items() if v is not None}}
        params["model"] = (
            args.model or params.get("model") or s.model or default_model(backend_name)
        )
        return params

    def _tools(self, var: str) -> list[Any]:
        value = _lookup(self.shell.user_ns, var, "--tools")
        funcs = list(value) if isinstance(value, (list, tuple)) else [value]
        for f in funcs:
            if not callable(f) and not isinstance(f, dict):
                raise UsageError(
                    f"--tools {var}: {f!r} is not a function; give a function or a list of functions"
                )
        return funcs

    def _conversation(self, name: str, *, new: bool, create: bool) -> Conversation | None:
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

    def _request(
        self,
        conv: Any,
        prompt: str,
        params: dict[str, Any],
        tools: list[Any] | None,
        system: Any,
        cell_info: dict[str, Any],
    ) -> dict[str, Any]:
        """The body the runner will send (first round): validated, or a UsageError."""
        from ..errors import ValidationError
        from ..protocol.request import validate_request

        messages: list[dict[str, Any]] = []
        if conv is not None:
            before = conv.find_cell_turn(cell_info) if cell_info.get("cell_id") else None
            messages = [m for m in conv.history(before) if m.get("role") != "system"]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": params["model"], "messages": messages}
        body.update({k: v for k, v in params.items() if k not in ("model", "system")})
        try:
            if tools:
                from ..tools import function_to_tool

                body["tools"] = [function_to_tool(f) for f in tools]
            body["stream"] = True
            return validate_request(body)
        except ValidationError as exc:
            raise UsageError(_flag_message(exc)) from None

    # -- %chat commands ------------------------------------------------------------------------------
    def _named(self, name: str | None, create: bool = False) -> Any:
        name = _check_name(name or self.settings.conversation, "-n/--name")
        conv = self._conversation(name, new=False, create=create)
        if conv is None:
            raise UsageError(f"no conversation {name!r} yet: run a %%chat cell first (or -n VAR)")
        if create:
            self.shell.user_ns.setdefault(name, conv)
        return conv

    def _cmd_panel(self, *, name: str | None, backend: str | None, args: list[str]) -> None:
        from IPython.display import display

        from .panel import Panel

        conv = self._named(name, create=True)
        model = self.settings.model or None
        b = self._backend(self._backend_name(backend), model)
        display(Panel(conversation=conv, backend=b, model=model))

    def _cmd_reset(self, *, name: str | None, backend: str | None, args: list[str]) -> None:
        self._named(name).reset()

    def _cmd_history(self, *, name: str | None, backend: str | None, args: list[str]) -> None:
        from IPython.display import display

        display(self._named(name))

    def _cmd_models(self, *, name: str | None, backend: str | None, args: list[str]) -> None:
        from ..errors import NbChatError

        bname = self._backend_name(backend)
        try:
            models = self._backend(bname, self.settings.model or None).models()
        except NbChatError as exc:
            raise UsageError(f"%chat models ({bname}): {exc.message}") from None
        print("\n".join(models) if models else f"({bname}: no model list available)")

    def _cmd_export(self, *, name: str | None, backend: str | None, args: list[str]) -> Any:
        conv = self._named(name)
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

    def _cmd_config(self, *, name: str | None, backend: str | None, args: list[str]) -> None:
        import os

        from ..errors import redact

        s = self.settings
        env = [k for k in ("CO_API_KEY", "COHERE_API_KEY") if os.environ.get(k)]
        key = (
            "set in NbChat.api_key (hidden)"
            if s.api_key
            else (f"from {env[0]} (hidden)" if env else "not set")
        )
        try:
            resolved = self._backend_name(None)
        except UsageError as exc:
            resolved = str(exc)
        rows = [
            ("backend", f"{s.backend!r} -> {resolved}"),
            ("model", repr(s.model) + ("" if s.model else " (backend default)")),
            ("base_url", repr(s.base_url) + ("" if s.base_url else " (backend default)")),
            ("api_key", key),
            ("defaults", repr(dict(s.defaults))),
            ("auto_approve_tools", repr(s.auto_approve_tools)),
            ("interpolate", repr(s.interpolate)),
            (
                "live",
                f"{s.live!r} (this cell: {'live' if is_live(self.shell, s.live) else 'static'})",
            ),
            ("conversation", repr(s.conversation)),
        ]
        print(redact("\n".join(f"NbChat.{k:<19} {v}" for k, v in rows)))

    def _cmd_stop(self, *, name: str | None, backend: str | None, args: list[str]) -> None:
        self._named(name).cancel()


# -- helpers ----------------------------------------------------------------------------------------
class _Recorder:
    """Listener for a headless run: keeps the turn so it can be shown even when it failed."""

    turn: Any = None

    def on_done(self, turn: Any) -> None:
        self.turn = turn


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


def _lookup(ns: dict[str, Any], expr: str, flag: str) -> Any:
    """The value of a VAR flag: a variable (or expression) in the notebook namespace."""
    try:
        return eval(expr, ns)
    except NameError as exc:
        name = getattr(exc, "name", None) or expr
        raise UsageError(f"{flag}: variable {name!r} is not defined") from None
    except Exception as exc:
        raise UsageError(f"{flag} {expr}: {type(exc).__name__}: {exc}") from None


def _schema(value: Any) -> dict[str, Any]:
    if hasattr(value, "model_json_schema"):  # a pydantic v2 model class
        value = value.model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise UsageError(f"--schema: the string is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(
            f"--schema: expected a JSON schema (dict, JSON string or pydantic model), got {type(value).__name__}"
        )
    return value


def _documents(value: Any) -> list[Any]:
    """Documents from a list of str/dicts, one str/dict, or a DataFrame (one per row)."""
    if type(value).__module__.startswith("pandas") and hasattr(value, "to_dict"):
        if hasattr(value, "columns"):  # DataFrame: each row's columns become the document data
            docs = []
            for record in value.to_dict(orient="records"):
                data = {str(k): _json_value(v) for k, v in record.items()}
                doc_id = data.pop("id", None)
                docs.append(
                    {"id": str(doc_id), "data": data} if doc_id is not None else {"data": data}
                )
            return docs
        value = list(value)  # a Series: one document per value
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        docs = list(value)
        for i, d in enumerate(docs):
            if not isinstance(d, (str, dict)):
                raise UsageError(
                    f"--documents: item {i} is a {type(d).__name__}; allowed: str, dict {{id?, data}} or a DataFrame"
                )
        return docs
    raise UsageError(
        f"--documents: expected a list of str/dicts or a pandas DataFrame, got {type(value).__name__}"
    )


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if hasattr(v, "item"):  # numpy scalars
        try:
            return v.item()
        except Exception:
            pass
    return str(v)


def _flag_message(exc: Any) -> str:
    """A ValidationError rewritten to name the flag (or setting) a user would change."""
    field = str(getattr(exc, "field", "") or "")
    top = re.split(r"[.\[]", field, maxsplit=1)[0]
    flag = FIELD_FLAGS.get(top)
    where = flag or top or "request"
    return f"{where}: {exc.message}"


def _shown_params(params: dict[str, Any], tools: list[Any] | None) -> dict[str, Any]:
    """The parameters as the view's header shows them: scalars, with lists/dicts summarised."""
    shown: dict[str, Any] = {}
    for key, value in params.items():
        if key == "model":  # already in the title
            continue
        if key == "documents":
            shown[key] = len(value)
        elif key == "response_format":
            shown[key] = value.get("type", "") + (" + schema" if value.get("json_schema") else "")
        elif key == "citation_options":
            shown["citations"] = value.get("mode", "")
        elif isinstance(value, (list, dict)):
            shown[key] = json.dumps(value, ensure_ascii=False)[:200]
        else:
            shown[key] = value
    if tools:
        shown["tools"] = ", ".join(getattr(f, "__name__", "tool") for f in tools)
    return shown


def _show_request(request: dict[str, Any]) -> None:
    from IPython.display import display

    from ..errors import redact

    text = redact(json.dumps(request, indent=2, ensure_ascii=False, default=str))
    display(
        {
            "text/plain": text,
            "text/markdown": f"**nbchat dry run** (nothing sent)\n\n```json\n{text}\n```",
            "application/json": json.loads(text),
        },
        raw=True,
        metadata={"application/json": {"expanded": True}},
    )


# -- extension hooks --------------------------------------------------------------------------------
def _owned_by_us(func: Any) -> bool:
    return isinstance(getattr(func, "__self__", None), ChatMagics)


def load_ipython_extension(ipython: Any) -> None:
    """Register %%nbchat/%nbchat always, %%chat/%chat unless another extension owns them."""
    unload_ipython_extension(ipython)  # %reload_ext: drop our previous instance first
    magics = ChatMagics(ipython)
    ipython.register_magics(magics)
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


def unload_ipython_extension(ipython: Any) -> None:
    table = ipython.magics_manager.magics
    for kind in ("cell", "line"):
        for name in ("chat", "nbchat"):
            if _owned_by_us(table[kind].get(name)):
                del table[kind][name]
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, NbChat)]
