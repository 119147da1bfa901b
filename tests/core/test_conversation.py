"""Conversation / Turn: SDK-ready messages, flags for cut turns, round trips, fork, reset, reprs.

Turns are produced by the real runner over `ReplayBackend` (recorded Cohere streams; see
test_runner.py), not built by hand, except where a plain message list is the input under test.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_runner import (  # noqa: E402 - shared replay backend
    MODEL,
    ReplayBackend,
    final,
    fixture_events,
    magic_function,
    sdk_messages,
)

from nbchat.conversation import Conversation, Turn  # noqa: E402
from nbchat.errors import APIError, ValidationError  # noqa: E402
from nbchat.protocol.request import validate_request  # noqa: E402


def tool_backend() -> ReplayBackend:
    return ReplayBackend(
        fixture_events("lc_h20241115_agent_stream_call01"),
        fixture_events("lc_h20241115_agent_stream_call02"),
    )


def rich_conversation() -> Conversation:
    """system + a plain turn + a tool-using turn with citations + a cancelled + an error turn."""
    conv = Conversation(system="You are a helpful assistant")
    conv.send(
        "hi", backend=ReplayBackend(fixture_events("lc_stream_plain")), **MODEL, temperature=0.1
    )
    conv.send(
        "what is the value of magic_function(3)?",
        backend=tool_backend(),
        tools=[magic_function],
        cell={"cell_id": "cell-7", "execution_count": 7},
        **MODEL,
    )
    blocked = ReplayBackend(fixture_events("lc_h20241008_stream_plain"), block_after=8)
    conv.send("long story", backend=blocked, wait=False, **MODEL)
    assert blocked.blocked.wait(5)
    conv.cancel()
    broken = ReplayBackend(
        fixture_events("lc_stream_plain"), raise_after=(6, APIError("boom", status_code=503))
    )
    with pytest.raises(APIError):
        conv.send("again", backend=broken, **MODEL)
    return conv


def test_messages_are_sdk_ready_and_exclude_cut_turns() -> None:
    conv = rich_conversation()
    assert [t.status for t in conv] == ["complete", "complete", "cancelled", "error"]
    assert conv[2].cancelled and conv[2].text and conv[2].finish_reason is None
    assert conv[3].finish_reason == "ERROR" and "boom" in conv[3].error and conv[3].text
    msgs = conv.messages
    assert [m["role"] for m in msgs] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert all(
        m.get("content") not in ("long story", "again") for m in msgs
    )  # cut turns never resent
    parsed = sdk_messages(msgs)
    assert parsed[4].tool_calls[0].function.name == "magic_function"
    assert parsed[6].citations and parsed[6].citations[0].sources
    validate_request({**MODEL, "messages": msgs})
    json.dumps(msgs)  # plain JSON data
    msgs.append({"role": "user", "content": "x"})  # a copy: the conversation is unchanged
    assert len(conv.messages) == 7


def test_turn_records_everything() -> None:
    conv = rich_conversation()
    t = conv[1]
    assert t.params["model"] == "command-r" and t.params["tools"][0]["function"]["name"]
    assert t.input == [{"role": "user", "content": "what is the value of magic_function(3)?"}]
    assert len(t.response_ids) == 2 and t.finish_reason == "COMPLETE"
    assert t.cell == {"cell_id": "cell-7", "execution_count": 7}
    assert {"ttft", "total", "tokens_per_second", "started_at"} <= set(t.timings)
    assert t.citations and t.backend == "replay"
    assert t.text == final("lc_h20241115_agent_stream_call02")["text"]
    assert conv[0].params["temperature"] == 0.1
    assert conv.usage["billed_units"]["output_tokens"] >= t.usage["billed_units"]["output_tokens"]


def test_seed_from_plain_messages() -> None:
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    conv = Conversation(msgs)
    assert conv.system == "sys" and len(conv) == 2
    assert conv.messages == msgs
    assert conv[1].text == "d"
    with pytest.raises(ValidationError):
        Conversation([{"content": "no role"}])


def test_json_round_trip(tmp_path: Path) -> None:
    conv = rich_conversation()
    back = Conversation.from_json(conv.to_json())
    assert back.to_dict() == conv.to_dict()
    assert back.messages == conv.messages
    assert [t.status for t in back] == ["complete", "complete", "cancelled", "error"]
    path = tmp_path / "chat.json"
    conv.save(path)
    loaded = Conversation.load(path)
    assert loaded.to_dict() == conv.to_dict()
    # a plain message list is accepted too
    assert Conversation.from_json(json.dumps(conv.messages)).messages == conv.messages


def test_running_turn_snapshot_is_flagged_on_load() -> None:
    blocked = ReplayBackend(fixture_events("lc_stream_plain"), block_after=10)
    conv = Conversation()
    conv.send("x", backend=blocked, wait=False, **MODEL)
    assert blocked.blocked.wait(5)
    text = conv.to_json()
    conv.cancel()
    back = Conversation.from_json(text)
    assert back[0].status == "cancelled" and back[0].text and back.messages == []


def test_dataframe_round_trip_and_columns() -> None:
    conv = rich_conversation()
    df = conv.to_dataframe()
    for col in (
        "turn",
        "role",
        "text",
        "tool_calls",
        "citations",
        "finish_reason",
        "input_tokens",
        "output_tokens",
        "ttft",
        "total",
        "tokens_per_second",
        "params",
        "status",
        "cell_id",
        "execution_count",
    ):
        assert col in df.columns
    n_msgs = 1 + sum(len(t.input) + len(t.output) for t in conv)
    assert len(df) == n_msgs  # one row per message (system included)
    assert df.iloc[0]["role"] == "system" and df.iloc[0]["turn"] == -1
    tool_rows = df[df.role == "tool"]
    assert len(tool_rows) == 1 and tool_rows.iloc[0]["cell_id"] == "cell-7"
    assert set(df.status) == {"complete", "cancelled", "error"}
    back = Conversation.from_dataframe(df)
    assert back.messages == conv.messages
    assert [t.status for t in back] == [t.status for t in conv]
    assert [t.cell for t in back] == [t.cell for t in conv]
    assert back[1].timings["ttft"] == conv[1].timings["ttft"]


def test_dataframe_edit_and_csv_round_trip(tmp_path: Path) -> None:
    conv = rich_conversation()
    df = conv.to_dataframe()
    # edit the first answer in pandas, then rebuild
    idx = df.index[(df.turn == 0) & (df.role == "assistant")][0]
    df.loc[idx, "text"] = "Edited answer."
    edited = Conversation.from_dataframe(df)
    assert edited[0].text == "Edited answer."
    sdk_messages(edited.messages)
    # through CSV, where dict columns become strings
    path = tmp_path / "chat.csv"
    conv.to_dataframe().to_csv(path, index=False)
    import pandas as pd

    back = Conversation.from_dataframe(pd.read_csv(path))
    assert back.messages == conv.messages


def test_fork_is_independent() -> None:
    conv = rich_conversation()
    fork = conv.fork()
    assert fork.to_dict() == conv.to_dict()
    fork.send("more", backend=ReplayBackend(fixture_events("va_stream_text")), **MODEL)
    fork.system = "other"
    fork[0].output[0]["content"][0]["text"] = "changed"
    assert len(conv) == 4 and conv.system == "You are a helpful assistant"
    assert conv[0].text == final("lc_stream_plain")["text"]
    conv.send("orig", backend=ReplayBackend(fixture_events("va_stream_text")), **MODEL)
    assert len(fork) == 5 and fork[-1].prompt == "more"
    assert len(conv.fork(at=1)) == 1


def test_fork_while_running_snapshots_as_cancelled() -> None:
    blocked = ReplayBackend(fixture_events("lc_stream_plain"), block_after=10)
    conv = Conversation()
    conv.send("x", backend=blocked, wait=False, **MODEL)
    assert blocked.blocked.wait(5)
    fork = conv.fork()
    assert fork[0].status == "cancelled" and conv[0].status == "running"
    conv.cancel()
    assert fork.wait(0.1) is fork[0]


def test_reset_keeps_system_and_cancels_running() -> None:
    conv = rich_conversation()
    blocked = ReplayBackend(fixture_events("lc_stream_plain"), block_after=10)
    turn = conv.send("x", backend=blocked, wait=False, **MODEL)
    assert blocked.blocked.wait(5)
    conv.reset()
    assert len(conv) == 0 and turn.status == "cancelled"
    assert conv.messages == [{"role": "system", "content": "You are a helpful assistant"}]


def test_replace_turn_api() -> None:
    conv = Conversation()
    for i, cid in enumerate(["a", "b", "c"]):
        conv.send(
            f"q{i}",
            backend=ReplayBackend(fixture_events("va_stream_text")),
            cell={"cell_id": cid, "execution_count": i},
            **MODEL,
        )
    assert conv.find_cell_turn("b") == 1 and conv.find_cell_turn({"cell_id": "c"}) == 2
    new = Turn([{"role": "user", "content": "new"}], [{"role": "assistant", "content": "ok"}])
    assert conv.replace_turn("b", new) == 1 and conv[1] is new
    assert conv.history(1) == conv.history(conv[1])
    assert [m["content"] for m in conv.messages if m["role"] == "user"] == ["q0", "new", "q2"]
    assert conv.replace_turn("zzz") is None and conv.replace_turn("a") == 0 and len(conv) == 2


def test_reprs_show_transcript() -> None:
    conv = rich_conversation()
    plain = repr(conv)
    assert plain.startswith("Conversation: 4 turns")
    assert "[user] hi" in plain and "[tool call] magic_function(" in plain
    assert "cancelled" in plain and "error" in plain
    bundle = conv._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/markdown"}
    assert bundle["text/plain"] == plain and "object at 0x" not in plain
    md = conv._repr_markdown_()
    assert "**user:** hi" in md and "**Conversation: 4 turns" in md
    assert "Turn(" in repr(conv[0])


def test_repr_through_ipython_formatter() -> None:
    from IPython.core.formatters import DisplayFormatter

    conv = rich_conversation()
    data, _ = DisplayFormatter().format(conv)
    assert data["text/plain"].startswith("Conversation:") and "text/markdown" in data


def test_concurrent_reads_while_worker_appends() -> None:
    conv = Conversation()
    backend = ReplayBackend(fixture_events("lc_h20241008_stream_plain"), delay=0.0002)
    turn = conv.send("go", backend=backend, wait=False, **MODEL)
    seen = []
    while not turn.done:
        seen.append(len(turn.text))
        msgs = conv.messages
        assert msgs == [] or turn.complete  # a running turn is never in messages
    assert seen == sorted(seen) and seen[-1] > 0  # partial text grows while streaming
    assert conv.wait() is turn and turn.complete
    assert threading.active_count() >= 1


def test_send_uses_conversation_defaults() -> None:
    backend = ReplayBackend(fixture_events("va_stream_text"))
    conv = Conversation(backend=backend, model="command-r", temperature=0.5)
    turn = conv.send("hello")
    assert turn.complete and backend.requests[0]["temperature"] == 0.5
    assert turn.raise_for_status() is turn
