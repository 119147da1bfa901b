"""Notebook responsiveness: `%load_ext nbchat` import time, and the latency of another cell
while a %%chat reply streams.

1. Import time (goal < 0.3 s): fresh interpreters run ``import nbchat`` +
   ``%load_ext nbchat`` in an InteractiveShell; the median and max over --runs, and which heavy
   modules got imported (must be none).
2. Cell latency while streaming (goal < 50 ms): a real kernel (jupyter_client). The %%chat cell
   is sent like JupyterLab sends it (``allow_stdin: true`` -> live mode: the reply streams from
   a worker thread into the widget); meanwhile trivial cells (``x = 1``) are sent every 50 ms
   and their execute_request -> execute_reply round trip is timed. A baseline with nothing
   streaming is measured first. The reply must still be streaming after the last sample.

Backends: ``--backend local`` (the embedded model, real token rate) or ``--backend v2`` (a v2
server in its own process trickling --tokens deltas every --delay s).

    python bench/notebook_latency.py [--backend local|v2] [--runs 7] [--samples 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["pandas", "llama_cpp", "httpx", "ipywidgets", "anywidget", "starlette", "markdown_it"]


def import_time(runs: int) -> dict[str, Any]:
    code = textwrap.dedent(
        f"""
        import sys, time, json
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        t0 = time.perf_counter()
        import nbchat
        ip.run_line_magic("load_ext", "nbchat")
        dt = time.perf_counter() - t0
        print(json.dumps({{"s": dt, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    times, heavy = [], set()
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(r["s"])
        heavy.update(r["heavy"])
    return {
        "median_s": round(statistics.median(times), 4),
        "max_s": round(max(times), 4),
        "runs": runs,
        "heavy_modules_loaded": sorted(heavy),
        "goal_s": 0.3,
    }


def _execute(
    kc: Any, code: str, allow_stdin: bool = False, timeout: float = 600
) -> tuple[dict, float]:
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": allow_stdin,
        "stop_on_error": True,
    }
    msg = kc.session.msg("execute_request", content)
    t0 = time.perf_counter()
    kc.shell_channel.send(msg)
    while True:
        rep = kc.get_shell_msg(timeout=timeout)
        if rep["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return rep["content"], time.perf_counter() - t0


def _stdout_of(kc: Any, code: str) -> str:
    msg_id = kc.execute(code)
    out = []
    while True:
        m = kc.get_iopub_msg(timeout=120)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "stream":
            out.append(m["content"]["text"])
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return "".join(out)


def _stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {
        "median_ms": round(statistics.median(s), 2),
        "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 2),
        "max_ms": round(s[-1], 2),
    }


def cell_latency(backend: str, samples: int, tokens: int, delay: float) -> dict[str, Any]:
    from jupyter_client.manager import start_new_kernel

    server = None
    env = {k: v for k, v in os.environ.items() if k not in ("CO_API_KEY", "COHERE_API_KEY")}
    setup = "%load_ext nbchat\n"
    if backend == "v2":
        script = (
            "import sys, time; sys.path.insert(0, 'tests')\n"
            "from v2server import V2Server, long_reply\n"
            f"srv = V2Server(default=long_reply({tokens}, delay={delay}))\n"
            "print('URL', srv.url, flush=True)\ntime.sleep(3600)\n"
        )
        server = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        url = server.stdout.readline().split()[1]
        setup += f"%config NbChat.backend = 'v2'\n%config NbChat.base_url = '{url}'\n%config NbChat.api_key = 'bench'\n"
        prompt = "%%chat\nStream a long reply."
    else:
        setup += "%config NbChat.backend = 'local'\n"
        prompt = (
            f"%%chat --max-tokens {tokens} -t 0.8\nWrite a long story about a lighthouse keeper."
        )
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(ROOT))
    try:
        assert _execute(kc, setup)[0]["status"] == "ok"
        # warm-up: imports, model load, first widget
        _execute(
            kc, "%%chat --max-tokens 4\nhi" if backend == "local" else prompt, allow_stdin=True
        )
        _stdout_of(kc, "chat.cancel(); chat.wait(); print('ok')")
        base = []
        for _ in range(samples):
            base.append(_execute(kc, "x = 1")[1] * 1000)
            time.sleep(0.05)
        reply, returned = _execute(kc, prompt, allow_stdin=True)
        assert reply["status"] == "ok", reply
        time.sleep(0.5)  # let the stream get going
        during = []
        for _ in range(samples):
            during.append(_execute(kc, "x = 1")[1] * 1000)
            time.sleep(0.05)
        still = _stdout_of(kc, "print(chat.running, len(chat.turns[-1].text))").split()
        _stdout_of(kc, "chat.cancel(); chat.wait(); print(chat.turns[-1].status)")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        if server is not None:
            server.kill()
            server.wait()
    return {
        "backend": backend,
        "chat_cell_returned_ms": round(returned * 1000, 1),
        "baseline": _stats(base),
        "while_streaming": _stats(during),
        "samples": samples,
        "still_streaming_after_samples": still[0] == "True",
        "chars_streamed_by_then": int(still[1]),
        "goal_ms": 50,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["local", "v2"], default="local")
    ap.add_argument("--runs", type=int, default=7, help="fresh interpreters for the import time")
    ap.add_argument("--samples", type=int, default=30, help="trivial cells timed per phase")
    ap.add_argument("--tokens", type=int, default=400, help="reply length (max_tokens / deltas)")
    ap.add_argument("--delay", type=float, default=0.02, help="v2: seconds between deltas")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    result = {
        "import": import_time(args.runs),
        "cell_latency": cell_latency(args.backend, args.samples, args.tokens, args.delay),
        "load_average": os.getloadavg()[0],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
