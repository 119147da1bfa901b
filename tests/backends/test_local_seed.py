"""Seed reproducibility on the embedded engine (issue 10): same seed + parameters + history =>
same reply, whatever ran before in the process, and in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from nbchat.backends.base import collect
from nbchat.backends.local import LocalBackend

pytestmark = pytest.mark.engine

SEEDED = {
    "model": "smollm2-135m",
    "messages": [{"role": "user", "content": "Write a haiku about notebooks."}],
    "temperature": 0.7,
    "seed": 11,
    "max_tokens": 25,
}
OTHERS = [
    ("You are helper 0.", "Tell me about cats."),
    ("You are a poet.", "Write a poem about rain."),
    (None, "What is Python?"),
    ("Answer briefly.", "Name three colors."),
    (None, "Write a haiku about notebooks and pens."),  # shares a prefix with SEEDED
]


def _text(backend: LocalBackend, request: dict[str, Any]) -> str:
    events = list(backend.stream(request))
    return collect(events)["message"]["content"][0]["text"]


def test_same_seed_same_reply_whatever_ran_before() -> None:
    backend = LocalBackend()
    for system, prompt in OTHERS:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        _text(backend, {"model": "smollm2-135m", "messages": messages, "max_tokens": 12})
    replies = [_text(backend, SEEDED) for _ in range(3)]
    code = (
        "import json, sys\n"
        "from nbchat.backends.base import collect\n"
        "from nbchat.backends.local import LocalBackend\n"
        "req = json.loads(sys.argv[1])\n"
        "print(json.dumps(collect(list(LocalBackend().stream(req)))"
        "['message']['content'][0]['text']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(SEEDED)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        check=True,
    )
    replies.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert replies[0], "an empty reply proves nothing"
    assert replies == [replies[0]] * 4, replies
