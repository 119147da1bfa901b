"""Backend registry: names, the model policy, and a third-party backend plugged in through the
``nbchat.backends`` entry-point group (tests/plugins/nbchat_echo_backend, pip-installed into a
temporary directory for this run) working in get_backend, `nbchat ask` and `nbchat serve`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbchat.backends.registry import (
    COHERE_MODEL,
    LOCAL_MODEL,
    backend_names,
    default_model,
    get_backend,
    register_backend,
    resolve_model,
    unregister_backend,
)
from nbchat.errors import ValidationError


def test_builtin_names_and_defaults() -> None:
    names = backend_names()
    assert names[0] == "auto" and {"cohere", "v2", "local", "openai"} <= set(names)
    assert len(names) == len(set(names))
    assert default_model("local") == LOCAL_MODEL and default_model("cohere") == COHERE_MODEL
    assert default_model("v2") == ""  # a v2 host: resolve_model asks what it serves
    with pytest.raises(ValidationError) as info:
        get_backend("nope")
    assert info.value.field == "backend" and "cohere" in str(info.value)


def test_get_backend_does_not_mutate_what_it_built() -> None:
    from nbchat.backends.cohere import Client

    v2 = get_backend("v2", base_url="http://127.0.0.1:9", api_key="k")
    hosted = get_backend("cohere", api_key="k")
    assert isinstance(v2, Client) and v2.name == "v2" and hosted.name == "cohere"
    assert Client.name == "cohere" and Client(api_key="k").name == "cohere"


class Plain:
    name = "plain"

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.model = options.get("model")

    def models(self) -> list[str]:
        return ["p-1", "p-2"]

    def stream(self, request: dict[str, Any], cancel: Any = None) -> Iterator[dict[str, Any]]:
        raise NotImplementedError


def test_register_backend_in_code_and_model_policy() -> None:
    register_backend("plain", Plain)
    try:
        assert "plain" in backend_names()
        b = get_backend("plain", base_url="http://x")
        assert isinstance(b, Plain) and b.options == {"base_url": "http://x"}
        assert resolve_model(b) == "p-1"  # no default: the first model it serves
        assert resolve_model(b, "given") == "given"
        assert resolve_model(get_backend("plain", model="own")) == "own"
        register_backend("plain", Plain, default_model="p-2")
        assert resolve_model(get_backend("plain")) == "p-2"
    finally:
        unregister_backend("plain")
    assert "plain" not in backend_names()
    with pytest.raises(ValidationError):
        register_backend("auto", Plain)


def test_entry_point_plugin_through_get_backend(echo_plugin: Path) -> None:
    from nbchat.backends.base import collect
    from nbchat.compose import build_request

    assert "echo" in backend_names()
    backend = get_backend("echo")
    assert type(backend).__module__ == "nbchat_echo_backend"
    assert default_model("echo") == "echo-1" and resolve_model(backend) == "echo-1"
    request = build_request(None, "hello there", {}, backend=backend).request
    assert request["model"] == "echo-1"
    response = collect(backend.stream(request))
    assert response["message"]["content"][0]["text"] == "echo: hello there"
    # the Conversation API too
    from nbchat.conversation import Conversation

    turn = Conversation().send("again", backend="echo")
    assert turn.complete and turn.text == "echo: again" and turn.backend == "echo"


def test_nbchat_ask_with_the_plugin(echo_plugin: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nbchat", "ask", "--backend", "echo", "-q", "hi plugin"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == "echo: hi plugin\n"
    bad = subprocess.run(
        [sys.executable, "-m", "nbchat", "ask", "--backend", "nope", "x"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert bad.returncode == 1 and "echo" in bad.stderr  # the error lists the plugin's name


def test_nbchat_serve_with_the_plugin(echo_plugin: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbchat", "serve", "--port", "0", "--backend", "echo"],
        stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/v2/chat", line)
        assert m, line
        url = m.group(1)
        with urllib.request.urlopen(url + "/v2/models", timeout=10) as resp:
            names = [x["name"] for x in json.load(resp)["models"]]
        assert "echo-1" in names
        body = {"model": "echo-1", "messages": [{"role": "user", "content": "served"}]}
        req = urllib.request.Request(
            url + "/v2/chat",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.load(resp)
        assert answer["message"]["content"][0]["text"] == "echo: served"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        finally:
            proc.stderr.close()


def test_panel_offers_and_uses_the_plugin(echo_plugin: Path) -> None:
    from nbchat.conversation import Conversation
    from nbchat.notebook.panel import Panel

    conv = Conversation()
    panel = Panel(conv, backend="echo")
    assert "echo" in [v for _, v in panel.backend.options] and panel.backend.value == "echo"
    assert panel.send("from the panel") is not None
    conv.wait(10)
    assert conv.last.complete and conv.last.text == "echo: from the panel"
    assert conv.last.model == "echo-1"  # the plugin's default_model, via resolve_model
