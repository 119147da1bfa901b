"""The embedded engine decodes several requests in one batch (issue 15), on the real model.

Continuous batching (a finished sequence's slot goes to the next request while others keep
streaming), priority among requests waiting for a full batch, cancel of one sequence, and
valid, per-request results (every feature, structure, finish reasons, usage) in a batch.
Assertions are on structure and on relations between runs, never on the model's words.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from nbchat.backends.base import Cancel, collect
from nbchat.backends.local import LocalBackend
from nbchat.protocol.events import check_order

pytestmark = pytest.mark.engine

STORY = "Write a long story about a lighthouse keeper."


def req(content: str = STORY, **params: Any) -> dict[str, Any]:
    return {"model": "smollm2-135m", "messages": [{"role": "user", "content": content}], **params}


class Stream(threading.Thread):
    """Consume one request in a thread, stamping every event."""

    def __init__(self, backend: LocalBackend, request: dict[str, Any], cancel=None) -> None:
        super().__init__(daemon=True)
        self.backend, self.request, self.cancel = backend, request, cancel
        self.events: list[dict[str, Any]] = []
        self.stamps: list[float] = []
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for ev in self.backend.stream(self.request, self.cancel):
                self.events.append(ev)
                self.stamps.append(time.monotonic())
        except BaseException as exc:  # reported by the test
            self.error = exc

    def deltas(self) -> int:
        return sum(1 for e in self.events if e["type"] == "content-delta")

    def first(self, kind: str) -> float:
        return next(t for e, t in zip(self.events, self.stamps, strict=True) if e["type"] == kind)

    def response(self) -> dict[str, Any]:
        assert self.error is None, self.error
        check_order(self.events)
        return collect(iter(self.events))


def wait_for(cond, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_finished_sequence_frees_its_slot_for_the_next_request() -> None:
    backend = LocalBackend(slots=2)
    eng = backend.engine()
    before = len(eng.admitted)
    long = Stream(backend, req(max_tokens=80, temperature=0))
    wait_for(lambda: long.deltas() >= 1)
    short = Stream(backend, req("Say hi.", max_tokens=3))
    queued = Stream(backend, req("Say bye.", max_tokens=3))  # the batch is full: waits
    for s in (long, short, queued):
        s.join(300)
    admitted = list(eng.admitted)[before:]
    assert len(admitted) == 3
    slots = [slot for _, slot in admitted]
    assert slots[2] == slots[1] != slots[0]  # the queued request took the short one's slot
    # ... as soon as it was free, while the long one was still streaming
    assert queued.first("message-start") >= short.first("message-end")
    assert queued.first("message-end") < long.first("message-end")
    assert long.deltas() > 0 and long.response()["usage"]["tokens"]["output_tokens"] == 80
    assert eng.max_batch == 2
    for s in (short, queued):
        assert s.response()["finish_reason"] in ("MAX_TOKENS", "COMPLETE")


def test_priority_orders_requests_waiting_for_a_full_batch() -> None:
    backend = LocalBackend(slots=2)
    eng = backend.engine()
    busy = [Stream(backend, req(max_tokens=60, temperature=0)) for _ in range(2)]
    wait_for(lambda: all(b.deltas() >= 1 for b in busy))
    before = len(eng.admitted)
    waiting = {}
    for key, prio in (("p5", 5), ("p1a", 1), ("p0", 0), ("p1b", 1)):
        waiting[key] = Stream(backend, req("Say hi.", max_tokens=2, priority=prio))
        time.sleep(0.05)  # submission order p5, p1a, p0, p1b while the batch is full
    assert all(b.deltas() < 60 for b in busy)  # still full when the last one was queued
    for s in [*busy, *waiting.values()]:
        s.join(300)
    order = sorted(waiting, key=lambda k: waiting[k].first("message-start"))
    assert order == ["p0", "p1a", "p1b", "p5"]
    assert len(eng.admitted) - before == 4
    for s in waiting.values():
        assert s.response()["usage"]["tokens"]["output_tokens"] <= 2


def test_cancel_one_sequence_leaves_the_others_streaming() -> None:
    backend = LocalBackend(slots=4)
    cancel = Cancel()
    streams = [
        Stream(backend, req(max_tokens=50, temperature=0)),
        Stream(backend, req(max_tokens=200), cancel),
        Stream(backend, req("Describe a forest.", max_tokens=50, temperature=0)),
    ]
    wait_for(lambda: all(s.deltas() >= 3 for s in streams))
    cancel.cancel()
    at_cancel = [s.deltas() for s in streams]
    t0 = time.monotonic()
    for s in streams:
        s.join(300)
    cancelled = streams[1]
    assert cancelled.error is None
    assert all(e["type"] != "message-end" for e in cancelled.events)  # stopped, no end
    assert cancelled.deltas() <= at_cancel[1] + 1
    for i in (0, 2):
        resp = streams[i].response()
        assert resp["finish_reason"] == "MAX_TOKENS"
        assert resp["usage"]["tokens"]["output_tokens"] == 50
        assert streams[i].deltas() > at_cancel[i]  # kept streaming after the cancel
        assert streams[i].first("message-end") > t0
    # the cancelled sequence's slot is free again: a new request runs
    after = Stream(backend, req("Say hi.", max_tokens=2))
    after.join(120)
    assert after.response()["finish_reason"] in ("MAX_TOKENS", "COMPLETE")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_batched_requests_each_get_a_valid_result() -> None:
    backend = LocalBackend(slots=4)
    eng = backend.engine()
    greedy = req(max_tokens=24, temperature=0)
    alone = collect(iter(list(backend.stream(greedy))))
    requests = {
        "greedy": greedy,
        "stop": req("Count: one, two, three, four, five.", max_tokens=40, stop_sequences=[","]),
        "json": req(
            "Give a JSON object with a name.",
            max_tokens=60,
            response_format={
                "type": "json_object",
                "json_schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "maxLength": 12}},
                    "required": ["name"],
                },
            },
        ),
        "logprobs": req(max_tokens=6, logprobs=True, temperature=0.5, seed=3),
        "tool": req("Weather in Paris?", max_tokens=80, tools=[WEATHER], tool_choice="REQUIRED"),
        "seeded": req(max_tokens=20, temperature=0.9, seed=5),
    }
    streams = {k: Stream(backend, r) for k, r in requests.items()}
    for s in streams.values():
        s.join(300)
    out = {k: s.response() for k, s in streams.items()}
    assert eng.max_batch >= 2  # they really shared batches
    for k, resp in out.items():
        usage = resp["usage"]["tokens"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] >= 1, k
    # temperature 0 in a batch = the same request alone (per-slot KV, row-independent kernels)
    assert out["greedy"]["message"]["content"][0]["text"] == alone["message"]["content"][0]["text"]
    assert out["greedy"]["finish_reason"] == "MAX_TOKENS"
    assert out["greedy"]["usage"]["tokens"]["output_tokens"] == 24
    stop = out["stop"]
    assert stop["finish_reason"] in ("STOP_SEQUENCE", "COMPLETE", "MAX_TOKENS")
    assert "," not in stop["message"]["content"][0]["text"]
    js = out["json"]
    if js["finish_reason"] == "COMPLETE":
        assert isinstance(json.loads(js["message"]["content"][0]["text"])["name"], str)
    lp = [e for e in streams["logprobs"].events if e["type"] == "content-delta"]
    ids = [i for e in lp for i in e["logprobs"]["token_ids"]]
    vals = [v for e in lp for v in e["logprobs"]["logprobs"]]
    assert len(ids) == len(vals) == out["logprobs"]["usage"]["tokens"]["output_tokens"]
    assert all(v <= 0 for v in vals)
    tool = out["tool"]
    assert tool["finish_reason"] in ("TOOL_CALL", "MAX_TOKENS")
    if tool["finish_reason"] == "TOOL_CALL":
        call = tool["message"]["tool_calls"][0]
        assert call["function"]["name"] == "get_weather"
        assert isinstance(json.loads(call["function"]["arguments"]), dict)
    # a seeded request gives the same reply in the batch as alone
    again = collect(iter(list(backend.stream(requests["seeded"]))))
    assert again["message"]["content"] == out["seeded"]["message"]["content"]


def test_prompt_shared_from_another_slot_gives_the_same_reply() -> None:
    backend = LocalBackend(slots=2)
    ctx = backend.engine().model.ctx()
    system = "You are a careful assistant. " * 12  # > 2 prompt chunks of 64 tokens
    messages = [{"role": "system", "content": system}, {"role": "user", "content": STORY}]
    first = {"model": "smollm2-135m", "messages": messages, "max_tokens": 60, "temperature": 0}
    second = {**first, "max_tokens": 16, "temperature": 0.8, "seed": 9}
    copies = ctx.copies
    running = Stream(backend, first)
    wait_for(lambda: running.deltas() >= 1)
    shared = Stream(backend, second)  # the other slot: copies the running one's prompt
    shared.join(300)
    running.join(300)
    assert ctx.copies == copies + 1
    alone = collect(iter(list(LocalBackend(slots=1).stream(second))))  # another engine
    assert shared.response()["message"]["content"] == alone["message"]["content"]
