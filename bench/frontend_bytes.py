"""Bytes sent to the front end for one reply of N characters: nbchat's TurnView vs naive.

Both run in the same process, on the same reply, through a recording comm (a real
`comm.base_comm.BaseComm` that keeps the comm messages a kernel would publish):

* nbchat: `TurnView` fed token events by its listener, at a given token rate, with its real
  coalescing timer (custom messages carrying HTML patches).
* naive: an `ipywidgets.HTML` whose value is set to the markdown render of the whole reply
  on every token (what `html.value = render(text)` in a loop does).

Counted: the JSON of each comm message's data (what goes over the wire inside the Jupyter
message; the fixed Jupyter envelope per message is reported as a message count). Run:
``python bench/frontend_bytes.py [--repeat 8] [--rates 50,200,inf] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from typing import Any

SAMPLE = """Sure! Here is a short overview of how **gradient descent** works, with an example.

Gradient descent is an iterative optimisation algorithm. At every step it computes the gradient
of the loss with respect to the parameters and moves them a small step the other way. The size
of that step is the *learning rate*: too large and updates overshoot, too small and it crawls.

- The gradient points uphill, so we subtract it.
- SGD estimates the gradient from a mini-batch.
- Momentum and Adam usually converge faster.

```python
def gradient_descent(grad, x0, lr=0.1, steps=100):
    x = float(x0)
    for _ in range(steps):
        x = x - lr * grad(x)
    return x
```

Running this prints a value close to `0`, the minimum of f(x) = x². Émoji too: 😀.

"""


def _recording() -> list[Any]:
    import comm
    from comm.base_comm import BaseComm

    made: list[Any] = []

    class Recording(BaseComm):
        def __init__(self, **kw: Any) -> None:
            self.sent: list[Any] = []
            super().__init__(**kw)

        def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any) -> None:  # fmt: skip
            self.sent.append(data)

    def create(*args: Any, **kw: Any) -> Any:
        c = Recording(**kw)
        made.append(c)
        return c

    comm.create_comm = create
    return made


def _size(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def run_nbchat(text: str, rate: float) -> dict[str, Any]:
    from nbchat.notebook.view import TurnView
    from nbchat.protocol.events import StreamBuilder, usage_dict

    tokens = re.findall(r"\S+\s*|\s+", text)
    view = TurnView("bench", params={})
    comm = view.comm
    comm.sent.clear()  # only what streaming costs, not the widget's comm_open
    b = StreamBuilder()
    listener = view.listener()
    listener.on_start()
    listener.on_event(b.start())
    t0 = time.perf_counter()
    for i, tok in enumerate(tokens):
        for e in b.text(tok):
            listener.on_event(e)
        if math.isfinite(rate):  # pace like a model producing `rate` tokens per second
            target = t0 + (i + 1) / rate
            while time.perf_counter() < target:
                time.sleep(max(0.0, min(0.002, target - time.perf_counter())))
    for e in b.end("COMPLETE", usage_dict(10, len(tokens))):
        listener.on_event(e)
    listener.on_done(None)
    elapsed = time.perf_counter() - t0
    custom = [d for d in comm.sent if (d or {}).get("method") == "custom"]
    other = [d for d in comm.sent if (d or {}).get("method") != "custom"]
    return {
        "tokens": len(tokens),
        "seconds": round(elapsed, 2),
        "bytes": sum(_size(d) for d in custom),
        "messages": len(custom),
        "other_bytes": sum(_size(d) for d in other),
        "html_bytes": len(view.state["tail"].encode())
        + sum(len(h.encode()) for h in view.state["blocks"]),
    }


def run_naive(text: str) -> dict[str, Any]:
    import ipywidgets

    from nbchat.notebook.render import render_markdown

    tokens = re.findall(r"\S+\s*|\s+", text)
    html = ipywidgets.HTML()
    html.comm.sent.clear()
    acc = ""
    for tok in tokens:
        acc += tok
        html.value = render_markdown(acc)
    return {"bytes": sum(_size(d) for d in html.comm.sent), "messages": len(html.comm.sent)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=8, help="copies of the sample reply (N grows)")
    ap.add_argument(
        "--rates", default="30,100,300,inf", help="token rates (tokens/s; inf = no pacing)"
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    _recording()
    text = SAMPLE * args.repeat
    n = len(text.encode())
    naive = run_naive(text)
    rows = []
    n_tokens = len(re.findall(r"\S+\s*|\s+", text))
    print(f"reply: N = {n} bytes ({len(text)} chars), {n_tokens} tokens")
    print(
        f"naive (HTML trait re-sent per token): {naive['bytes']:>10} bytes = {naive['bytes'] / n:7.1f} N, {naive['messages']} messages"
    )
    for r in args.rates.split(","):
        rate = float(r)
        res = run_nbchat(text, rate)
        res["rate"] = r
        res["ratio"] = round(res["bytes"] / n, 3)
        rows.append(res)
        print(
            f"nbchat @ {r:>4} tok/s: {res['bytes']:>8} bytes = {res['ratio']:5.2f} N "
            f"({res['messages']} messages for {res['tokens']} tokens, {res['seconds']} s; "
            f"rendered HTML itself is {res['html_bytes'] / n:.2f} N)"
        )
    out = {"N": n, "naive": naive, "nbchat": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
