"""An nbchat backend that answers with the last user message, word by word ("echo: ...")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nbchat.backends.base import Cancel
from nbchat.protocol import StreamBuilder, message_text, usage_dict


class EchoBackend:
    name = "echo"
    default_model = "echo-1"

    def __init__(self, model: str | None = None, **options: Any) -> None:
        self.model = model
        self.options = options

    def models(self) -> list[str]:
        return ["echo-1"]

    def stream(self, request: dict[str, Any], cancel: Cancel | None = None) -> Iterator[dict]:
        users = [m for m in request["messages"] if m.get("role") == "user"]
        words = ("echo: " + message_text(users[-1])).split(" ")
        b = StreamBuilder()
        yield b.start()
        for i, word in enumerate(words):
            if cancel is not None and cancel.is_set():
                break
            yield from b.text(word if i == 0 else " " + word)
        yield from b.end("COMPLETE", usage_dict(len(words), len(words)))
