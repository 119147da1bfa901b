"""Build THE request: the one place a v2 chat body is put together.

``build_request(conversation, user_content, params, backend=..., tools=..., cell=...)``
returns a `Composed` whose ``.request`` is the exact validated body the runner sends for the
first round (``stream: true`` included, as on the wire). `%%chat`, ``--dry-run``, the panel,
the runner (`runner.start_turn`) and ``nbchat ask`` all call it, so what one shows is what
another sends. A bad value raises `ValidationError` (naming the field) and changes nothing.

How the body is made, in order:

1. **history**: ``conversation.history(before)``, where ``before`` is the turn of the same
   cell (``cell["cell_id"]``) when the cell ran before: a re-run replaces that turn and sees
   only what came before it. Running, cancelled and failed turns are never resent.
2. **system**: a ``"system"`` key in `params` (even None or "") sets the system prompt for
   this request: the conversation's own system message is dropped from the history and the
   new one (if non-empty) goes first. Without the key the conversation's system prompt is
   used as it is. `Composed.sets_system` tells the runner to store it with the turn.
3. **user message**: `user_content` (text, content blocks or a user message dict), plus
   ``params["images"]`` (kernel objects, bytes, paths or URLs; `nbchat.images`) appended as
   ``image_url`` blocks with ``params["image_detail"]``; Cohere's per-request limits count
   the history's images too.
4. **params**: v2 fields (``messages`` and ``stream`` in `params` are ignored).
5. **tools**: ``params["tools"]`` and `tools` may hold v2 tool dicts or Python functions;
   functions become tool definitions (`tools.function_to_tool`) and are returned in
   `Composed.functions` (name -> callable) for the runner to call. A later tool of the
   same name replaces an earlier one.
6. **model**: ``params["model"]``, else `backends.resolve_model(backend)` (the one model
   policy), when a backend is given.
6b. **fit**: the oldest turns are left out when the request would not fit the model's context,
   or beyond ``params["history_window"]`` turns / ``params["max_input_tokens"]`` tokens
   (`nbchat.context`; the conversation keeps them). `Composed.omitted` counts them.
7. `protocol.validate_request` on the whole body (cross-field rules included), then the
   backend's own ``check_request(request)`` when it has one (the embedded engine refuses
   images and ``thinking`` enabled there, naming the field and the model).

Later tool rounds add the assistant/tool messages and go through `round_request`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .backends.base import Backend
from .backends.registry import resolve_model
from .images import count_images, image_blocks
from .protocol.messages import as_message
from .protocol.request import validate_request
from .protocol.types import CellInfo, Message, Request, ToolDef

__all__ = [
    "Composed",
    "HistorySource",
    "build_request",
    "round_request",
    "turn_params",
    "with_images",
]

ToolLike = Callable[..., Any] | ToolDef | Mapping[str, Any]
SystemPrompt = str | list[Any] | None


class HistorySource(Protocol):
    """What composing needs from a conversation (`nbchat.Conversation` provides it)."""

    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    @property
    def system(self) -> SystemPrompt: ...

    def history(self, before: Any = None) -> list[Message]: ...

    def find_cell_turn(self, cell_key: Any) -> int | None: ...


@dataclass(frozen=True)
class Composed:
    """A composed request and what the runner needs besides it."""

    request: Request
    """The exact first-round body: validated, ``stream: true``, history + user message."""
    user_message: Message
    """The new user message (last of ``request["messages"]``)."""
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    """Python tool functions by tool name (what a tool call runs)."""
    system: SystemPrompt = None
    """The system prompt this request uses."""
    sets_system: bool = False
    """True when `params` carried ``system``: the conversation takes it with the turn."""
    replaces: int | None = None
    """Index of the earlier turn of the same cell that the new turn replaces."""
    omitted: int = 0
    """Earlier turns left out of the request so it fits (see `nbchat.context`)."""
    fit: Mapping[str, Any] = field(default_factory=dict)
    """``history_window`` / ``max_input_tokens`` as given: later rounds fit the same way."""

    @property
    def params(self) -> dict[str, Any]:
        """The request without ``messages`` and ``stream``: what a Turn records."""
        return turn_params(self.request)

    @property
    def history(self) -> list[Message]:
        """The messages before the new user message."""
        return copy.deepcopy(self.request["messages"][:-1])


def turn_params(request: Mapping[str, Any]) -> dict[str, Any]:
    """A request's fields other than ``messages`` and ``stream`` (deep copy)."""
    return {k: copy.deepcopy(v) for k, v in request.items() if k not in ("messages", "stream")}


def round_request(params: Mapping[str, Any], messages: Sequence[Message]) -> Request:
    """The validated body of a later round (or a turn queued behind another): `params` (a
    `Composed.params`) with the messages as they are now."""
    body = {**copy.deepcopy(dict(params)), "messages": copy.deepcopy(list(messages))}
    body["stream"] = True
    return validate_request(body)


def with_images(
    user: Message,
    images: Any,
    detail: str | None = None,
    *,
    already: int = 0,
    field: str = "images",
    detail_field: str = "image_detail",
) -> Message:
    """`user` with `images` appended as ``image_url`` blocks (text content becomes a text
    block first). `already`: images elsewhere in the request (Cohere's limits are per request);
    `field`/`detail_field` name the argument or flag in errors."""
    blocks = image_blocks(images, detail, field=field, detail_field=detail_field, already=already)
    content: Any = user.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    out: Any = {**user, "content": [*copy.deepcopy(list(content or [])), *blocks]}
    return cast(Message, out)


def _tool_name(tool: Mapping[str, Any]) -> str | None:
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, Mapping) else None
    return name if isinstance(name, str) else None


def _tools(
    items: Sequence[Any],
) -> tuple[list[dict[str, Any]], dict[str, Callable[..., Any]]]:
    from .tools import function_to_tool

    functions: dict[str, Callable[..., Any]] = {}
    defs: list[dict[str, Any]] = []
    for item in items:
        definition = function_to_tool(item)
        name = _tool_name(definition)
        if not isinstance(item, dict):
            functions[name or ""] = item
        defs = [d for d in defs if _tool_name(d) != name] + [definition]
    return defs, functions


def build_request(
    conversation: HistorySource | None,
    user_content: Any,
    params: Mapping[str, Any] | None = None,
    *,
    backend: Backend | None = None,
    tools: Sequence[ToolLike] | None = None,
    cell: CellInfo | None = None,
) -> Composed:
    """Compose and validate the request for a new turn (see the module docstring)."""
    fields = dict(params or {})
    fields.pop("messages", None)
    fields.pop("stream", None)
    sets_system = "system" in fields
    images, image_detail = fields.pop("images", None), fields.pop("image_detail", None)
    fit = fit_options(fields)
    new_system: SystemPrompt = fields.pop("system", None)
    tool_items = list(fields.pop("tools", None) or []) + list(tools or [])
    defs, functions = _tools(tool_items)
    if defs:
        fields["tools"] = defs
    if not fields.get("model") and backend is not None:
        fields["model"] = resolve_model(backend)
    user = as_message(user_content)

    replaces: int | None = None
    history: list[Message] = []
    system: SystemPrompt = new_system
    if conversation is not None:
        with conversation.lock:
            replaces = conversation.find_cell_turn(cell) if cell else None
            history = conversation.history(replaces)
            current = conversation.system
        if not sets_system:
            system = current
        elif current is not None and history and history[0].get("role") == "system":
            history = history[1:]  # the new system prompt replaces the conversation's
    if sets_system and new_system:
        history = [{"role": "system", "content": copy.deepcopy(new_system)}, *history]
    if images is not None or image_detail is not None:
        user = with_images(user, images, image_detail, already=len(count_images(history)))
    omitted = 0
    if history:
        from .context import fit_history

        kept, omitted = fit_history(history, [user], fields, backend=backend, **fit)
        history = cast("list[Message]", kept)  # a suffix of the same messages
    body = {**fields, "messages": [*history, user], "stream": True}
    request = validate_request(body)
    check = getattr(backend, "check_request", None)
    if callable(check):
        check(request)
    return Composed(
        request=request,
        user_message=user,
        functions=functions,
        system=system or None,
        sets_system=sets_system,
        replaces=replaces,
        omitted=omitted,
        fit=fit,
    )


def fit_options(fields: dict[str, Any]) -> dict[str, Any]:
    """Take ``history_window`` (turns, >= 0) and ``max_input_tokens`` (>= 1) out of `fields`
    (they shape the request; they are not v2 fields). ValidationError names a bad one."""
    from .errors import ValidationError

    out: dict[str, Any] = {"window": None, "max_input_tokens": None}
    for key, name, low in (
        ("history_window", "window", 0),
        ("max_input_tokens", "max_input_tokens", 1),
    ):
        value = fields.pop(key, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValidationError(key, value, f"an integer >= {low}, or None for no limit")
        out[name] = value
    return out
