"""Short CI variant of bench/soak.py: 20 streamed turns in one conversation plus 2 concurrent
conversations on the embedded model. Threads must be flat, memory growth bounded, and every
turn recorded exactly once. (The full 200-turn run: ``python bench/soak.py``.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from soak import run_soak  # noqa: E402


@pytest.mark.engine
def test_soak_short() -> None:
    res = run_soak(turns=20, concurrent=2, conc_turns=5, max_tokens=2)
    print(res)
    # threads: never more than before (nothing per turn; leftovers of earlier tests in the
    # same process, e.g. server handler threads, may end meanwhile)
    assert res["after_single"]["threads"] <= res["start"]["threads"], res
    assert res["end"]["threads"] <= res["start"]["threads"], res
    assert res["stray_threads"] == []
    # memory: 30 more turns must not grow RSS by more than a few MB (no per-turn leak of
    # engine state, accumulators or threads)
    assert res["end"]["rss_mb"] - res["start"]["rss_mb"] < 40, res
    # the long conversation does not get slower per turn (the KV prefix is reused)
    lat = res["single_latency_s"]
    assert lat["last10_mean"] < 3 * lat["first10_mean"] + 0.5, lat
