"""runner.start_turn against a real Backend implementation that replays recorded Cohere streams.

`ReplayBackend` is not a mock: it implements the Backend protocol (``name``, ``stream(request,
cancel)``, ``models()``) and yields the events of real captures
(``shared/fixtures/cohere-wire/*.sse`` decoded with ``protocol.sse.decode_all``), optionally
slowly, or blocking mid-stream either cooperatively (returns when cancelled, like the HTTP
backend shutting its socket) or stubbornly (ignores the cancel, like a hung C call).
"""

from __future__ import annotations

import _thread
import copy
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cohere
import pydantic
import pytest

from nbchat.backends.base import Backend, Cancel
from nbchat.conversation import Conversation
from nbchat.errors import APIError, ConnectionError, ValidationError
from nbchat.protocol.request import validate_request
from nbchat.protocol.sse import decode_all
from nbchat.runner import DENIED, start_turn

# The captures copied into the repo; else shared/ beside the clone (as laid for CI).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cohere-wire"
if not (FIXTURES / "lc_stream_plain.sse").is_file():
    FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "cohere-wire"

MODEL = {"model": "command-r"}


def fixture_events(name: str) -> list[dict[str, Any]]:
    return decode_all((FIXTURES / f"{name}.sse").read_bytes())


def final(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.final.json").read_text())


class ReplayBackend:
    """Yields one recorded stream per request, in order (the last one repeats)."""

    name = "replay"

    def __init__(
        self,
        *streams: list[dict[str, Any]],
        delay: float = 0.0,
        block_after: int | None = None,
        stubborn: bool = False,
        block_for: float = 5.0,
        raise_after: tuple[int, BaseException] | None = None,
    ) -> None:
        self.streams = [copy.deepcopy(s) for s in streams]
        self.delay = delay
        self.block_after = block_after
        self.stubborn = stubborn
        self.block_for = block_for
        self.raise_after = raise_after
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()  # unblocks a stubborn backend
        self.finished = threading.Event()  # set when a stream generator has exited
        self.blocked = threading.Event()

    def models(self) -> list[str]:
        return ["replay"]

    def stream(self, request: dict[str, Any], cancel: Cancel | None = None):
        self.requests.append(copy.deepcopy(request))
        events = self.streams[min(len(self.requests) - 1, len(self.streams) - 1)]
        return self._gen(events, cancel)

    def _gen(self, events: list[dict[str, Any]], cancel: Cancel | None):
        try:
            for i, event in enumerate(events):
                if self.raise_after is not None and i == self.raise_after[0]:
                    raise self.raise_after[1]
                if self.block_after is not None and i == self.block_after:
                    self.blocked.set()
                    if self.stubborn:
                        self.release.wait(self.block_for)  # ignores cancel
                    elif cancel is not None:
                        cancel.wait(self.block_for)
                        if cancel.is_set():
                            raise ConnectionError("connection closed (cancelled)")
                if self.delay:
                    time.sleep(self.delay)
                yield copy.deepcopy(event)
        finally:
            self.finished.set()


class Recorder:
    """A listener that records every hook call and the thread it ran in."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.threads: dict[str, set[int]] = {}
        self.done = threading.Event()

    def _rec(self, name: str, value: Any = None) -> None:
        self.calls.append((name, value))
        self.threads.setdefault(name, set()).add(threading.get_ident())

    def on_start(self) -> None:
        self._rec("on_start")

    def on_event(self, event: dict[str, Any]) -> None:
        self._rec("on_event", event.get("type"))

    def on_tool_calls(self, calls: list[dict[str, Any]]) -> None:
        self._rec("on_tool_calls", calls)

    def on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None:
        self._rec("on_tool_result", (call, message))

    def on_done(self, turn: Any) -> None:
        self._rec("on_done", turn.status)
        self.done.set()

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


def sdk_messages(messages: list[dict[str, Any]]) -> list[Any]:
    """Validate with the official SDK's own pydantic types; no field may land in extras."""
    parsed = pydantic.TypeAdapter(list[cohere.ChatMessageV2]).validate_python(messages)
    for m in parsed:
        assert not (m.model_extra or {}), f"SDK does not know fields {m.model_extra} of {m}"
    return parsed


def test_replay_backend_is_a_backend() -> None:
    assert isinstance(ReplayBackend(fixture_events("lc_stream_plain")), Backend)


# -- plain streaming ---------------------------------------------------------------------------
def test_background_turn_streams_in_worker_thread_with_hooks_in_order() -> None:
    events = fixture_events("lc_stream_plain")
    backend = ReplayBackend(events)
    conv = Conversation(system="Be brief.")
    rec = Recorder()
    handle = start_turn(conv, backend, "hi", {**MODEL, "temperature": 0.2}, listener=rec)
    turn = handle.wait(5)
    assert handle.done and turn.status == "complete"
    ref = final("lc_stream_plain")
    assert turn.text == ref["text"]
    assert turn.finish_reason == "COMPLETE"
    assert turn.response_ids == [ref["id"]]
    assert turn.usage["tokens"]["output_tokens"] == ref["usage"]["tokens"]["output_tokens"]
    assert turn.params["temperature"] == 0.2 and "messages" not in turn.params
    # timings: ttft <= total, tokens/s positive
    assert 0 <= turn.timings["ttft"] <= turn.timings["total"]
    assert turn.timings["tokens_per_second"] > 0
    # hooks: on_start first, one on_event per event, on_done once and last, all off the main thread
    names = rec.names()
    assert names[0] == "on_start" and names[-1] == "on_done"
    assert names.count("on_event") == len(events) and names.count("on_done") == 1
    main = threading.get_ident()
    assert all(main not in ids for ids in rec.threads.values())
    assert len(set().union(*rec.threads.values())) == 1  # every hook in the same worker thread
    # the request the backend got: system + user, validated params
    req = backend.requests[0]
    assert req["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert req["model"] == "command-r"
    sdk_messages(conv.messages)


def test_inline_turn_runs_in_calling_thread() -> None:
    conv = Conversation()
    rec = Recorder()
    handle = start_turn(
        conv,
        ReplayBackend(fixture_events("va_stream_text")),
        "x",
        MODEL,
        listener=rec,
        background=False,
    )
    assert handle.done and handle.turn.status == "complete"
    assert rec.threads["on_start"] == {threading.get_ident()}
    assert handle.turn.text == final("va_stream_text")["text"]


def test_default_model_filled_from_backend_name() -> None:
    class Local(ReplayBackend):
        name = "local"

    backend = Local(fixture_events("va_stream_text"))
    conv = Conversation()
    start_turn(conv, backend, "x", {}, background=False)
    from nbchat.backends import default_model

    assert backend.requests[0]["model"] == default_model("local")


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {**MODEL, "temperature": 1.5},
        {**MODEL, "p": 1.0},
        {**MODEL, "safety_mode": "LAX"},
        {**MODEL, "tool_choice": "REQUIRED"},
        {"model": ""},
    ],
)
def test_validation_error_leaves_conversation_unchanged(params: dict[str, Any]) -> None:
    backend = ReplayBackend(fixture_events("lc_stream_plain"))
    conv = Conversation(system="s")
    start_turn(conv, backend, "first", MODEL, background=False)
    before = conv.to_dict()
    threads = threading.active_count()
    with pytest.raises(ValidationError) as info:
        start_turn(conv, backend, "second", params)
    assert info.value.field  # names the field
    assert conv.to_dict() == before
    assert threading.active_count() == threads  # no worker was started
    assert len(backend.requests) == 1  # nothing sent


def test_bad_user_content_is_a_validation_error() -> None:
    conv = Conversation()
    with pytest.raises(ValidationError):
        start_turn(conv, ReplayBackend(fixture_events("va_stream_text")), 42, MODEL)
    assert len(conv) == 0


# -- cancel ------------------------------------------------------------------------------------
def test_cancel_within_200ms_with_stubborn_backend_keeps_partial_and_discards_late_result() -> None:
    events = fixture_events("lc_stream_plain")
    backend = ReplayBackend(events, block_after=20, stubborn=True)
    conv = Conversation()
    rec = Recorder()
    handle = start_turn(conv, backend, "hi", MODEL, listener=rec)
    assert backend.blocked.wait(5)
    time.sleep(0.02)  # let the worker finish handling the 20 events
    t0 = time.perf_counter()
    turn = handle.cancel()
    latency = time.perf_counter() - t0
    print(f"cancel latency with a stubborn backend: {latency * 1000:.1f} ms")
    assert latency < 0.2
    assert turn.status == "cancelled" and turn.cancelled and handle.done
    assert rec.done.is_set() and rec.names().count("on_done") == 1
    partial = turn.text
    expected = "".join(
        e["delta"]["message"]["content"]["text"]
        for e in events[:20]
        if e["type"] == "content-delta"
    )
    assert partial == expected and partial  # the partial reply is kept
    assert turn.output and turn.output[-1]["role"] == "assistant"
    assert conv.messages == []  # a cut turn is never resent
    # the backend wakes up later: its events must not change the finished turn
    snapshot = turn.to_dict()
    backend.release.set()
    assert backend.finished.wait(5)
    time.sleep(0.05)
    assert turn.to_dict() == snapshot
    assert rec.names().count("on_done") == 1


def test_cancel_cooperative_backend_finishes_in_worker() -> None:
    backend = ReplayBackend(fixture_events("lc_stream_plain"), block_after=5)
    conv = Conversation()
    rec = Recorder()
    handle = start_turn(conv, backend, "hi", MODEL, listener=rec)
    assert backend.blocked.wait(5)
    t0 = time.perf_counter()
    conv.cancel()
    assert time.perf_counter() - t0 < 0.2
    assert handle.turn.status == "cancelled"
    assert handle.turn.error == "cancelled"
    assert rec.threads["on_done"] != {threading.get_ident()}  # the worker finalised it itself
    assert conv.messages == []


def _turn_threads() -> set[threading.Thread]:
    """Live threads, less the history store's writer (one per store, started when a finished
    turn finds the store busy, and kept: not a per-turn thread)."""
    return {t for t in threading.enumerate() if t.name != "nbchat-history"}


def test_no_stray_threads_after_20_cancel_cycles() -> None:
    base = _turn_threads()
    conv = Conversation()
    latencies = []
    for _ in range(20):
        backend = ReplayBackend(fixture_events("lc_stream_plain"), block_after=3)
        handle = start_turn(conv, backend, "hi", MODEL)
        assert backend.blocked.wait(5)
        t0 = time.perf_counter()
        handle.cancel()
        latencies.append(time.perf_counter() - t0)
        assert handle.turn.status == "cancelled"
    deadline = time.monotonic() + 3
    # only threads started here count: earlier tests' leftovers may end meanwhile
    while _turn_threads() - base and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _turn_threads() - base, [t.name for t in _turn_threads() - base]
    assert max(latencies) < 0.2
    assert len(conv) == 20 and all(t.cancelled for t in conv) and conv.messages == []


def test_keyboard_interrupt_during_wait_cancels_turn() -> None:
    backend = ReplayBackend(fixture_events("lc_stream_plain"), block_after=10, stubborn=True)
    conv = Conversation()
    handle = start_turn(conv, backend, "hi", MODEL)
    assert backend.blocked.wait(5)
    timer = threading.Timer(0.05, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            conv.wait()
    finally:
        timer.join()
        backend.release.set()
    assert handle.turn.status == "cancelled" and handle.turn.error == "interrupted"
    assert handle.turn.text  # partial kept


def test_keyboard_interrupt_inline_cancels_and_reraises() -> None:
    backend = ReplayBackend(
        fixture_events("lc_stream_plain"), raise_after=(12, KeyboardInterrupt())
    )
    conv = Conversation()
    with pytest.raises(KeyboardInterrupt):
        start_turn(conv, backend, "hi", MODEL, background=False)
    turn = conv.last
    assert turn.status == "cancelled" and turn.text and conv.messages == []


# -- errors ------------------------------------------------------------------------------------
def test_mid_stream_api_error_is_recorded_redacted_and_excluded(monkeypatch) -> None:
    monkeypatch.setenv("CO_API_KEY", "sk-test-secret-123456")
    err = APIError("upstream said Bearer sk-test-secret-123456 is bad", status_code=500)
    backend = ReplayBackend(fixture_events("lc_stream_plain"), raise_after=(15, err))
    conv = Conversation()
    start_turn(conv, ReplayBackend(fixture_events("va_stream_text")), "ok", MODEL, background=False)
    handle = start_turn(conv, backend, "hi", MODEL)
    turn = handle.wait(5)
    assert turn.status == "error" and turn.finish_reason == "ERROR"
    assert "sk-test-secret-123456" not in turn.error and "HTTP 500" in turn.error
    assert "sk-test-secret" not in repr(conv) and "sk-test-secret" not in conv.to_json()
    assert turn.text  # partial kept
    assert [m["content"] for m in conv.messages if m["role"] == "user"] == ["ok"]
    with pytest.raises(APIError):
        turn.raise_for_status()


def test_inline_error_raises_after_recording() -> None:
    backend = ReplayBackend(
        fixture_events("lc_stream_plain"), raise_after=(0, ConnectionError("refused"))
    )
    conv = Conversation()
    with pytest.raises(ConnectionError):
        start_turn(conv, backend, "hi", MODEL, background=False)
    assert len(conv) == 1 and conv.last.status == "error" and "refused" in conv.last.error
    assert conv.messages == []


def test_in_stream_error_event_flags_turn() -> None:
    conv = Conversation()
    with pytest.raises(APIError):
        start_turn(
            conv,
            ReplayBackend(fixture_events("lc_stream_error_invalid_tool_1")),
            "q",
            MODEL,
            background=False,
        )
    turn = conv.last
    assert turn.status == "error" and turn.finish_reason == "ERROR"
    assert "invalid tool generation" in turn.error
    assert turn.output[-1].get("tool_plan")  # partial (the plan) kept
    assert conv.messages == []


def test_stream_without_message_end_is_an_error() -> None:
    events = fixture_events("va_stream_text")[:-1]
    conv = Conversation()
    handle = start_turn(conv, ReplayBackend(events), "q", MODEL)
    assert handle.wait(5).status == "error"
    assert "message-end" in handle.turn.error


# -- tool loop ---------------------------------------------------------------------------------
def magic_function(input: int) -> dict:
    """Applies a magic function to an input.

    Args:
        input: Number to apply the magic function to.
    """
    return {"output": str(input + 2)}


def test_tool_loop_runs_python_function_and_continues() -> None:
    backend = ReplayBackend(
        fixture_events("lc_h20241115_agent_stream_call01"),
        fixture_events("lc_h20241115_agent_stream_call02"),
    )
    conv = Conversation(system="You are a helpful assistant")
    rec = Recorder()
    approvals: list[list[dict]] = []
    worker_threads: set[int] = set()

    def approve(calls: list[dict]) -> bool:
        approvals.append(calls)
        worker_threads.add(threading.get_ident())
        return True

    handle = start_turn(
        conv,
        backend,
        "what is the value of magic_function(3)?",
        MODEL,
        tools=[magic_function],
        approve=approve,
        listener=rec,
    )
    turn = handle.wait(5)
    assert turn.status == "complete", turn.error
    assert [m["role"] for m in turn.output] == ["assistant", "tool", "assistant"]
    assert turn.output[0]["tool_calls"][0]["function"]["name"] == "magic_function"
    tool_msg = turn.output[1]
    assert tool_msg["tool_call_id"] == "magic_function_gvf47dhzxddj"
    assert tool_msg["content"][0]["document"]["data"] == {"output": "5"}
    assert turn.text == final("lc_h20241115_agent_stream_call02")["text"]
    assert turn.citations and turn.citations[0]["sources"][0]["id"].startswith("magic_function")
    assert len(turn.response_ids) == 2
    assert turn.usage["billed_units"]["output_tokens"] == sum(
        final(n)["usage"]["billed_units"]["output_tokens"]
        for n in ("lc_h20241115_agent_stream_call01", "lc_h20241115_agent_stream_call02")
    )
    # the tool definition came from the function; round 2 carried the tool message
    assert len(backend.requests) == 2
    tool_def = backend.requests[0]["tools"][0]["function"]
    assert tool_def["name"] == "magic_function"
    assert tool_def["parameters"]["properties"]["input"]["type"] == "integer"
    assert [m["role"] for m in backend.requests[1]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
    ]
    validate_request(backend.requests[1])
    # approve and hooks
    assert len(approvals) == 1 and approvals[0][0]["id"] == "magic_function_gvf47dhzxddj"
    assert threading.get_ident() not in worker_threads
    names = rec.names()
    assert names.index("on_tool_calls") < names.index("on_tool_result") < names.index("on_done")
    # what would be resent: SDK-valid and accepted by our validator
    sdk_messages(conv.messages)
    validate_request({**MODEL, "messages": conv.messages})


def test_tool_call_denied_sends_denial_and_continues() -> None:
    called = []

    def magic_function(input: int) -> int:  # noqa: F811 - local on purpose
        """Magic."""
        called.append(input)
        return input

    backend = ReplayBackend(
        fixture_events("lc_h20241115_agent_stream_call01"),
        fixture_events("lc_h20241115_agent_stream_call02"),
    )
    conv = Conversation()
    handle = start_turn(
        conv, backend, "q", MODEL, tools=[magic_function], approve=lambda calls: False
    )
    turn = handle.wait(5)
    assert turn.status == "complete" and called == []
    assert turn.output[1]["content"][0]["document"]["data"] == {"error": DENIED}
    sdk_messages(conv.messages)


def test_tool_loop_stops_after_max_tool_rounds() -> None:
    first = fixture_events("lc_h20241115_agent_stream_call01")
    # a second TOOL_CALL round with a fresh call id (ids must be unique in a conversation)
    second = json.loads(
        json.dumps(first).replace("magic_function_gvf47dhzxddj", "magic_function_round2")
    )
    backend = ReplayBackend(first, second)
    conv = Conversation()
    handle = start_turn(conv, backend, "q", MODEL, tools=[magic_function], max_tool_rounds=1)
    turn = handle.wait(5)
    assert turn.status == "error" and "max_tool_rounds=1" in turn.error
    assert len(backend.requests) == 2
    assert conv.messages == []


def test_tool_calls_without_python_functions_complete_the_turn() -> None:
    conv = Conversation()
    tool = {
        "type": "function",
        "function": {"name": "Person", "description": "", "parameters": {"type": "object"}},
    }
    start_turn(
        conv,
        ReplayBackend(fixture_events("lc_stream_tool_call")),
        "Erick, 27",
        {**MODEL, "tools": [tool]},
        background=False,
    )
    turn = conv.last
    assert turn.status == "complete" and turn.finish_reason == "TOOL_CALL"
    assert turn.tool_calls[0]["function"]["name"] == "Person"


def test_cancel_while_waiting_for_approval() -> None:
    backend = ReplayBackend(
        fixture_events("lc_h20241115_agent_stream_call01"),
        fixture_events("lc_h20241115_agent_stream_call02"),
    )
    asked = threading.Event()
    click = threading.Event()

    def approve(calls: list[dict]) -> bool:
        asked.set()
        click.wait(5)  # the Approve/Deny click that never comes
        return True

    conv = Conversation()
    handle = start_turn(conv, backend, "q", MODEL, tools=[magic_function], approve=approve)
    assert asked.wait(5)
    t0 = time.perf_counter()
    handle.cancel()
    assert time.perf_counter() - t0 < 0.2
    assert handle.turn.status == "cancelled"
    click.set()
    time.sleep(0.05)
    assert len(backend.requests) == 1 and conv.messages == []


# -- ordering, replace-on-rerun, concurrency --------------------------------------------------
def test_second_turn_waits_for_running_one_and_sees_its_answer() -> None:
    slow = ReplayBackend(fixture_events("lc_stream_plain"), delay=0.002)
    conv = Conversation()
    h1 = start_turn(conv, slow, "one", MODEL)
    h2 = start_turn(conv, slow, "two", MODEL)
    h2.wait(10)
    assert h1.turn.status == h2.turn.status == "complete"
    roles = [m["role"] for m in slow.requests[1]["messages"]]
    assert roles == ["user", "assistant", "user"]


def test_rerun_cell_replaces_its_turn_in_place() -> None:
    backend = ReplayBackend(fixture_events("va_stream_text"))
    conv = Conversation(system="sys")
    start_turn(
        conv, backend, "A", MODEL, cell={"cell_id": "c1", "execution_count": 1}, background=False
    )
    start_turn(
        conv, backend, "B", MODEL, cell={"cell_id": "c2", "execution_count": 2}, background=False
    )
    old = conv[0]
    start_turn(
        conv, backend, "A2", MODEL, cell={"cell_id": "c1", "execution_count": 3}, background=False
    )
    assert len(conv) == 2
    assert conv[0] is not old and conv[0].prompt == "A2" and conv[1].prompt == "B"
    assert conv[0].cell == {"cell_id": "c1", "execution_count": 3}
    # the re-run request used only the history before the replaced turn
    assert backend.requests[-1]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "A2"},
    ]
    assert [m["content"] for m in conv.messages if m["role"] == "user"] == ["A2", "B"]
    # a cell without an id never replaces anything
    start_turn(conv, backend, "C", MODEL, cell={"execution_count": 4}, background=False)
    start_turn(conv, backend, "C", MODEL, cell={"execution_count": 5}, background=False)
    assert len(conv) == 4


def test_rerun_of_a_streaming_cell_cancels_and_replaces_it() -> None:
    blocked = ReplayBackend(fixture_events("lc_stream_plain"), block_after=4)
    conv = Conversation()
    h1 = start_turn(conv, blocked, "A", MODEL, cell={"cell_id": "c1"})
    assert blocked.blocked.wait(5)
    h2 = start_turn(
        conv,
        ReplayBackend(fixture_events("va_stream_text")),
        "A again",
        MODEL,
        cell={"cell_id": "c1"},
    )
    h2.wait(5)
    assert h1.turn.status == "cancelled" and "re-run" in h1.turn.error
    assert len(conv) == 1 and conv[0] is h2.turn and h2.turn.status == "complete"


def test_system_param_sets_conversation_system() -> None:
    backend = ReplayBackend(fixture_events("va_stream_text"))
    conv = Conversation(system="old")
    start_turn(conv, backend, "x", {**MODEL, "system": "new"}, background=False)
    assert backend.requests[0]["messages"][0] == {"role": "system", "content": "new"}
    assert conv.system == "new" and conv.messages[0]["content"] == "new"


def test_threads_append_while_cells_read() -> None:
    conv = Conversation(system="s")
    backend = ReplayBackend(fixture_events("lc_h20241009_stream_plain"), delay=0.0005)
    errors: list[BaseException] = []
    stop = threading.Event()
    snapshots = 0

    def reader() -> None:
        nonlocal snapshots
        try:
            while not stop.is_set():
                msgs = conv.messages
                sdk_messages(msgs)
                # complete turns only: user/assistant strictly alternate after the system message
                assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * (
                    (len(msgs) - 1) // 2
                )
                conv.to_dataframe()
                repr(conv)
                conv.to_json()
                _ = [t.text for t in conv.turns]
                if conv.running:
                    snapshots += 1
                time.sleep(0.002)  # let the worker have the GIL too
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    conv.to_dataframe()  # import pandas now, not inside the timed window
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(5):
        start_turn(conv, backend, f"q{i}", MODEL)
    conv.wait(20)
    stop.set()
    for r in readers:
        r.join()
    assert not errors, errors[0]
    assert snapshots >= 2  # the readers really ran while turns were streaming
    assert len(conv) == 5 and all(t.complete for t in conv)
    assert len(conv.messages) == 11


def test_logprobs_and_document_citations_recorded() -> None:
    from nbchat.protocol.events import StreamBuilder, usage_dict

    sb = StreamBuilder()
    events = [sb.start()]
    for i, piece in enumerate(["Paris", " is", " nice."]):
        events += sb.text(piece, logprobs={"token_ids": [i], "logprobs": [-0.1 * (i + 1)]})
    cit = {
        "start": 0,
        "end": 5,
        "text": "Paris",
        "sources": [{"type": "document", "id": "doc:0", "document": {"text": "Paris"}}],
    }
    events += sb.citation(cit)
    events += sb.end("COMPLETE", usage_dict(7, 3))
    conv = Conversation()
    handle = start_turn(
        conv, ReplayBackend(events), "where?", {**MODEL, "logprobs": True, "documents": ["Paris"]}
    )
    turn = handle.wait(5)
    assert turn.status == "complete" and turn.text == "Paris is nice."
    assert [lp["logprobs"] for lp in turn.logprobs] == [[-0.1], [-0.2], [pytest.approx(-0.3)]]
    assert turn.citations == [cit] and turn.output[-1]["citations"] == [cit]
    assert turn.params["documents"] == ["Paris"]  # request params recorded as sent
    assert turn.timings["tokens_per_second"] > 0 and turn.usage["tokens"]["output_tokens"] == 3
    sdk_messages(conv.messages)


# -- end to end with real backends ---------------------------------------------------------------
def test_http_client_turn_and_cancel_over_loopback() -> None:
    """The real nbchat.Client against a loopback v2 server: a full turn, then Stop while the
    server stalls mid-stream (the socket is shut down; the partial is kept)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from v2server import V2Server, byte_offset_after, fixture_body, sse

    from nbchat.backends.cohere import Client

    body = fixture_body("lc_stream_plain")
    with V2Server() as srv:
        srv.push(sse(body), sse(body, stall_after=byte_offset_after(body, 12)))
        client = Client(base_url=srv.url, api_key="test-key-abcdef", max_retries=0)
        conv = Conversation()
        turn = conv.send("hi", backend=client, **MODEL)
        assert turn.complete and turn.text == final("lc_stream_plain")["text"]
        sent = srv.requests[0].json
        assert sent["messages"] == [{"role": "user", "content": "hi"}] and sent["stream"] is True
        rec = Recorder()
        handle = start_turn(conv, client, "again", MODEL, listener=rec)
        deadline = time.monotonic() + 5
        while rec.names().count("on_event") < 11 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # the server now stalls after 12 events
        t0 = time.perf_counter()
        handle.cancel()
        latency = time.perf_counter() - t0
        print(f"cancel latency over loopback HTTP: {latency * 1000:.1f} ms")
        assert latency < 0.2 and rec.done.wait(1)
        assert handle.turn.status == "cancelled" and handle.turn.text
        assert [m["content"] for m in conv.messages if m["role"] == "user"] == ["hi"]
        # the second request carried the first (complete) turn
        assert [m["role"] for m in srv.requests[1].json["messages"]] == [
            "user",
            "assistant",
            "user",
        ]


@pytest.mark.engine
def test_embedded_engine_turns_and_stop() -> None:
    from nbchat.backends.local import LocalBackend

    backend = LocalBackend()
    conv = Conversation(system="You are terse.")
    turn = conv.send("Name a colour.", backend=backend, max_tokens=8, temperature=0.0)
    assert turn.complete and turn.text.strip() and turn.timings["ttft"] > 0
    assert turn.usage["tokens"]["output_tokens"] >= 1
    rec = Recorder()
    handle = start_turn(
        conv, backend, "Write a long story about the sea.", {"max_tokens": 400}, listener=rec
    )
    deadline = time.monotonic() + 30
    while rec.names().count("on_event") < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.perf_counter()
    handle.cancel()
    latency = time.perf_counter() - t0
    print(f"cancel latency with the embedded engine: {latency * 1000:.1f} ms")
    assert latency < 0.2 and handle.turn.status == "cancelled"
    sdk_messages(conv.messages)
    assert len(conv.messages) == 3  # system + the complete turn only
