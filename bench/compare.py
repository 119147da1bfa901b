"""Side-by-side variants on the embedded engine: one batch vs one sequence at a time.

    python bench/compare.py [--runs 2] [--max-tokens 128] [--variants 4] [--json out.json]

In one run, on the same machine load (alternating):

1. 4 variants (temperatures 0.2..1.0, fixed seeds) x 128 tokens, started together, on the
   batching engine (4 slots) and on a one-slot engine (what the engine did before: one
   sequence at a time): wall time of the 4 vs one variant alone. Goal <= 1.6x.
2. llama.cpp's own batched throughput for this model with the raw batch API (`batch.BatchContext`,
   greedy, no sampling or events): aggregate tokens/s of 4 sequences vs 1, wall and CPU time.
   This is the ceiling the engine can reach on this machine.
3. Temperature 0: how often a reply decoded in a batch (with 3 other requests) equals the same
   request decoded alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain how a steam engine works, step by step.",
    "Describe a walk through a busy market in the morning.",
    "Write a letter to a friend about a trip to the mountains.",
    "List ten ideas for a science fair project and explain each.",
    "Tell the history of the bicycle.",
    "Write a recipe for vegetable soup with detailed steps.",
    "Describe the life cycle of a butterfly.",
]


def req(prompt: str, max_tokens: int, **params: Any) -> dict[str, Any]:
    return {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        **params,
    }


def run_all(backend: Any, requests: list[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
    """Stream `requests` concurrently (one thread each); wall time and the responses.
    The process CPU time it took is left in ``run_all.cpu``."""
    from nbchat.backends.base import collect

    out: list[Any] = [None] * len(requests)

    def go(i: int) -> None:
        out[i] = collect(iter(list(backend.stream(requests[i]))))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(requests))]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_all.cpu = time.process_time() - c0  # type: ignore[attr-defined]
    return time.perf_counter() - t0, out


def tokens(responses: list[dict[str, Any]]) -> int:
    return sum(int(r["usage"]["tokens"]["output_tokens"]) for r in responses)


def text(resp: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in resp["message"].get("content", []))


def raw_batched(ctx: Any, n: int, steps: int) -> dict[str, float]:
    """Greedy decode of `n` sequences x `steps` tokens with llama.cpp's batch API only."""
    import numpy as np

    prompt = ctx.tokenize(
        "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    toks = []
    for s in range(n):
        ctx.cached[s] = []
        at = ctx.start(s, prompt)
        while at < len(prompt):
            at = ctx.prefill_chunk(s, prompt, at)
        toks.append(int(np.argmax(ctx.logits(-1))))
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(steps):
        ctx.step([(toks[s], len(prompt) + k, s) for s in range(n)])
        toks = [int(np.argmax(ctx.logits(s))) for s in range(n)]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for s in range(n):
        ctx.release(s)
    return {"tok_s": n * steps / wall, "tok_per_cpu_s": n * steps / cpu}


def main() -> None:
    from nbchat.backends.local import LocalBackend

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    n, mt = args.variants, args.max_tokens

    batching = LocalBackend(slots=n)
    serial = LocalBackend(slots=1)  # one sequence at a time: the engine before batching
    temps = [round(0.2 + 0.8 * i / max(n - 1, 1), 2) for i in range(n)]
    variants = [req(PROMPTS[0], mt, temperature=t, seed=7 + i) for i, t in enumerate(temps)]
    for b in (batching, serial):
        run_all(b, [req("Hi", 2)])  # warm-up: load the model

    keys = ("batch_ratio", "serial_ratio", "batch_cpu_ratio", "serial_cpu_ratio")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    detail = []
    for _ in range(args.runs):
        for name, backend in (("batch", batching), ("serial", serial)):
            alone_wall, alone = run_all(backend, variants[:1])
            alone_cpu = run_all.cpu  # type: ignore[attr-defined]
            wall, many = run_all(backend, variants)
            cpu = run_all.cpu  # type: ignore[attr-defined]
            # normalise by tokens: a variant may end before max_tokens (COMPLETE)
            per_tok = n / max(tokens(many), 1) * max(tokens(alone), 1)
            ratio = wall / alone_wall * per_tok
            cpu_ratio = cpu / alone_cpu * per_tok
            rows[f"{name}_ratio"].append(ratio)
            rows[f"{name}_cpu_ratio"].append(cpu_ratio)
            detail.append(
                {
                    "engine": name,
                    "alone_s": round(alone_wall, 3),
                    "alone_tokens": tokens(alone),
                    "variants_s": round(wall, 3),
                    "variants_tokens": tokens(many),
                    "raw_ratio": round(wall / alone_wall, 3),
                    "ratio_per_token": round(ratio, 3),
                    "alone_cpu_s": round(alone_cpu, 3),
                    "variants_cpu_s": round(cpu, 3),
                    "cpu_ratio_per_token": round(cpu_ratio, 3),
                }
            )
            print(
                f"  {name:6s}: 1 alone {alone_wall:6.2f} s ({tokens(alone)} tok) | {n} variants "
                f"{wall:6.2f} s ({tokens(many)} tok) -> {wall / alone_wall:.2f}x wall "
                f"({ratio:.2f}x per token); CPU {alone_cpu:.2f} s vs {cpu:.2f} s -> "
                f"{cpu_ratio:.2f}x per token",
                flush=True,
            )

    ctx = batching.engine().model.ctx()
    raw1, rawn = [], []
    for _ in range(args.runs):
        raw1.append(raw_batched(ctx, 1, mt))
        rawn.append(raw_batched(ctx, n, mt))
    raw = {
        "one_tok_s": statistics.median(r["tok_s"] for r in raw1),
        f"{n}_tok_s": statistics.median(r["tok_s"] for r in rawn),
        "one_tok_per_cpu_s": statistics.median(r["tok_per_cpu_s"] for r in raw1),
        f"{n}_tok_per_cpu_s": statistics.median(r["tok_per_cpu_s"] for r in rawn),
    }
    raw["aggregate_ratio_wall"] = raw[f"{n}_tok_s"] / raw["one_tok_s"]
    raw["aggregate_ratio_cpu"] = raw[f"{n}_tok_per_cpu_s"] / raw["one_tok_per_cpu_s"]

    # temperature 0: batched (with n-1 others) vs alone
    equal, total = 0, 0
    diffs = []
    for i in range(0, len(PROMPTS), n):
        group = [req(p, 48, temperature=0) for p in PROMPTS[i : i + n]]
        _, together = run_all(batching, group)
        for r, got in zip(group, together, strict=True):
            _, (solo,) = run_all(batching, [r])
            total += 1
            same = text(solo) == text(got)
            equal += same
            if not same:
                diffs.append({"prompt": r["messages"][0]["content"], "alone": text(solo)})

    summary = {
        "variants": n,
        "max_tokens": mt,
        "wall_ratio_batching_median": statistics.median(rows["batch_ratio"]),
        "wall_ratio_serial_median": statistics.median(rows["serial_ratio"]),
        "cpu_ratio_batching_median": statistics.median(rows["batch_cpu_ratio"]),
        "cpu_ratio_serial_median": statistics.median(rows["serial_cpu_ratio"]),
        "load_average": __import__("os").getloadavg(),
        "llama_cpp_raw": raw,
        "temperature0_equal": f"{equal}/{total}",
        "max_batch": batching.engine().max_batch,
    }
    print(f"{n} variants x {mt} tokens vs one alone (per-token wall ratio, median of {args.runs}):")
    print(
        f"  batching engine ({n} slots): {summary['wall_ratio_batching_median']:.2f}x  (goal <= 1.6x)"
    )
    print(f"  one at a time (before)    : {summary['wall_ratio_serial_median']:.2f}x")
    print(
        f"  same, in process CPU time: batching {summary['cpu_ratio_batching_median']:.2f}x, "
        f"one at a time {summary['cpu_ratio_serial_median']:.2f}x "
        f"(load average {summary['load_average'][0]:.1f} on {__import__('os').cpu_count()} cores)"
    )
    print(
        f"llama.cpp raw batch API, greedy, 1 vs {n} sequences: {raw['one_tok_s']:.1f} vs "
        f"{raw[f'{n}_tok_s']:.1f} tok/s = {raw['aggregate_ratio_wall']:.2f}x aggregate (wall); "
        f"per CPU second {raw['aggregate_ratio_cpu']:.2f}x"
    )
    print(f"temperature 0, batched == alone: {equal}/{total}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": detail, "differing": diffs}, f, indent=2)


if __name__ == "__main__":
    main()
