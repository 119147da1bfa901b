"""Context that fits: leave the oldest turns out of a request that would not fit the model.

`fit_history(history, tail, params, backend=..., window=..., max_input_tokens=...)` returns the
history to send and how many earlier turns it left out. The conversation itself keeps every
turn (``chat.messages`` is unchanged); only the request is shorter.

* A **turn** is a user message and everything after it up to the next user message (assistant
  replies, tool calls and their tool results), so a tool call is never sent without its result.
  The system message always stays; so does everything of the turn being sent (`tail`).
* ``window=N`` (``%%chat --history N``, ``NbChat.history_window``) sends at most the last N turns.
* The **budget** is ``max_input_tokens`` when given (``NbChat.max_input_tokens``), else the
  model's context minus the reply's room (``max_tokens``, else a quarter of the context, at most
  `DEFAULT_REPLY_ROOM`). The context is the backend's own (``backend.context_window(model)``:
  the embedded engine's ``n_ctx``), else `KNOWN_CONTEXT` (Cohere's published sizes), else
  unknown: then only ``window`` and ``max_input_tokens`` apply.
* **Tokens** are counted by the backend when it can (``backend.count_tokens(request)``: the
  embedded engine renders its chat template and runs its own tokenizer), else estimated as
  characters / 3.5 plus 4 per message (`estimate_tokens`), which over-counts English a little.

With a backend that counts its own tokens (the embedded engine), the number of turns left out
is rounded up to a multiple of `CUT_STEP`: the kept turns then start at the same place for
several turns in a row, so the engine reuses its prompt cache instead of re-reading the whole
history every turn. When even the system message and the current turn do not fit, nothing more
is dropped: the request goes as it is and the backend's error names the limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "KNOWN_CONTEXT",
    "DEFAULT_REPLY_ROOM",
    "context_window",
    "estimate_tokens",
    "split_turns",
    "fit_history",
]

# Context windows (tokens) Cohere publishes for its models; a name not here is "unknown".
KNOWN_CONTEXT: dict[str, int] = {
    "command-a-03-2025": 256_000,
    "command-a-reasoning-08-2025": 256_000,
    "command-a-vision-07-2025": 128_000,
    "command-a-translate-08-2025": 8_000,
    "command-r7b-12-2024": 128_000,
    "command-r7b-arabic-02-2025": 128_000,
    "command-r-plus-08-2024": 128_000,
    "command-r-08-2024": 128_000,
    "command-r-plus": 128_000,
    "command-r": 128_000,
    "command": 4_096,
    "command-light": 4_096,
    "c4ai-aya-expanse-8b": 8_192,
    "c4ai-aya-expanse-32b": 128_000,
    "c4ai-aya-vision-8b": 16_384,
    "c4ai-aya-vision-32b": 16_384,
}
DEFAULT_REPLY_ROOM = 1024
CHARS_PER_TOKEN = 3.5
TOKENS_PER_MESSAGE = 4
CUT_STEP = 4  # with an engine that counts (and caches) tokens, cut in steps of this many turns


def context_window(backend: Any, model: str | None) -> int | None:
    """The model's context size in tokens: the backend's answer, else `KNOWN_CONTEXT`."""
    ask = getattr(backend, "context_window", None)
    if callable(ask):
        try:
            size = ask(model)
        except Exception:  # a backend that cannot tell (e.g. unknown model): fall back
            size = None
        if isinstance(size, int) and size > 0:
            return size
    return KNOWN_CONTEXT.get(str(model)) if model else None


def estimate_tokens(request: Mapping[str, Any]) -> int:
    """A cheap token estimate for a request: its text (messages, tools, documents) / 3.5."""
    messages = request.get("messages") or []
    chars = sum(len(_text(m)) for m in messages)
    for key in ("tools", "documents"):
        if request.get(key):
            chars += len(json.dumps(request[key], ensure_ascii=False, default=str))
    return int(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    extra = [message.get("tool_plan"), message.get("tool_calls")]
    return text + "".join(json.dumps(x, ensure_ascii=False) for x in extra if x)


def split_turns(
    history: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[list[Mapping[str, Any]]]]:
    """(leading system messages, turns): each turn starts at a user message and holds what
    follows it up to the next one (messages before the first user message form a turn)."""
    head: list[Mapping[str, Any]] = []
    turns: list[list[Mapping[str, Any]]] = []
    for m in history:
        if not turns and m.get("role") == "system":
            head.append(m)
        elif m.get("role") == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return head, turns


def fit_history(
    history: Sequence[Mapping[str, Any]],
    tail: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    backend: Any = None,
    window: int | None = None,
    max_input_tokens: int | None = None,
) -> tuple[list[Mapping[str, Any]], int]:
    """(the history to send, how many earlier turns were left out) for a request made of
    `history` + `tail` (the current turn's messages) + `params` (see the module docstring)."""
    head, turns = split_turns(history)
    dropped = 0
    if window is not None and len(turns) > max(0, window):
        dropped = len(turns) - max(0, window)
        turns = turns[dropped:]
    budget = _budget(params, backend, max_input_tokens)
    if budget is None or not turns:
        return [*head, *(m for t in turns for m in t)], dropped
    count = getattr(backend, "count_tokens", None)

    def size(kept: list[list[Mapping[str, Any]]]) -> int:
        request = {**params, "messages": [*head, *(m for t in kept for m in t), *tail]}
        if callable(count):
            try:
                return int(count(request))
            except Exception:  # e.g. the engine cannot load: estimate instead
                pass
        return estimate_tokens(request)

    # Binary search for the fewest oldest turns to drop (sizes only grow with more turns).
    lo, hi = 0, len(turns)  # drop lo..hi turns; hi always fits (or nothing fits)
    if size(turns) <= budget:
        return [*head, *(m for t in turns for m in t)], dropped
    while lo < hi:
        mid = (lo + hi) // 2
        if size(turns[mid:]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    if callable(count) and lo < len(turns):  # a local engine: keep its prompt cache useful
        lo = min(len(turns) - 1, -(-lo // CUT_STEP) * CUT_STEP)
    kept = turns[lo:]
    return [*head, *(m for t in kept for m in t)], dropped + lo


def _budget(params: Mapping[str, Any], backend: Any, max_input_tokens: int | None) -> int | None:
    if max_input_tokens:
        return int(max_input_tokens)
    ctx = context_window(backend, params.get("model"))
    if ctx is None:
        return None
    reply = params.get("max_tokens") or min(DEFAULT_REPLY_ROOM, ctx // 4)
    return max(1, ctx - int(reply))
