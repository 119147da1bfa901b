"""``%%chat --context df``: describing a 1,000,000-row DataFrame vs ``str(df)`` / ``df.to_string()``.

Reports, in one run: the time of `nbchat.notebook.context.describe` (median of a few runs), its
length against the cap, and the same for ``str(df)`` (pandas' truncated repr) and a full
``df.to_string()`` of the first 100,000 rows (what an unbounded interpolation would send).

    python bench/context_df.py [--rows 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from nbchat.notebook.context import CAP, describe


def timed(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n = a.rows
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "value": rng.random(n),
            "group": rng.choice(["a", "b", "c"], n),
            "when": pd.date_range("2020-01-01", periods=n, freq="s"),
            "count": rng.integers(0, 100, n),
        }
    )
    t_desc, text = timed(lambda: describe("df", df), a.runs)
    t_str, s = timed(lambda: str(df), a.runs)
    t_full, full = timed(lambda: df.head(100_000).to_string(), 1)
    print(f"rows {n:,} x {df.shape[1]} columns")
    print(f"describe (--context): {t_desc * 1000:7.1f} ms  {len(text):>10,} chars (cap {CAP:,})")
    print(f"str(df):              {t_str * 1000:7.1f} ms  {len(s):>10,} chars (no dtypes/stats)")
    print(f"to_string 100k rows:  {t_full * 1000:7.1f} ms  {len(full):>10,} chars")
    print(f"describe / str(df) time ratio: {t_desc / t_str:.2f}")


if __name__ == "__main__":
    main()
