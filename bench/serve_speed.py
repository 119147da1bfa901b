"""Tokens/s and time to first token: `nbchat serve` + nbchat's Client over HTTP vs LocalBackend
in-process, on the same prompt, seed and parameters.

    python bench/serve_speed.py [--runs 3] [--max-tokens 128] [--concurrent 4] [--json out.json]

Each run streams one reply both ways (alternating, so machine load affects both alike); the
server runs in this process (uvicorn on 127.0.0.1, port 0, in a thread) over its own
LocalBackend, which shares the engine with the in-process one. Reported: median TTFT (request
to first content-delta), decode tokens/s (output tokens after the first / time after it) and
the HTTP/in-process ratio.

Then `--concurrent N` streams at once through `nbchat serve`: aggregate tokens/s (all output
tokens / wall time) vs one stream, on a server whose engine batches N sequences and on one whose
engine runs one sequence at a time (what it did before batching), alternating in the same run;
also per process CPU second (the machine is shared: wall time depends on others' load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

PROMPT = "Write a short story about a lighthouse keeper and a storm."


def measure(events: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    first = None
    n_delta = 0
    out_tokens = 0
    for event in events:
        if event["type"] == "content-delta":
            n_delta += 1
            if first is None:
                first = time.perf_counter()
        elif event["type"] == "message-end":
            out_tokens = int(event["delta"]["usage"]["tokens"]["output_tokens"])
    end = time.perf_counter()
    first = first or end
    decode = max(end - first, 1e-9)
    return {
        "ttft_s": first - t0,
        "total_s": end - t0,
        "output_tokens": out_tokens,
        "deltas": n_delta,
        "decode_tok_s": max(out_tokens - 1, 0) / decode,
        "overall_tok_s": out_tokens / (end - t0),
    }


def serve(backend: Any) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    from nbchat.server import create_app

    config = uvicorn.Config(
        create_app(backend), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def concurrent(url: str, requests: list[dict[str, Any]]) -> dict[str, float]:
    """Stream `requests` at once through the server at `url`; aggregate tokens/s."""
    from nbchat.backends.cohere import Client

    results: list[dict[str, float]] = [{} for _ in requests]

    def go(i: int) -> None:
        client = Client(api_key="x", base_url=url, max_retries=0)
        results[i] = measure(client.stream(requests[i]))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(requests))]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    total = sum(r["output_tokens"] for r in results)
    return {"tok_s": total / wall, "tok_per_cpu_s": total / cpu, "tokens": total}


def concurrency_bench(n: int, runs: int, max_tokens: int) -> dict[str, Any]:
    from nbchat.backends.local import LocalBackend
    from nbchat.protocol.request import validate_request

    def request(i: int) -> dict[str, Any]:
        return validate_request(
            {
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": max_tokens,
                "seed": 42 + i,
                "temperature": 0.7,
            }
        )

    servers = {
        "batching": serve(LocalBackend(slots=n)),
        "one_at_a_time": serve(LocalBackend(slots=1)),
    }
    rows: dict[str, dict[str, list[float]]] = {
        k: {"one": [], "many": [], "one_cpu": [], "many_cpu": []} for k in servers
    }
    try:
        for _, _, url in servers.values():
            concurrent(url, [request(0)])  # warm-up: load the model
        for _ in range(runs):
            for name, (_, _, url) in servers.items():
                one = concurrent(url, [request(0)])
                many = concurrent(url, [request(i) for i in range(n)])
                rows[name]["one"].append(one["tok_s"])
                rows[name]["many"].append(many["tok_s"])
                rows[name]["one_cpu"].append(one["tok_per_cpu_s"])
                rows[name]["many_cpu"].append(many["tok_per_cpu_s"])
    finally:
        for server, thread, _ in servers.values():
            server.should_exit = True
            thread.join(10)
    out: dict[str, Any] = {}
    print(f"{n} concurrent streams through nbchat serve vs one (medians of {runs}):")
    for name, r in rows.items():
        m = {k: statistics.median(v) for k, v in r.items()}
        m["ratio"] = m["many"] / m["one"]
        m["ratio_cpu"] = m["many_cpu"] / m["one_cpu"]
        out[name] = m
        print(
            f"  {name:14s} 1 stream {m['one']:6.1f} tok/s, {n} streams {m['many']:6.1f} tok/s "
            f"aggregate -> {m['ratio']:.2f}x (goal >= 2x); per CPU second {m['ratio_cpu']:.2f}x"
        )
    import os

    out["load_average"] = os.getloadavg()
    print(f"  load average {out['load_average'][0]:.1f} on {os.cpu_count()} cores")
    return out


def main() -> None:
    import uvicorn

    from nbchat.backends.cohere import Client
    from nbchat.backends.local import LocalBackend
    from nbchat.protocol.request import validate_request
    from nbchat.server import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrent", type=int, default=4, help="streams at once (0: skip)")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args()

    request = validate_request(
        {
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": args.max_tokens,
            "seed": 42,
            "temperature": 0.3,
        }
    )
    local = LocalBackend()
    config = uvicorn.Config(
        create_app(LocalBackend()), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    client = Client(api_key="x", base_url=url, max_retries=0)
    try:
        list(local.stream(request))  # warm-up: load the model, fill caches
        results: dict[str, list[dict[str, float]]] = {"in_process": [], "http": []}
        for _ in range(args.runs):
            results["in_process"].append(measure(local.stream(request)))
            results["http"].append(measure(client.stream(request)))
    finally:
        server.should_exit = True
        thread.join(10)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    summary = {
        kind: {
            k: med(kind, k) for k in ("ttft_s", "decode_tok_s", "overall_tok_s", "output_tokens")
        }
        for kind in results
    }
    summary["ratio_http_vs_in_process"] = {
        "decode_tok_s": summary["http"]["decode_tok_s"] / summary["in_process"]["decode_tok_s"],
        "overall_tok_s": summary["http"]["overall_tok_s"] / summary["in_process"]["overall_tok_s"],
        "ttft_extra_ms": 1000 * (summary["http"]["ttft_s"] - summary["in_process"]["ttft_s"]),
    }
    same = all(
        a["output_tokens"] == b["output_tokens"]
        for a, b in zip(results["in_process"], results["http"], strict=True)
    )
    summary["same_output_tokens"] = same
    print(f"runs={args.runs} max_tokens={args.max_tokens} (medians)")
    for kind in ("in_process", "http"):
        s = summary[kind]
        print(
            f"  {kind:10s} TTFT {1000 * s['ttft_s']:7.1f} ms  decode {s['decode_tok_s']:6.1f} tok/s"
            f"  overall {s['overall_tok_s']:6.1f} tok/s  ({s['output_tokens']:.0f} tokens)"
        )
    r = summary["ratio_http_vs_in_process"]
    print(
        f"  http/in-process: decode {r['decode_tok_s']:.3f}x, overall {r['overall_tok_s']:.3f}x,"
        f" TTFT +{r['ttft_extra_ms']:.1f} ms; same token counts: {same}"
    )
    if args.concurrent:
        summary["concurrent"] = concurrency_bench(args.concurrent, args.runs, args.max_tokens)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": results}, f, indent=2)


if __name__ == "__main__":
    main()
