"""The ``nbchat`` command, run as a real subprocess (``python -m nbchat``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from test_server import EchoBackend, run_server

from nbchat.server import create_app


def nbchat(*args: str, env: dict[str, str] | None = None, timeout: float = 120, **kw: Any):
    full_env = {k: v for k, v in os.environ.items() if k not in ("CO_API_KEY", "COHERE_API_KEY")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nbchat", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        **kw,
    )


def test_version() -> None:
    from nbchat import __version__

    r = nbchat("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"nbchat {__version__}"


def test_help_lists_the_options() -> None:
    r = nbchat("serve", "--help")
    assert r.returncode == 0
    for flag in ("--host", "--port", "--token", "--model", "--backend", "--allow-remote"):
        assert flag in r.stdout
    r = nbchat("ask", "--help")
    assert r.returncode == 0
    for flag in ("--model", "--temperature", "-p", "-k", "--max-tokens", "--seed", "--stop"):
        assert flag in r.stdout
    r = nbchat()
    assert r.returncode == 2 and "serve" in r.stderr


def test_ask_streams_from_a_v2_server() -> None:
    echo = EchoBackend()
    with run_server(create_app(echo)) as url:
        r = nbchat(
            "ask",
            "hello from the terminal",
            "--backend",
            "v2",
            "--base-url",
            url,
            "--model",
            "echo-1",
            "-t",
            "0.1",
            "-p",
            "0.5",
            "-k",
            "3",
            "--seed",
            "4",
            "--max-tokens",
            "20",
            "--stop",
            "END",
            "--system",
            "be nice",
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello from the terminal\n"
        assert "finish_reason: COMPLETE" in r.stderr
        assert "tokens: 6 in, 4 out" in r.stderr  # system (2 words) + prompt (4)
        sent = echo.requests[-1]
        assert sent["messages"][0] == {"role": "system", "content": "be nice"}
        assert (sent["temperature"], sent["p"], sent["k"], sent["seed"]) == (0.1, 0.5, 3, 4)
        assert (sent["max_tokens"], sent["stop_sequences"]) == (20, ["END"])
        # a prompt on stdin
        r = nbchat(
            "ask", "--backend", "v2", "--base-url", url, "-m", "echo-1", "-q", input="piped in"
        )
        assert (r.returncode, r.stdout, r.stderr) == (0, "piped in\n", "")


def test_ask_errors_are_one_line_exit_1() -> None:
    r = nbchat("ask", "hi", "--backend", "local", "-t", "3")
    assert r.returncode == 1
    assert r.stderr.startswith("nbchat: error:") and "temperature" in r.stderr
    assert "Traceback" not in r.stderr
    # an unreachable server: a clear message, no traceback
    r = nbchat("ask", "hi", "--backend", "v2", "--base-url", "http://127.0.0.1:9", "-m", "x")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("nbchat: error:")
    with run_server(create_app(EchoBackend())) as url:
        r = nbchat("ask", "FAIL_AFTER x", "--backend", "v2", "--base-url", url, "-m", "echo-1")
        assert r.returncode == 1 and "decode failed" in r.stderr and "Traceback" not in r.stderr
        r = nbchat("ask", "hi", "--backend", "v2", "--base-url", url, "-m", "other")
        assert r.returncode == 1 and "404" in r.stderr and "not found" in r.stderr


def test_serve_refuses_remote_bind_without_flag() -> None:
    r = nbchat("serve", "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert r.returncode == 1
    assert "--allow-remote" in r.stderr and "Traceback" not in r.stderr


def test_serve_remote_without_token_warns() -> None:
    # 192.0.2.1 (TEST-NET-1) is never assigned here: the warning comes first, then a clean
    # bind error, and nothing is ever exposed on a real interface
    r = nbchat("serve", "--host", "192.0.2.1", "--allow-remote", "--port", "0", timeout=30)
    assert "WARNING" in r.stderr and "without a token" in r.stderr
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr


def _start_serve(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("CO_API_KEY", "COHERE_API_KEY")}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbchat", "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    line = proc.stderr.readline()
    m = re.search(r"(http://127\.0\.0\.1:\d+)/v2/chat", line)
    assert m, line
    return proc, m.group(1)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        proc.stderr.close()


def test_serve_subprocess_token_from_env() -> None:
    proc, url = _start_serve(env={"NBCHAT_SERVER_TOKEN": "env-token-1"})
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "/v2/models", timeout=10)
        assert info.value.code == 401
        req = urllib.request.Request(
            url + "/v2/models", headers={"Authorization": "Bearer env-token-1"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp) == {"models": [{"name": "smollm2-135m", "endpoints": ["chat"]}]}
    finally:
        t0 = time.monotonic()
        _stop(proc)
    assert time.monotonic() - t0 < 10


@pytest.mark.engine
def test_ask_with_the_embedded_model() -> None:
    r = nbchat(
        "ask",
        "Name a color.",
        "--backend",
        "local",
        "--max-tokens",
        "8",
        "--seed",
        "1",
        "-t",
        "0",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    m = re.search(r"finish_reason: (\w+) · tokens: (\d+) in, (\d+) out", r.stderr)
    assert m and m.group(1) in ("COMPLETE", "MAX_TOKENS")
    assert int(m.group(2)) > 0 and 0 < int(m.group(3)) <= 8
    again = nbchat(
        "ask", "Name a color.", "-b", "local", "--max-tokens", "8", "--seed", "1", "-t", "0"
    )
    assert again.stdout == r.stdout  # same seed and parameters, same reply


@pytest.mark.engine
def test_serve_subprocess_with_the_embedded_model() -> None:
    import cohere

    proc, url = _start_serve("--backend", "local")
    try:
        co = cohere.ClientV2(api_key="x", base_url=url, max_retries=0)
        res = co.chat(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Say hi."}],
            max_tokens=6,
            seed=3,
        )
        assert res.finish_reason in ("COMPLETE", "MAX_TOKENS")
        assert res.usage.tokens.output_tokens > 0
        events = list(
            co.chat_stream(
                model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
            )
        )
        assert events[0].type == "message-start" and events[-1].type == "message-end"
    finally:
        _stop(proc)
