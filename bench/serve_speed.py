"""Tokens/s and time to first token: `nbchat serve` + nbchat's Client over HTTP vs LocalBackend
in-process, on the same prompt, seed and parameters.

    python bench/serve_speed.py [--runs 3] [--max-tokens 128] [--json out.json]

Each run streams one reply both ways (alternating, so machine load affects both alike); the
server runs in this process (uvicorn on 127.0.0.1, port 0, in a thread) over its own
LocalBackend, which shares the engine with the in-process one. Reported: median TTFT (request
to first content-delta), decode tokens/s (output tokens after the first / time after it) and
the HTTP/in-process ratio.
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


def main() -> None:
    import uvicorn

    from nbchat.backends.cohere import Client
    from nbchat.backends.local import LocalBackend
    from nbchat.protocol.request import validate_request
    from nbchat.server import create_app

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
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
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": results}, f, indent=2)


if __name__ == "__main__":
    main()
