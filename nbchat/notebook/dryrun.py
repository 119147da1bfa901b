"""``--dry-run``: the validated request shown as JSON (secrets redacted; the readable copy
shows the new message, the full body is collapsed); nothing is sent."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["show_request"]


def show_request(request: dict[str, Any]) -> None:
    from IPython.display import display

    from ..errors import redact

    full = redact(json.dumps(request, indent=2, ensure_ascii=False, default=str))
    # the readable copy shows the new message, not the whole history again
    messages = list(request.get("messages") or [])
    head = [m for m in messages[:1] if isinstance(m, dict) and m.get("role") == "system"]
    earlier = len(messages) - len(head) - 1
    shown = dict(request)
    if earlier > 0:
        note = f"… {earlier} earlier message{'' if earlier == 1 else 's'} (the history) …"
        shown["messages"] = head + [note] + messages[-1:]
    text = redact(json.dumps(shown, indent=2, ensure_ascii=False, default=str))
    display(
        {
            "text/plain": text,
            "text/markdown": f"**nbchat dry run** (nothing sent)\n\n```json\n{text}\n```",
            "application/json": json.loads(full),  # the whole body, collapsed
        },
        raw=True,
        metadata={"application/json": {"expanded": False}},
    )
