"""`NbChat`: the persistent %%chat settings (``%config NbChat.model = "..."``)."""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Dict, Enum, Int, Unicode, Union, observe
from traitlets.config import Configurable

__all__ = ["NbChat"]


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
        "local (embedded SmolLM2), openai, or an installed plugin's name.",
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

    history = Union(
        [Bool(), Unicode()],
        default_value=True,
        help="The chat history store every finished turn is written to: True (NBCHAT_HISTORY, "
        "else <user data dir>/nbchat/history.sqlite3), False (off) or a path.",
    ).tag(config=True)

    history_window = Int(
        None,
        allow_none=True,
        help="Send at most the last N turns of a conversation (it keeps them all); None: every "
        "turn that fits the model's context. %%chat --history N overrides it for one cell.",
    ).tag(config=True)
    max_input_tokens = Int(
        None,
        allow_none=True,
        help="Leave the oldest turns out when a request would exceed this many input tokens "
        "(counted by the embedded engine's tokenizer, else estimated); None: the model's "
        "context (engine n_ctx, or Cohere's published size) less the reply's room.",
    ).tag(config=True)

    @observe("history")
    def _history_changed(self, change: dict[str, Any]) -> None:
        from .. import history

        history.configure(None if change["new"] is True else change["new"])

    @observe("api_key")
    def _register_key(self, change: dict[str, Any]) -> None:
        from ..errors import register_secret

        register_secret(change["new"])  # so redact() hides it everywhere

    def __repr__(self) -> str:  # never show the key
        key = "set" if self.api_key else "unset"
        return f"NbChat(backend={self.backend!r}, model={self.model!r}, api_key=<{key}>)"

    def checked_defaults(self) -> dict[str, Any]:
        """`defaults` after checking every key is a v2 request parameter (UsageError if not)."""
        from IPython.core.error import UsageError

        from ..protocol.request import PARAM_FIELDS

        allowed = [f for f in PARAM_FIELDS if f != "stream"]
        for key in self.defaults:
            if key not in allowed:
                raise UsageError(
                    f"NbChat.defaults: unknown request field {key!r}; allowed: "
                    + ", ".join(allowed)
                )
        return dict(self.defaults)
