"""The ``nbchat`` command: ``nbchat serve`` (a v2 server), ``nbchat ask`` (one reply, streamed) and
``nbchat history`` (stored conversations: list, ``--search``, show one).

Errors are one line on stderr and exit code 1, never a traceback; Ctrl-C stops a reply cleanly
(exit 130). Heavy imports (the engine, httpx, uvicorn) happen only inside the subcommands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__

__all__ = ["main", "build_parser"]

_BACKEND_HELP = (
    "auto, local, cohere, v2, openai, or a backend a plugin registers "
    "(entry-point group nbchat.backends)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbchat",
        description="Chat with Cohere v2 models or the embedded offline model.",
    )
    parser.add_argument("--version", action="version", version=f"nbchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser(
        "serve",
        help="serve Cohere's Chat API v2 (POST /v2/chat) over a backend",
        description="Serve Cohere's Chat API v2 (POST /v2/chat, GET /v2/models) over the "
        "embedded model (default) or another backend. The official cohere SDK works against "
        "it: cohere.ClientV2(api_key=TOKEN, base_url='http://127.0.0.1:8765').",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    s.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' (default: env NBCHAT_SERVER_TOKEN)",
    )
    s.add_argument(
        "--model", default=None, help="model to serve: smollm2-135m (default) or a GGUF path"
    )
    s.add_argument(
        "--backend",
        default="local",
        help="where replies come from (default: local, the embedded engine): " + _BACKEND_HELP,
    )
    s.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address (warns when no token is set)",
    )
    s.add_argument(
        "--base-url", default=None, help="the engine behind --backend openai/v2 (its URL)"
    )
    s.add_argument("--max-streams", type=int, default=8, help="concurrent generations (503 beyond)")
    s.add_argument("--max-body", type=int, default=1_000_000, help="request body limit in bytes")
    s.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
    )
    s.set_defaults(func=_serve)

    a = sub.add_parser(
        "ask",
        help="stream one reply to the terminal",
        description="Stream one reply to stdout, token by token. The finish reason and token "
        "usage go to stderr. Backend 'auto' uses Cohere when CO_API_KEY is set, else the "
        "embedded model.",
    )
    a.add_argument("prompt", nargs="?", default=None, help="the prompt ('-' or none: read stdin)")
    a.add_argument("--model", "-m", default=None, help="model name (default depends on backend)")
    a.add_argument("--backend", "-b", default="auto", help=_BACKEND_HELP)
    a.add_argument("--base-url", default=None, help="endpoint for the v2/openai backends")
    a.add_argument("--system", default=None, help="system message")
    a.add_argument("-t", "--temperature", type=float, default=None)
    a.add_argument("-p", type=float, default=None, dest="p", help="top-p (0.01-0.99)")
    a.add_argument("-k", type=int, default=None, dest="k", help="top-k (0-500, 0 = off)")
    a.add_argument("--max-tokens", type=int, default=None)
    a.add_argument("--seed", type=int, default=None)
    a.add_argument(
        "--stop", action="append", default=None, metavar="TEXT", help="stop sequence (repeatable)"
    )
    a.add_argument("--frequency-penalty", type=float, default=None)
    a.add_argument("--presence-penalty", type=float, default=None)
    a.add_argument("--safety-mode", default=None, help="CONTEXTUAL, STRICT or OFF")
    a.add_argument("--json", action="store_true", help="response_format json_object")
    a.add_argument("-q", "--quiet", action="store_true", help="no finish/usage line on stderr")
    a.set_defaults(func=_ask)

    h = sub.add_parser(
        "history",
        help="list, search or show stored conversations",
        description="The chat history store (NBCHAT_HISTORY, or <user data dir>/nbchat/"
        "history.sqlite3): every stored conversation, most recent first; --search TEXT finds "
        "turns whose prompt, reply or thinking contain every word; ID prints one conversation.",
    )
    h.add_argument("id", nargs="?", default=None, help="show this conversation (id or prefix)")
    h.add_argument("--search", "-s", default=None, metavar="TEXT", help="full-text search")
    h.add_argument("--json", action="store_true", help="JSON instead of a table")
    h.add_argument("--limit", "-n", type=int, default=None, help="at most N rows")
    h.add_argument("--db", default=None, metavar="PATH", help="the store (default as above)")
    h.set_defaults(func=_history)
    return parser


def _error(message: str) -> int:
    from .errors import redact

    print(f"nbchat: error: {redact(message)}", file=sys.stderr, flush=True)
    return 1


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    serve(
        host=args.host,
        port=args.port,
        token=args.token,
        model=args.model,
        backend=args.backend,
        allow_remote=args.allow_remote,
        base_url=args.base_url,
        max_body=args.max_body,
        max_streams=args.max_streams,
        log_level=args.log_level,
    )
    return 0


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The v2 fields the flags set (compose.build_request makes the request from them)."""
    body: dict[str, Any] = {}
    if args.model:
        body["model"] = args.model
    if args.system:
        body["system"] = args.system
    for key in (
        "temperature",
        "p",
        "k",
        "max_tokens",
        "seed",
        "frequency_penalty",
        "presence_penalty",
    ):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    if args.stop:
        body["stop_sequences"] = args.stop
    if args.safety_mode:
        body["safety_mode"] = args.safety_mode.upper()
    if args.json:
        body["response_format"] = {"type": "json_object"}
    return body


def _usage_line(finish: str | None, usage: dict[str, Any] | None) -> str:
    tokens = (usage or {}).get("tokens") or {}
    parts = [f"finish_reason: {finish or 'none'}"]
    if tokens:
        parts.append(
            f"tokens: {int(tokens.get('input_tokens', 0))} in, "
            f"{int(tokens.get('output_tokens', 0))} out"
        )
    return "[" + " · ".join(parts) + "]"


def _ask(args: argparse.Namespace) -> int:
    from .backends import get_backend
    from .backends.base import Cancel
    from .compose import build_request

    prompt = args.prompt
    if prompt is None or prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            return _error("no prompt: give one as an argument or pipe it on stdin")
        prompt = sys.stdin.read()
    backend = get_backend(args.backend, model=args.model, base_url=args.base_url)
    request = build_request(None, prompt, _params(args), backend=backend).request
    cancel = Cancel()
    out = sys.stdout
    finish: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    wrote_newline = True
    log = _AskLog(request, backend)
    try:
        for event in backend.stream(request, cancel):
            log.feed(event)
            kind = event.get("type")
            if kind == "content-delta":
                content = (event.get("delta") or {}).get("message", {}).get("content") or {}
                piece = content.get("text")
                if piece:
                    out.write(piece)
                    out.flush()
                    wrote_newline = piece.endswith("\n")
            elif kind == "tool-call-start":
                call = (event.get("delta") or {}).get("message", {}).get("tool_calls") or {}
                name_ = (call.get("function") or {}).get("name")
                print(f"[tool call: {name_}]", file=sys.stderr, flush=True)
            elif kind == "message-end":
                delta = event.get("delta") or {}
                finish = delta.get("finish_reason")
                usage = delta.get("usage")
                error = delta.get("error")
    except KeyboardInterrupt:
        cancel.cancel("interrupted")
        log.record("cancelled", "interrupted")
        if not wrote_newline:
            out.write("\n")
            out.flush()
        print("[interrupted]", file=sys.stderr, flush=True)
        return 130
    except BaseException as exc:
        log.record("error", f"{type(exc).__name__}: {exc}")
        raise
    if not wrote_newline:
        out.write("\n")
        out.flush()
    if finish == "ERROR":
        log.record("error", error or "the generation failed")
        return _error(error or "the generation failed")
    log.record("complete" if log.ended else "error", None if log.ended else "no message-end")
    if not args.quiet:
        print(_usage_line(finish, usage), file=sys.stderr, flush=True)
    return 0


class _AskLog:
    """What `nbchat ask` streamed, recorded as one turn in the history store at the end."""

    def __init__(self, request: dict[str, Any], backend: Any) -> None:
        import time

        from .protocol.accumulator import Accumulator

        self.request, self.backend = request, backend
        self.acc = Accumulator()
        self.t0, self.started_at = time.perf_counter(), time.time()
        self.ttft: float | None = None

    @property
    def ended(self) -> bool:
        return bool(self.acc.ended)

    def feed(self, event: dict[str, Any]) -> None:
        import time

        self.acc.feed(event)
        if self.ttft is None and event.get("type") in ("content-delta", "tool-call-start"):
            self.ttft = time.perf_counter() - self.t0

    def record(self, status: str, error: str | None) -> None:
        import time

        from . import history
        from .compose import turn_params
        from .conversation import Conversation
        from .errors import redact
        from .turn import Turn

        try:
            messages = self.request["messages"]
            system = messages[0]["content"] if messages[0].get("role") == "system" else None
            message = self.acc.message
            timings: dict[str, Any] = {"started_at": self.started_at}
            timings["total"] = time.perf_counter() - self.t0
            if self.ttft is not None:
                timings["ttft"] = self.ttft
            turn = Turn(
                [messages[-1]],
                [message] if len(message) > 1 else [],
                params=turn_params(self.request),
                status=status,
                response_ids=[self.acc.id] if self.acc.id else [],
                finish_reason=self.acc.finish_reason or ("ERROR" if status == "error" else None),
                usage=self.acc.usage,
                timings=timings,
                error=redact(error) if error else None,
                backend=getattr(self.backend, "name", None),
            )
            conv = Conversation(system=system)
            conv.add_turn(turn)
            history.record_finished(conv, turn)
        except Exception:  # the history never changes what ask prints or returns
            pass


def _history(args: argparse.Namespace) -> int:
    import json

    from . import history

    path = args.db
    if args.id is not None:
        conv = history.load(args.id, path)
        if args.json:
            print(conv.to_json(indent=1))
        else:
            print(repr(conv))
        return 0
    if args.search is not None:
        rows = history.search(args.search, path, limit=args.limit or 100)
        columns = ("conversation", "turn_id", "finished_at", "model", "snippet")
    else:
        rows = history.conversations(path, limit=args.limit)
        columns = ("id", "last_used", "turns", "model", "notebook", "title")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    if not rows:
        print("no matching turns" if args.search is not None else "no stored conversations")
        return 0
    print(history.format_table(rows, columns))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbchat`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .errors import NbChatError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except NbChatError as exc:
        return _error(str(exc))
    except BrokenPipeError:  # `nbchat ask ... | head`: the reader is gone, that's fine
        return 0
    except (OSError, ImportError) as exc:  # missing extras, unreadable model file, port in use
        return _error(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
