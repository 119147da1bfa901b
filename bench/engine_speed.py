"""Embedded engine speed: nbchat's LocalBackend vs raw llama-cpp-python, concurrency, priority.

    python bench/engine_speed.py [--rounds 3] [--tokens 64] [--threads N]

1. Same prompt tokens, same sampling parameters and seed, alternating runs (so machine load
   hits both alike): time to first token and decode tokens/s; ratio nbchat / raw (goal >= 0.97).
   Each round uses a new prompt, so TTFT includes prompt evaluation (no KV-cache hit).
2. Several concurrent streams through one engine: aggregate tokens/s vs one stream (one model,
   one scheduler thread: requests run one after another, so the aggregate should match).
3. Priority: requests queued behind a busy one start in priority order.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nbchat.backends.local import REPEAT_PENALTY, LocalBackend  # noqa: E402
from nbchat.backends.prompting import render_chatml, to_chat_messages  # noqa: E402

PARAMS = {"temperature": 0.3, "p": 0.75, "k": 0, "seed": 1234}


def request(i: int, n: int) -> dict:
    return {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": f"Story {i}: write a long story about a cat."}],
        "max_tokens": n,
        "safety_mode": "OFF",
        **PARAMS,
    }


def time_stream(chunks, is_token) -> tuple[float, float, int, str]:
    """(ttft, decode tok/s, tokens, text) for an iterator of pieces."""
    t0 = time.perf_counter()
    first = last = None
    n = 0
    text = []
    for piece in chunks:
        tok = is_token(piece)
        if tok is None:
            continue
        now = time.perf_counter()
        first = first or now
        last = now
        n += 1
        text.append(tok)
    rate = (n - 1) / (last - first) if n > 1 and last > first else float("nan")
    return (first - t0 if first else float("nan")), rate, n, "".join(text)


def nbchat_run(backend: LocalBackend, req: dict):
    def piece(ev):
        if ev["type"] == "content-delta":
            return ev["delta"]["message"]["content"]["text"]
        return None

    return time_stream(backend.stream(req), piece)


def raw_run(llm, tokens: list[int], n: int):
    chunks = llm.create_completion(
        tokens,
        max_tokens=n,
        temperature=PARAMS["temperature"],
        top_p=PARAMS["p"],
        top_k=PARAMS["k"],
        min_p=0.0,
        typical_p=1.0,
        repeat_penalty=REPEAT_PENALTY,
        seed=PARAMS["seed"],
        stream=True,
    )
    # the last chunk only carries finish_reason (empty text): not a token
    return time_stream(
        chunks, lambda c: None if c["choices"][0]["finish_reason"] else c["choices"][0]["text"]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--streams", type=int, default=3)
    args = ap.parse_args()

    import llama_cpp

    backend = LocalBackend(n_threads=args.threads)
    engine = backend.engine()
    raw = llama_cpp.Llama(
        model_path=backend.model_path,
        n_ctx=backend.n_ctx,
        n_threads=backend.n_threads,
        n_threads_batch=backend.n_threads,
        flash_attn=True,
        verbose=False,
    )
    n = args.tokens
    # warm up both (model load, first allocations)
    nbchat_run(backend, request(-1, 4))
    raw_run(raw, engine.tokenize(render_chatml(to_chat_messages(request(-2, 4)))), 4)

    rows = []
    for r in range(args.rounds):
        req = request(r, n)
        tokens = engine.tokenize(render_chatml(to_chat_messages(req)))
        order = [
            ("nbchat", lambda req=req: nbchat_run(backend, req)),
            ("raw", lambda tokens=tokens: raw_run(raw, tokens, n)),
        ]
        if r % 2:
            order.reverse()
        res = {name: fn() for name, fn in order}
        rows.append(res)
        same = res["nbchat"][3] == res["raw"][3]
        print(
            f"round {r}: nbchat ttft {res['nbchat'][0] * 1000:.0f} ms {res['nbchat'][1]:.1f} tok/s"
            f" ({res['nbchat'][2]} tok) | raw ttft {res['raw'][0] * 1000:.0f} ms"
            f" {res['raw'][1]:.1f} tok/s ({res['raw'][2]} tok) | same text: {same}",
            flush=True,
        )

    med = {
        k: (statistics.median(r[k][0] for r in rows), statistics.median(r[k][1] for r in rows))
        for k in ("nbchat", "raw")
    }

    # concurrency: several streams at once vs one stream
    one = nbchat_run(backend, request(100, n))
    results: list[tuple] = []
    t0 = time.perf_counter()
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(nbchat_run(backend, request(200 + i, n)))
        )
        for i in range(args.streams)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = sum(r[2] for r in results)
    one_wall_rate = one[2] / (one[0] + one[2] / one[1]) if one[1] == one[1] else float("nan")

    # priority: a busy request, then waiters submitted in order p5, p1, p0 -> expect p0, p1, p5
    starts: list[str] = []

    def consume(key: str, req: dict) -> None:
        for ev in backend.stream(req):
            if ev["type"] == "message-start":
                starts.append(key)

    busy = threading.Thread(target=consume, args=("busy", request(300, 32)))
    busy.start()
    while not starts:
        time.sleep(0.005)
    waiters = []
    for key, prio in (("p5", 5), ("p1", 1), ("p0", 0)):
        w = threading.Thread(target=consume, args=(key, {**request(301, 2), "priority": prio}))
        w.start()
        waiters.append(w)
        time.sleep(0.05)
    for w in [busy, *waiters]:
        w.join()

    print()
    print(
        f"threads={backend.n_threads}  tokens/request={n}  rounds={args.rounds}  load={os.getloadavg()[0]:.2f}"
    )
    print(f"{'metric':40s} {'nbchat':>10s} {'raw':>10s} {'ratio':>8s}")
    print(
        f"{'time to first token (ms, median)':40s} {med['nbchat'][0] * 1000:10.1f} {med['raw'][0] * 1000:10.1f} {med['raw'][0] / med['nbchat'][0]:8.2f}"
    )
    print(
        f"{'decode tokens/s (median)':40s} {med['nbchat'][1]:10.1f} {med['raw'][1]:10.1f} {med['nbchat'][1] / med['raw'][1]:8.2f}"
    )
    print(f"{'one stream, wall tokens/s':40s} {one_wall_rate:10.1f}")
    print(
        f"{f'{args.streams} concurrent streams, aggregate tok/s':40s} {total / wall:10.1f} {'':>10s} {total / wall / one_wall_rate:8.2f}"
    )
    print(f"{'priority start order (want busy,p0,p1,p5)':40s} {','.join(starts)}")


if __name__ == "__main__":
    main()
