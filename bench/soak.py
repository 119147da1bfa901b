"""Soak: many streamed turns on the embedded model; threads and memory must stay flat.

Phase 1: `--turns` streamed turns (runner worker thread + listener, like %%chat) in ONE
conversation, tiny prompts and `--max-tokens` so the history fits the context (the engine
reuses the KV cache for the shared prefix). Phase 2: `--concurrent` conversations streaming
at the same time from their own threads, `--conc-turns` turns each. Every turn must be
recorded exactly once (complete, its messages in `.messages` once, in order).

Reported: thread count and RSS (MB) before/after each phase, RSS growth per 100 turns after
a warm-up, turn latency percentiles. ``python bench/soak.py`` (defaults: 200 turns, 4 x 25);
``--json out.json`` writes the numbers. tests/e2e/test_soak.py runs a short variant.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbchat import runner  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402

MODEL = "smollm2-135m"
WORDS = ["Hi.", "Ok.", "Yes?", "Go.", "Next.", "More.", "Why?", "So."]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def snapshot() -> dict[str, float]:
    gc.collect()
    return {"threads": threading.active_count(), "rss_mb": round(rss_mb(), 1)}


class Counter:
    """A listener like the notebook's: counts streamed events, checks on_done runs once."""

    def __init__(self) -> None:
        self.events = 0
        self.done = 0

    def on_event(self, event: dict[str, Any]) -> None:
        self.events += 1

    def on_done(self, turn: Any) -> None:
        self.done += 1


def one_turn(conv: Conversation, backend: Any, i: int, max_tokens: int) -> float:
    listener = Counter()
    t0 = time.perf_counter()
    handle = runner.start_turn(
        conv,
        backend,
        WORDS[i % len(WORDS)],
        {"model": MODEL, "max_tokens": max_tokens, "temperature": 0.0, "seed": i},
        listener=listener,
    )
    handle.wait(120)
    took = time.perf_counter() - t0
    turn = handle.turn
    if turn.status != "complete":
        raise RuntimeError(f"turn {i} ended {turn.status}: {turn.error}")
    if listener.events < 3 or listener.done != 1:
        raise RuntimeError(f"turn {i}: {listener.events} events, on_done x{listener.done}")
    if handle._thread is not None:
        handle._thread.join(5)
    return took


def check_recorded_once(conv: Conversation, n: int) -> None:
    turns = conv.turns
    assert len(turns) == n, (len(turns), n)
    assert all(t.status == "complete" for t in turns)
    msgs = conv.messages
    assert len(msgs) == 2 * n, (len(msgs), 2 * n)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * n
    ids = [t.id for t in turns]
    assert len(set(ids)) == n


def run_soak(
    turns: int = 200,
    concurrent: int = 4,
    conc_turns: int = 25,
    max_tokens: int = 2,
    n_ctx: int = 4096,
    progress: bool = False,
) -> dict[str, Any]:
    from nbchat.backends.local import LocalBackend

    backend = LocalBackend(n_ctx=n_ctx)
    warm = Conversation()
    one_turn(warm, backend, 0, max_tokens)  # model loaded, engine thread started
    out: dict[str, Any] = {"turns": turns, "concurrent": concurrent, "conc_turns": conc_turns}
    out["start"] = snapshot()

    # phase 1: one long conversation
    conv = Conversation()
    latencies: list[float] = []
    marks: list[tuple[int, float]] = []
    for i in range(turns):
        latencies.append(one_turn(conv, backend, i, max_tokens))
        if i + 1 in (min(20, turns), turns) or (i + 1) % 50 == 0:
            marks.append((i + 1, rss_mb()))
            if progress:
                print(
                    f"  turn {i + 1}: rss {marks[-1][1]:.1f} MB, threads {threading.active_count()}"
                )
    check_recorded_once(conv, turns)
    out["after_single"] = snapshot()
    out["single_latency_s"] = {
        "p50": round(statistics.median(latencies), 4),
        "max": round(max(latencies), 4),
        "first10_mean": round(statistics.mean(latencies[:10]), 4),
        "last10_mean": round(statistics.mean(latencies[-10:]), 4),
    }
    warm_mark = marks[0]
    span = max(1, marks[-1][0] - warm_mark[0])
    out["rss_growth_mb_per_100_turns"] = round((marks[-1][1] - warm_mark[1]) * 100 / span, 2)
    out["rss_marks"] = marks

    # phase 2: concurrent conversations, each driven from its own thread
    convs = [Conversation() for _ in range(concurrent)]
    errors: list[BaseException] = []

    def drive(c: Conversation, k: int) -> None:
        try:
            for i in range(conc_turns):
                one_turn(c, backend, k * 1000 + i, max_tokens)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(c, k)) for k, c in enumerate(convs)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    out["concurrent_wall_s"] = round(time.perf_counter() - t0, 2)
    if errors:
        raise errors[0]
    for c in convs:
        check_recorded_once(c, conc_turns)
    time.sleep(0.2)
    out["end"] = snapshot()
    out["stray_threads"] = [
        t.name for t in threading.enumerate() if t.name.startswith("nbchat-turn-")
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--conc-turns", type=int, default=25)
    ap.add_argument("--max-tokens", type=int, default=2)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run_soak(args.turns, args.concurrent, args.conc_turns, args.max_tokens, progress=True)
    res["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
