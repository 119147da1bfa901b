"""Stream throughput: one long v2 reply (20,000 content-delta events) over loopback.

Three consumers in the same run, against the same server (tests/v2server.py, started in its
own process so it does not compete for this process's GIL):

  nbchat  nbchat.Client.chat_stream: every event dict + the accumulated final response
  sdk     the official cohere SDK: cohere.ClientV2(base_url=...).chat_stream
  floor   bare httpx: iter_lines + json.loads on data lines, no accumulation

Prints events/s per consumer (median of --repeat runs, interleaved) and the ratios.
Goals: nbchat >= 20x sdk and >= 0.8x floor.

    python bench/stream_throughput.py [--events 20000] [--repeat 5] [--chunk-size 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Write a very long story."}]
MODEL = "command-a-03-2025"


_CLIENTS: dict[str, object] = {}


def run_nbchat(url: str) -> tuple[int, float]:
    from nbchat.backends.cohere import Client

    # One Client per server, reused across runs as a notebook session reuses it: its httpx
    # client (and SSL context, ~50 ms to load the CA bundle) is built on the first request,
    # i.e. in the warm-up run, just as the floor builds its httpx.Client before its clock starts.
    client = _CLIENTS.get(url)
    if client is None:
        client = _CLIENTS[url] = Client(api_key="bench-key", base_url=url)
    t0 = time.perf_counter()
    stream = client.chat_stream(model=MODEL, messages=MESSAGES)
    n = 0
    for _event in stream:
        n += 1
    response = stream.response
    dt = time.perf_counter() - t0
    assert response["finish_reason"] == "COMPLETE" and response["message"]["content"][0]["text"]
    return n, dt


def run_sdk(url: str) -> tuple[int, float]:
    import cohere

    client = cohere.ClientV2(api_key="bench-key", base_url=url)
    t0 = time.perf_counter()
    n = 0
    for _event in client.chat_stream(model=MODEL, messages=MESSAGES):
        n += 1
    dt = time.perf_counter() - t0
    return n, dt


def run_floor(url: str) -> tuple[int, float]:
    import httpx

    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    loads = json.loads
    with httpx.Client(timeout=60) as http:
        t0 = time.perf_counter()
        n = 0
        with http.stream("POST", url + "/v2/chat", json=body) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:") and line != "data: [DONE]":
                    loads(line[5:])
                    n += 1
        dt = time.perf_counter() - t0
    return n, dt


CONSUMERS = {"nbchat": run_nbchat, "sdk": run_sdk, "floor": run_floor}


def start_server(events: int, chunk_size: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "v2server.py"),
            "--long",
            str(events),
            "--chunk-size",
            str(chunk_size),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "URL":
        proc.kill()
        raise RuntimeError(f"server did not start: {line}")
    return proc, line[1]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=20000, help="content-delta events in the reply")
    ap.add_argument("--repeat", type=int, default=5, help="runs per consumer (median reported)")
    ap.add_argument("--sdk-repeat", type=int, default=3, help="runs for the (slow) SDK consumer")
    ap.add_argument(
        "--chunk-size", type=int, default=0, help="server HTTP chunk size; 0 = one per event"
    )
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.pop("CO_API_URL", None)
    proc, url = start_server(args.events, args.chunk_size)
    try:
        results: dict[str, list[float]] = {name: [] for name in CONSUMERS}
        counts: dict[str, int] = {}
        for name, fn in CONSUMERS.items():  # warm-up: imports, connection setup, server cache
            counts[name] = fn(url)[0]
        for i in range(args.repeat):
            for name, fn in CONSUMERS.items():
                if name == "sdk" and i >= args.sdk_repeat:
                    continue
                n, dt = fn(url)
                counts[name] = n
                results[name].append(n / dt)
        print(
            f"{args.events} content-delta events per reply ({counts['nbchat']} events in all), loopback, "
            f"chunks: {'one per event' if not args.chunk_size else args.chunk_size}"
        )
        med = {name: statistics.median(v) for name, v in results.items()}
        for name, v in results.items():
            runs = ", ".join(f"{x:,.0f}" for x in v)
            print(f"  {name:7s} median {med[name]:>11,.0f} events/s   runs: {runs}")
        print(f"  nbchat / sdk   = {med['nbchat'] / med['sdk']:.1f}x   (goal >= 20x)")
        print(f"  nbchat / floor = {med['nbchat'] / med['floor']:.2f}x  (goal >= 0.8x)")
    finally:
        proc.terminate()
        proc.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
