"""Hosted turns: ten streamed turns per client over TLS and a 40 ms round trip.

What users of Cohere's hosted API feel, turn after turn. In one run:

  server  uvicorn over TLS (a self-signed certificate made at run time with `openssl`)
          streaming a real capture (tests/fixtures/cohere-wire/lc_stream_plain.sse), one HTTP
          chunk per event, as Cohere does; its own process
  proxy   asyncio, in front of it: delays each direction by --delay ms (default 20: 40 ms round
          trip) and counts the TCP connections it accepts; its own process
  clients one process per client instance (fresh imports, fresh pools), --turns turns each,
          rounds alternating: nbchat, the official cohere SDK, bare httpx (the floor: one
          keep-alive httpx.Client, stream + iter_lines), nbchat with preconnect(), and with
          --before DIR an older nbchat tree (e.g. `git archive` of main before a change)

Each client is created, then waits --pause s (the user typing) before turn 1; nbchat+preconnect
calls ``client.preconnect()`` at creation. TTFT = from the call that sends the request to the
first content-delta event. Prints connections per client instance and, per client, the median
TTFT of turn 1 and of turns 2..N, as ratios to the floor and to the SDK.
Goal: 1 connection per client, turns 2..N <= 1.05x the floor.

Turn 1 of plain nbchat includes the lazy import of httpcore (and trio, when installed) and the
SSL context, which the SDK and the floor pay when the client is built, before the clock;
``preconnect()`` (what ``%load_ext nbchat`` does) moves that and TCP+TLS off turn 1.

--h2 serves HTTP/2 only (an asyncio server on the h2 package, which must be importable) and
compares nbchat with ``HTTPBackend.http2 = True`` against httpx with ``http2=True``: on one
kept-alive connection a turn costs one round trip either way, so h2 is off by default.

    python bench/hosted_turns.py [--rounds 3] [--turns 10] [--delay 20] [--before DIR] [--h2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "tests" / "fixtures" / "cohere-wire" / "lc_stream_plain.sse"
MODEL = "command-r"
MESSAGES = [{"role": "user", "content": "I'm Pickle Rick"}]
KEY = "bench-hosted-key"


# -- server (its own process) ---------------------------------------------------------------------
def serve(cert: str, key: str) -> None:
    import socket

    import uvicorn

    frames = [f + b"\n\n" for f in CAPTURE.read_bytes().split(b"\n\n") if f.strip()]

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        more = True
        while more:  # read the request body
            more = (await receive()).get("more_body", False)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (with proto 0
    # every turn would wait ~40 ms for a delayed ACK, for every client alike)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print("PORT", sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        app, ssl_certfile=cert, ssl_keyfile=key, log_level="warning", lifespan="on"
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve_h2(cert: str, key: str) -> None:
    """The same stream over HTTP/2 only (h2, asyncio): one DATA frame write per event."""
    import ssl

    import h2.config
    import h2.connection
    import h2.events

    frames = [f + b"\n\n" for f in CAPTURE.read_bytes().split(b"\n\n") if f.strip()]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])

    class H2(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.Transport = transport  # type: ignore[assignment]
            config = h2.config.H2Configuration(client_side=False, header_encoding=None)
            self.conn = h2.connection.H2Connection(config=config)
            self.conn.initiate_connection()
            self.t.write(self.conn.data_to_send())

        def data_received(self, data: bytes) -> None:
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    self.respond(event.stream_id)
            self.t.write(self.conn.data_to_send())

        def respond(self, sid: int) -> None:
            headers = [(b":status", b"200"), (b"content-type", b"text/event-stream")]
            self.conn.send_headers(sid, headers)
            self.t.write(self.conn.data_to_send())
            for frame in frames:
                self.conn.send_data(sid, frame)
                self.t.write(self.conn.data_to_send())
            self.conn.end_stream(sid)

    async def main() -> None:
        import socket

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        srv = await asyncio.get_running_loop().create_server(H2, sock=sock, ssl=ctx)
        print("PORT", sock.getsockname()[1], flush=True)
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())


# -- proxy (its own process) ----------------------------------------------------------------------
def proxy(target: int, delay: float) -> None:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            while True:
                stamp, data = await queue.get()
                wait = stamp + delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(pump())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time(), data))
                if not data:
                    break
            await task
        except (ConnectionError, OSError):
            task.cancel()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        print("CONN", flush=True)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        for w in (client_w, server_w):
            w.close()

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        print("PORT", srv.sockets[0].getsockname()[1], flush=True)
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())


# -- clients (one process per instance) -----------------------------------------------------------
def worker(kind: str, url: str, turns: int, pause: float) -> None:
    import httpx

    ttft: list[float] = []
    if kind.startswith(("nbchat", "before")):
        from nbchat.backends.cohere import Client

        client = Client(api_key=KEY, base_url=url)
        client.http2 = "h2" in kind
        if kind.endswith("+preconnect"):
            client.preconnect()
        time.sleep(pause)
        for _ in range(turns):
            t0 = time.perf_counter()
            first = None
            for event in client.chat_stream(model=MODEL, messages=MESSAGES):
                if first is None and event["type"] == "content-delta":
                    first = time.perf_counter() - t0
            assert first is not None
            ttft.append(first)
    elif kind == "sdk":
        import cohere

        sdk = cohere.ClientV2(api_key=KEY, base_url=url)
        time.sleep(pause)
        for _ in range(turns):
            t0 = time.perf_counter()
            first = None
            for event in sdk.chat_stream(model=MODEL, messages=MESSAGES):
                if first is None and event.type == "content-delta":
                    first = time.perf_counter() - t0
            assert first is not None
            ttft.append(first)
    else:  # the floor: bare httpx, one keep-alive client
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        headers = {"Authorization": f"Bearer {KEY}", "Accept": "text/event-stream"}
        with httpx.Client(timeout=60, http2=kind == "httpx-h2") as http:
            time.sleep(pause)
            for _ in range(turns):
                t0 = time.perf_counter()
                first = None
                with http.stream("POST", url + "/v2/chat", json=body, headers=headers) as r:
                    for line in r.iter_lines():
                        if first is None and line.startswith("data:") and "content-delta" in line:
                            json.loads(line[5:])
                            first = time.perf_counter() - t0
                assert first is not None
                ttft.append(first)
    print(json.dumps(ttft), flush=True)


# -- the run ------------------------------------------------------------------------------------
def make_cert(folder: str) -> tuple[str, str]:
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    return cert, key


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    # stderr dropped: terminating them at the end prints asyncio's pending-task noise
    proc = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line}")
    return proc, int(line[1])


class Counter:
    """Counts the proxy's CONN lines (one per accepted connection)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.n = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("CONN"):
                with self._lock:
                    self.n += 1

    def value(self) -> int:
        time.sleep(0.05)  # let the reader thread catch up
        with self._lock:
            return self.n


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3, help="client instances per kind")
    ap.add_argument("--turns", type=int, default=10, help="turns per client instance")
    ap.add_argument("--delay", type=float, default=20.0, help="ms added each way by the proxy")
    ap.add_argument("--pause", type=float, default=0.5, help="s between client creation and turn 1")
    ap.add_argument("--before", help="an older nbchat source tree to compare (its root folder)")
    ap.add_argument(
        "--h2", action="store_true", help="HTTP/2-only server (needs h2): nbchat vs httpx, both h2"
    )
    ap.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-h2", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    ap.add_argument("--proxy", nargs=2, metavar=("PORT", "DELAY"), help=argparse.SUPPRESS)
    ap.add_argument("--worker", nargs=4, metavar=("KIND", "URL", "N", "P"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    if args.serve_h2:
        serve_h2(*args.serve_h2)
        return 0
    if args.proxy:
        proxy(int(args.proxy[0]), float(args.proxy[1]))
        return 0
    if args.worker:
        kind, url, n, pause = args.worker
        worker(kind, url, int(n), float(pause))
        return 0

    kinds = ["nbchat", "sdk", "httpx", "nbchat+preconnect"] + (["before"] if args.before else [])
    floor_kind, sdk_kind = "httpx", "sdk"
    if args.h2:
        kinds = ["nbchat-h2", "httpx-h2"]
        floor_kind = sdk_kind = "httpx-h2"
    tmp = tempfile.mkdtemp(prefix="hosted-turns-")
    cert, key = make_cert(tmp)
    extra = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "SSL_CERT_FILE": cert, "PYTHONPATH": os.pathsep.join([str(ROOT), extra])}
    env.pop("SSL_CERT_DIR", None)
    env.pop("CO_API_URL", None)
    server, sport = start(["--serve-h2" if args.h2 else "--serve", cert, key], env)
    prox, pport = start(["--proxy", str(sport), str(args.delay / 1000)], env)
    counter = Counter(prox)
    url = f"https://127.0.0.1:{pport}"
    conns: dict[str, list[int]] = {k: [] for k in kinds}
    first: dict[str, list[float]] = {k: [] for k in kinds}
    rest: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        for _ in range(args.rounds):
            for kind in kinds:
                wenv = dict(env)
                if kind == "before":
                    wenv["PYTHONPATH"] = os.pathsep.join([os.path.abspath(args.before), extra])
                before = counter.value()
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", kind, url]
                    + [str(args.turns), str(args.pause)],
                    env=wenv,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if out.returncode:
                    raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-2000:]}")
                ttft = json.loads(out.stdout.strip().splitlines()[-1])
                conns[kind].append(counter.value() - before)
                first[kind].append(ttft[0])
                rest[kind] += ttft[1:]
    finally:
        for proc in (prox, server):
            proc.terminate()
            proc.wait(5)
    floor = statistics.median(rest[floor_kind])
    floor1 = statistics.median(first[floor_kind])
    sdk = statistics.median(rest[sdk_kind])
    sdk1 = statistics.median(first[sdk_kind])
    print(
        f"{args.rounds} client instances x {args.turns} turns each, TLS, +{args.delay:g} ms each "
        f"way ({2 * args.delay:g} ms RTT), {args.pause:g} s pause before turn 1"
    )
    print(
        f"  {'client':18s} {'conns/instance':>14s} {'turn 1':>9s} {'/floor':>7s} {'/sdk':>6s}"
        f" {'turns 2-' + str(args.turns):>11s} {'/floor':>7s} {'/sdk':>6s}"
    )
    for kind in kinds:
        t1 = statistics.median(first[kind])
        tn = statistics.median(rest[kind])
        label = f"{kind} (floor)" if kind == floor_kind else kind
        print(
            f"  {label:18s} {statistics.mean(conns[kind]):>14.1f} {t1 * 1000:>7.1f}ms"
            f" {t1 / floor1:>6.2f}x {t1 / sdk1:>5.2f}x {tn * 1000:>9.1f}ms"
            f" {tn / floor:>6.2f}x {tn / sdk:>5.2f}x"
        )
    print("  goal: nbchat 1 connection per instance, turns 2-N <= 1.05x the floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
