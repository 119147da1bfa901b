"""History store cost: per-turn overhead, and reading back a store of 10,000 turns.

Part 1, overhead per turn (goal < 2 ms): `--turns` turns through the real runner (worker
thread + listener, as %%chat runs them) over a backend replaying a recorded Cohere stream (no
network: a turn takes ~0.5 ms, so any cost shows), with history ON (the listener records each
finished turn into a fresh SQLite store, the writer thread commits it) and OFF, in alternating
blocks of 20 turns in the same run. Reported: the median turn time of each and their
difference; the time per turn of whole blocks where an ON block ends with `flush()` (so it
pays for every commit, even those the writer does after the turn returned) and their
difference; the median `record()` call (what the worker thread pays: it commits right there
when the store is free); the time per turn written one at a time and, queued 400 at once, by
the writer thread (group commit).

Part 2, reading (goal < 100 ms): a fresh store filled with `--stored` turns (in conversations of
10 turns, ~600 characters each), then the median of `--reads` runs of: every conversation
(``%chat history --all`` / ``nbchat history``), as a DataFrame, a full-text search for a rare
and a common word (list and DataFrame), and loading one conversation.

``python bench/history.py`` (defaults: 400 turns, 10,000 stored); ``--json out.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nbchat import history, runner  # noqa: E402
from nbchat.conversation import Conversation, Turn  # noqa: E402
from nbchat.protocol.sse import decode_all  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "cohere-wire" / "lc_stream_plain.sse"
if not FIXTURE.is_file():
    FIXTURE = ROOT.parent / "shared" / "fixtures" / "cohere-wire" / "lc_stream_plain.sse"
WORDS = (
    "alpha beta gamma delta notebook kernel model token stream reply question answer value "
    "table chart python pandas matrix vector function result error cancel history search"
).split()


class Replay:
    """A Backend replaying one recorded Cohere stream (no network, no sleeping)."""

    name = "replay"

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def stream(self, request: dict[str, Any], cancel: Any = None) -> Any:
        return iter([dict(e) for e in self.events])

    def models(self) -> list[str]:
        return ["replay"]


class Listener:
    def __init__(self, store: history.Store | None, conv: Conversation, costs: list[float]):
        self.store, self.conv, self.costs = store, conv, costs
        self.done = threading.Event()

    def on_done(self, turn: Any) -> None:
        if self.store is not None:
            t0 = time.perf_counter()
            self.store.record(self.conv, turn)
            self.costs.append(time.perf_counter() - t0)
        self.done.set()


def overhead(turns: int, tmp: Path, block: int = 20) -> dict[str, Any]:
    """Blocks of `block` turns, alternately history OFF and ON; an ON block ends with
    `flush()`, so its time includes every commit of its turns (nothing left in the queue)."""
    events = decode_all(FIXTURE.read_bytes())
    backend = Replay(events)
    store = history.Store(tmp / "overhead.sqlite3")
    store.open()
    turn_times: dict[bool, list[float]] = {True: [], False: []}
    block_times: dict[bool, list[float]] = {True: [], False: []}
    record_costs: list[float] = []
    n_blocks = max(2, 2 * turns // block) + 2  # two warm-up blocks
    for b in range(n_blocks):
        on = b % 2 == 1
        conv = Conversation()  # a new conversation per block: requests stay small and alike
        b0 = time.perf_counter()
        for i in range(block):
            listener = Listener(store if on else None, conv, record_costs)
            t0 = time.perf_counter()
            handle = runner.start_turn(
                conv, backend, f"q{b}.{i}", {"model": "m"}, listener=listener
            )
            handle.wait(30)
            listener.done.wait(30)  # on_done (and so the record() call) has run
            took = time.perf_counter() - t0
            if handle.turn.status != "complete":
                raise RuntimeError(f"turn {b}.{i}: {handle.turn.status} {handle.turn.error}")
            if b >= 2:
                turn_times[on].append(took)
        if on:
            store.flush(60)
        if b >= 2:
            block_times[on].append((time.perf_counter() - b0) / block)
    written = len(history.turn_rows(store.path))
    on, off = statistics.median(turn_times[True]), statistics.median(turn_times[False])
    bon, boff = statistics.median(block_times[True]), statistics.median(block_times[False])
    return {
        "turns_each": len(turn_times[True]),
        "median_turn_ms_history_on": round(on * 1000, 3),
        "median_turn_ms_history_off": round(off * 1000, 3),
        "overhead_ms_per_turn_median": round((on - off) * 1000, 3),
        "per_turn_ms_incl_commits_on": round(bon * 1000, 3),
        "per_turn_ms_incl_commits_off": round(boff * 1000, 3),
        "overhead_ms_per_turn_incl_commits": round((bon - boff) * 1000, 3),
        "median_record_call_ms": round(statistics.median(record_costs) * 1000, 4),
        "commit_ms_per_turn_one_at_a_time": round(_commit_cost(store, 100, 1) * 1000, 3),
        "writer_ms_per_turn_backlogged_group_commit": round(
            _commit_cost(store, 400, 400) * 1000, 3
        ),
        "turns_written": written,
        "goal_ms": 2.0,
    }


def _commit_cost(store: history.Store, n: int, batch: int) -> float:
    """Writer time per turn: `n` turns queued `batch` at a time, each batch flushed."""
    conv = Conversation()
    turns = [conv.add_turn(_fake_turn(random.Random(i), i)) for i in range(n)]
    t0 = time.perf_counter()
    for i, t in enumerate(turns):
        store.record(conv, t)
        if (i + 1) % batch == 0:
            store.flush(60)
    store.flush(60)
    return (time.perf_counter() - t0) / n


def _fake_turn(rng: random.Random, i: int) -> Turn:
    prompt = " ".join(rng.choice(WORDS) for _ in range(12)) + f" #{i}"
    reply = " ".join(rng.choice(WORDS) for _ in range(80))
    return Turn(
        [{"role": "user", "content": prompt}],
        [{"role": "assistant", "content": [{"type": "text", "text": reply}]}],
        params={"model": "command-a-03-2025", "temperature": 0.3},
        finish_reason="COMPLETE",
        usage={"tokens": {"input_tokens": 20, "output_tokens": 100}},
        timings={"ttft": 0.1, "total": 1.0, "started_at": time.time()},
        backend="cohere",
    )


def reading(stored: int, reads: int, tmp: Path) -> dict[str, Any]:
    path = tmp / "read.sqlite3"
    store = history.Store(path)
    rng = random.Random(7)
    t0 = time.perf_counter()
    conv = Conversation()
    for i in range(stored):
        if i % 10 == 0:
            conv = Conversation()
        turn = conv.add_turn(_fake_turn(rng, i))
        if i == stored // 2:
            turn.input[0]["content"] += " zyzzyva"  # one rare word
        store.record(conv, turn, notebook=f"nb{i % 37}.ipynb")
    store.flush(600)
    fill = time.perf_counter() - t0
    n = len(history.turn_rows(path))
    any_id = history.last_conversation(path)

    def timed(fn: Any) -> float:
        runs = []
        for _ in range(reads):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return round(statistics.median(runs) * 1000, 3)

    out = {
        "stored_turns": n,
        "conversations": len(history.conversations(path)),
        "fill_s": round(fill, 2),
        "list_all_ms": timed(lambda: history.conversations(path)),
        "search_rare_ms": timed(lambda: history.search("zyzzyva", path)),
        "search_common_ms": timed(lambda: history.search("kernel", path)),
        "search_two_words_ms": timed(lambda: history.search("pandas chart", path)),
        "load_conversation_ms": timed(lambda: history.load(any_id, path)),
        "goal_ms": 100.0,
    }
    try:
        import pandas  # noqa: F401
    except ImportError:
        return out
    out["list_all_dataframe_ms"] = timed(lambda: history.conversations_dataframe(path))
    out["search_common_dataframe_ms"] = timed(lambda: history.search_dataframe("kernel", path))
    out["to_dataframe_all_turns_ms"] = timed(lambda: history.to_dataframe(path))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=400, help="turns with history on (and off)")
    ap.add_argument("--stored", type=int, default=10_000, help="turns in the store to read")
    ap.add_argument("--reads", type=int, default=15, help="runs per read measurement")
    ap.add_argument("--json", default=None, help="write the numbers here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {
            "overhead": overhead(args.turns, tmp),
            "read": reading(args.stored, args.reads, tmp),
        }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
