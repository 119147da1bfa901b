"""Context that fits (nbchat/context.py): the oldest turns are left out of the REQUEST when it
would not fit, tool calls stay with their results, the conversation keeps everything, and the
views say how many turns were not sent. Real runner over a real v2 HTTP server (tests/
v2server.py), a real IPython shell, and the embedded engine with a small n_ctx."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

from nbchat import context  # noqa: E402
from nbchat.backends.cohere import Client  # noqa: E402
from nbchat.compose import build_request  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402
from nbchat.errors import ValidationError  # noqa: E402
from nbchat.notebook.render import static_bundle  # noqa: E402

MODEL = "command-a-03-2025"
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL_TURN = [
    {"role": "user", "content": "use the tool"},
    {"role": "assistant", "tool_plan": "calling f", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": [{"type": "document", "document": {"data": {"r": 1}}}]},
    {"role": "assistant", "content": [{"type": "text", "text": "f said 1"}]},
]  # fmt: skip


def reply(*pieces: str) -> Any:
    return sse(events_body(text_events(list(pieces))))


def plain_turns(n: int, size: int = 200) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out += [
            {"role": "user", "content": f"question {i} " + "x" * size},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": f"answer {i} " + "y" * size}],
            },
        ]
    return out


# -- the policy -------------------------------------------------------------------------------------
def test_turns_are_whole_and_the_system_message_stays() -> None:
    history = [{"role": "system", "content": "sys"}, *plain_turns(2), *TOOL_TURN, *plain_turns(1)]
    head, turns = context.split_turns(history)
    assert head == [history[0]] and [len(t) for t in turns] == [2, 2, 4, 2]
    user = {"role": "user", "content": "now"}
    kept, dropped = context.fit_history(history, [user], {"model": "m"}, window=2)
    assert dropped == 2 and kept == [history[0], *TOOL_TURN, *plain_turns(1)]
    assert context.fit_history(history, [user], {"model": "m"}, window=0) == ([history[0]], 4)
    # a token budget: the tool call and its result are never split
    for budget in range(10, 600, 7):
        kept, dropped = context.fit_history(
            history, [user], {"model": "m"}, max_input_tokens=budget
        )
        _, kept_turns = context.split_turns(kept)
        assert kept[0] == history[0] and dropped == 4 - len(kept_turns)
        assert kept_turns == context.split_turns(history)[1][dropped:]
        if kept_turns:  # what is kept fits
            size = context.estimate_tokens({"messages": [*kept, user]})
            assert size <= budget
        else:  # nothing fits: system + the new message go alone
            assert dropped == 4


def test_context_sizes_known_and_asked() -> None:
    assert context.context_window(None, "command-a-03-2025") == 256_000
    assert context.context_window(None, "some-unknown-model") is None

    class Small:
        def context_window(self, model: str | None) -> int:
            return 300

    history = plain_turns(10)
    kept, dropped = context.fit_history(
        history,
        [{"role": "user", "content": "q"}],
        {"model": "x", "max_tokens": 50},
        backend=Small(),
    )
    assert 0 < dropped < 10
    assert context.estimate_tokens({"messages": kept}) <= 250
    # an unknown model and no limits: everything is sent
    assert context.fit_history(history, [], {"model": "x"}) == (history, 0)


def test_bad_limits_are_refused_naming_the_field() -> None:
    for field, bad in (("history_window", -1), ("history_window", "3"), ("max_input_tokens", 0)):
        with pytest.raises(ValidationError) as info:
            build_request(Conversation(plain_turns(1)), "q", {"model": MODEL, field: bad})
        assert info.value.field == field


# -- through the runner, over HTTP -----------------------------------------------------------------
def test_requests_fit_the_conversation_keeps_everything_and_the_view_says_so() -> None:
    with V2Server(default=reply("short", " answer")) as srv:
        client = Client(base_url=srv.url, api_key="k", max_retries=0)
        conv = Conversation(system="be brief")
        for i in range(12):
            turn = conv.send(f"question {i} " + "z" * 400, backend=client, model=MODEL,
                             max_input_tokens=400)  # fmt: skip
            sent = srv.requests[-1].json
            assert context.estimate_tokens(sent) <= 400
            assert sent["messages"][0] == {"role": "system", "content": "be brief"}
            assert sent["messages"][-1]["content"].startswith(f"question {i} ")
            assert "max_input_tokens" not in sent and "history_window" not in sent
            n_sent = sum(1 for m in sent["messages"] if m["role"] == "user") - 1
            assert turn.omitted == i - n_sent
        assert turn.omitted > 0 and len(conv.messages) == 1 + 2 * 12  # nothing lost
        note = f"{turn.omitted} earlier turns not sent"
        assert note in turn.stats()
        bundle = static_bundle(turn)
        assert note in bundle["text/plain"] and note in bundle["text/markdown"]
        restored = Conversation.from_dict(json.loads(conv.to_json()))
        assert restored.turns[-1].omitted == turn.omitted


def test_tool_rounds_fit_too_and_keep_pairs() -> None:
    def f() -> dict[str, int]:
        """A tool."""
        return {"r": 1}

    from nbchat.protocol.events import StreamBuilder

    b = StreamBuilder("gen-tool")
    call = [b.start(), b.tool_call_start("c9", "f", "{}"), b.tool_call_end(), *b.end("TOOL_CALL")]
    with V2Server(default=reply("done")) as srv:
        client = Client(base_url=srv.url, api_key="k", max_retries=0)
        conv = Conversation([*TOOL_TURN, *plain_turns(3)])
        srv.push(sse(events_body(call)), reply("f gave 1"))
        turn = conv.send("call f", backend=client, model=MODEL, tools=[f], history_window=1)
        assert turn.complete and turn.omitted == 3
        first, second = (r.json["messages"] for r in srv.requests[-2:])
        assert [m["role"] for m in first] == ["user", "assistant", "user"]
        assert [m["role"] for m in second] == ["user", "assistant", "user", "assistant", "tool"]
        assert second[:2] == first[:2] == plain_turns(3)[-2:]


# -- %%chat ----------------------------------------------------------------------------------------
def test_magic_history_flag_and_setting() -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    with V2Server(default=reply("ok")) as srv:
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "nbchat")
        for line in ("NbChat.backend = 'v2'", f"NbChat.base_url = '{srv.url}'",
                     f"NbChat.model = '{MODEL}'"):  # fmt: skip
            ip.run_line_magic("config", line)
        try:
            for i in range(4):
                ip.run_cell(f"%%chat\nturn {i}").raise_error()
            with capture_output() as cap:
                ip.run_cell("%%chat --history 1\nturn 4").raise_error()
            users = [m["content"] for m in srv.last.json["messages"] if m["role"] == "user"]
            assert users == ["turn 3", "turn 4"]
            assert "3 earlier turns not sent" in cap.stdout + "".join(
                o.data.get("text/plain", "") for o in cap.outputs
            )
            ip.run_line_magic("config", "NbChat.history_window = 2")
            ip.run_cell("%%chat\nturn 5").raise_error()
            users = [m["content"] for m in srv.last.json["messages"] if m["role"] == "user"]
            assert users == ["turn 3", "turn 4", "turn 5"]
            n = len(srv.requests)
            with capture_output() as cap:
                ip.run_cell("%%chat --dry-run --history 0\nturn 6").raise_error()
            assert len(srv.requests) == n  # nothing sent
            shown = cap.stdout + "".join(json.dumps(o.data) for o in cap.outputs)
            assert "turn 5" not in shown and "turn 6" in shown
            assert len(ip.user_ns["chat"].messages) == 12  # the conversation keeps everything
            res = ip.run_cell("%%chat --history -1\nx")
            assert "--history" in str(res.error_in_exec)
        finally:
            ip.run_line_magic("config", "NbChat.history_window = None")
            ip.run_line_magic("unload_ext", "nbchat")
            InteractiveShell.clear_instance()


# -- the embedded engine ---------------------------------------------------------------------------
@pytest.mark.engine
@pytest.mark.timeout(1200)  # 40 prompts of ~350 tokens on a loaded 2-core machine
def test_forty_turns_on_a_small_context_never_fail() -> None:
    from nbchat.backends.local import LocalBackend

    n_ctx, max_tokens = 384, 6
    backend = LocalBackend(n_ctx=n_ctx)
    conv = Conversation(system="Answer in a few words.")
    for i in range(40):
        turn = conv.send(f"Name a fact about the number {i}.", backend=backend,
                         model="smollm2-135m", max_tokens=max_tokens, temperature=0)  # fmt: skip
        assert turn.complete, (i, turn.error)
        tokens = turn.usage["tokens"]
        assert tokens["input_tokens"] + max_tokens <= n_ctx  # the engine's own count
    assert turn.omitted > 0 and len(conv) == 40 and len(conv.messages) == 81
    assert f"{turn.omitted} earlier turns not sent" in static_bundle(turn)["text/plain"]
