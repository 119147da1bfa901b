"""Real third-party Cohere clients against `nbchat serve`, unchanged: langchain-cohere
(``ChatCohere(base_url=...)``: invoke, stream, bind_tools + ToolMessage follow-up,
with_structured_output), litellm (``cohere_chat/``, ``api_base=BASE + "/v2/chat"``: completion,
stream=True -- which asks for ``Accept: application/json``, i.e. NDJSON --, tools + tool-result
follow-up) and the official ``cohere`` SDK; on the embedded model and through
``nbchat serve --backend openai`` in front of llama-cpp-python's ``llama_cpp.server``.

langchain-cohere 0.6 needs ``cohere<6`` while the suite uses cohere 7, so both clients live in
their own virtualenv, created once by the `client_python` fixture under
``~/.cache/nbchat-test-venvs`` (``NBCHAT_TEST_VENVS`` overrides; ~1 min with PyPI reachable, then
reused) and run as a subprocess (tests/clients/cohere_clients.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_server import run_server  # noqa: E402

pytestmark = pytest.mark.engine

PINS = ("langchain-cohere==0.6.0", "langchain-core==1.8.3", "cohere==5.21.1", "litellm==1.110.2")
SCRIPT = Path(__file__).resolve().parents[1] / "clients" / "cohere_clients.py"
MARKUP = ("<tool_call", "</tool_call", "Plan:")


@pytest.fixture(scope="session")
def client_python() -> str:
    """The python of a virtualenv holding PINS (created on first use, shared across runs)."""
    root = Path(os.environ.get("NBCHAT_TEST_VENVS") or Path.home() / ".cache/nbchat-test-venvs")
    key = hashlib.sha256(f"{PINS} {sys.version}".encode()).hexdigest()[:12]
    path = root / f"clients-{key}"
    python = path / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"clients-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        if not (path / ".complete").exists():
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
                check=True,
                timeout=1200,
            )
            (path / ".complete").write_text(f"{PINS} built in {time.monotonic() - t0:.0f} s\n")
    return str(python)


def run_clients(python: str, lib: str, url: str, model: str, force: bool = False) -> Any:
    cmd = [python, str(SCRIPT), lib, url, model] + (["--force-tools"] if force else [])
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no fetch from GitHub
    env.pop("PYTHONPATH", None)  # the clients' venv only: nothing of nbchat
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def embedded_url() -> Iterator[str]:
    from nbchat.backends.local import LocalBackend
    from nbchat.server import create_app

    with run_server(create_app(LocalBackend())) as url:
        yield url


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    """`nbchat serve --backend openai` (the CLI, a subprocess) in front of llama_cpp.server."""
    from test_openai_backend import start_llama_server

    llama, base = start_llama_server()
    serve = subprocess.Popen(
        [sys.executable, "-m", "nbchat", "serve", "--backend", "openai", "--base-url", base]
        + ["--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stderr is not None
        banner = serve.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert found, banner
        yield found.group(0)
    finally:
        for proc in (serve, llama):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def results(client_python: str, request: pytest.FixtureRequest) -> Any:
    cache: dict[tuple[str, str], Any] = {}

    def get(target: str, lib: str) -> Any:
        if (target, lib) not in cache:
            url = request.getfixturevalue(f"{target}_url")
            model = "smollm2-135m" if target == "embedded" else "smollm2"
            # llama_cpp.server never decides to call a tool by itself: ask for one
            cache[target, lib] = run_clients(client_python, lib, url, model, target == "openai")
        return cache[target, lib]

    return get


def ok(case: dict[str, Any]) -> dict[str, Any]:
    assert case["ok"], case.get("trace") or case.get("error")
    return case


def plain_text(text: Any) -> str:
    assert isinstance(text, str) and text.strip(), text
    assert not any(m in text for m in MARKUP), text
    return text


TARGETS = ["embedded", "openai"]


@pytest.mark.parametrize("target", TARGETS)
def test_langchain_invoke_and_stream(results: Any, target: str) -> None:
    out = results(target, "langchain")
    invoke = ok(out["invoke"])
    plain_text(invoke["content"])
    assert invoke["finish_reason"] in ("COMPLETE", "MAX_TOKENS")
    assert invoke["usage"]["input_tokens"] > 0 and invoke["usage"]["output_tokens"] > 0
    stream = ok(out["stream"])
    assert stream["text_chunks"] >= 2  # really streamed
    plain_text(stream["text"])


@pytest.mark.parametrize("target", TARGETS)
def test_langchain_tools_and_tool_message_follow_up(results: Any, target: str) -> None:
    tools = ok(results(target, "langchain")["tools"])
    assert tools["calls"] and {c["name"] for c in tools["calls"]} == {"get_weather"}
    assert all(isinstance(c["args"], dict) for c in tools["calls"])
    plain_text(tools["final_content"])
    assert tools["final_calls"] == 0
    assert tools["final_finish_reason"] in ("COMPLETE", "MAX_TOKENS")


@pytest.mark.parametrize("target", TARGETS)
def test_langchain_structured_output(results: Any, target: str) -> None:
    value = ok(results(target, "langchain")["structured"])["value"]
    assert isinstance(value, dict) and {"name", "age"} <= set(value)


@pytest.mark.parametrize("target", TARGETS)
def test_litellm_completion_and_stream(results: Any, target: str) -> None:
    out = results(target, "litellm")
    completion = ok(out["completion"])
    plain_text(completion["content"])
    assert completion["finish_reason"] in ("stop", "length")
    assert completion["usage"]["prompt_tokens"] > 0
    stream = ok(out["stream"])  # NDJSON framing (litellm sends Accept: application/json)
    assert stream["text_chunks"] >= 2
    plain_text(stream["text"])


@pytest.mark.parametrize("target", TARGETS)
def test_litellm_tools_and_tool_result_follow_up(results: Any, target: str) -> None:
    tools = ok(results(target, "litellm")["tools"])
    if target == "embedded":  # the engine calls a tool named in the question
        assert tools["calls"] and {c["name"] for c in tools["calls"]} == {"get_weather"}
    # (litellm drops tool_choice for Cohere, and llama_cpp.server never calls a tool by itself:
    # through it the first answer is text; the follow-up below still carries a tool round)
    assert all(json.loads(c["arguments"]) is not None for c in tools["calls"])
    plain_text(tools["final_content"])
    assert tools["final_calls"] == 0
    assert tools["final_finish_reason"] in ("stop", "length")


def test_official_sdk_through_the_openai_backend(openai_url: str) -> None:
    import cohere

    co = cohere.ClientV2(api_key="test-key", base_url=openai_url)
    messages = [{"role": "user", "content": "Say hello to Ada."}]
    res = co.chat(model="smollm2", messages=messages, max_tokens=16)
    assert res.message.content[0].text.strip()
    assert res.usage.tokens.input_tokens > 0 and res.usage.tokens.output_tokens > 0
    kinds = [e.type for e in co.chat_stream(model="smollm2", messages=messages, max_tokens=16)]
    assert kinds[0] == "message-start" and kinds[-1] == "message-end"
    assert kinds.count("content-delta") >= 2
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    res = co.chat(
        model="smollm2", messages=ask, tools=[weather], tool_choice="REQUIRED", max_tokens=60
    )
    calls = res.message.tool_calls or []
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments), dict)
