"""A canary API key must never leak: scan everything a user, a log or a saved file can see.

The key is set three ways (environment, ``Client(api_key=...)``, ``%config NbChat.api_key``)
and used for real requests against the recording v2 server (which also echoes it back in error
bodies and headers, as a misbehaving proxy might). Then every surface is collected and
searched: cell outputs of every mime type (IPython InteractiveShell and an nbclient-executed
notebook, whole .ipynb incl. widget state), widget state, repr()/str() of every public object,
exceptions and formatted tracebacks, log records at DEBUG (nbchat, httpx, httpcore, root),
to_dataframe()/to_json()/save()/export files, the dry-run view, nbchat serve responses, and the
history store's SQLite files (database, -wal, -shm: every byte).
"""

from __future__ import annotations

import io
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from v2server import Reply, V2Server, error_reply, events_body, sse, text_events, text_reply  # noqa: E402

import nbchat  # noqa: E402
from nbchat import history, runner  # noqa: E402
from nbchat.backends.cohere import Client  # noqa: E402
from nbchat.conversation import Conversation  # noqa: E402
from nbchat.errors import APIError, NbChatError  # noqa: E402

ENV_KEY = "canary-env-5b1f27d9e3a4"
ARG_KEY = "canary-arg-0c8e44a1f6b2"
CFG_KEY = "canary-cfg-9a7d13c5e0f8"
KEYS = (ENV_KEY, ARG_KEY, CFG_KEY)
MODEL = "command-a-03-2025"


def reply(*pieces: str) -> Reply:
    return sse(events_body(text_events(list(pieces) or ["fine"])))


def echoing_errors(key: str) -> list[Reply]:
    """Error answers that carry the key back in their message: JSON body, text body."""
    return [
        error_reply(401, f"invalid api token {key}"),
        text_reply(500, f"upstream rejected Authorization: Bearer {key}"),
        error_reply(400, "bad request"),
    ]


def header_echo(key: str) -> Reply:
    """A proxy that echoes the key in a response header (see the two tests at the end)."""
    return error_reply(400, "bad", headers={"X-Echo-Key": key})


def assert_clean(text: str, where: str) -> None:
    for key in KEYS:
        assert key not in text, (
            f"key leaked in {where}: ...{text[max(0, text.find(key) - 80) : text.find(key) + 40]}..."
        )
    # a key cut or case-changed is still a leak
    for key in KEYS:
        assert key[:14] not in text and key.upper() not in text, where


def store_bytes(folder: Path) -> str:
    """Every byte of a history store (database, -wal, -shm) as text, for the key scan."""
    files = sorted(folder.iterdir())
    assert any(f.name.endswith(".sqlite3") for f in files), files
    return "\n".join(f.read_bytes().decode("latin-1") for f in files)


def error_texts(exc: BaseException) -> list[str]:
    """What printing, raising or displaying an error shows (see test_api_error_attributes_*
    for the raw .body/.headers attributes)."""
    out = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, NbChatError):
        out.append(exc.message)
    return out


@pytest.fixture
def srv() -> Iterator[V2Server]:
    with V2Server(default=reply("default")) as server:
        yield server


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Every log record at DEBUG from every logger, formatted with args and tracebacks."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    names = [
        "",
        "nbchat",
        "nbchat.server",
        "httpx",
        "httpcore",
        "uvicorn",
        "uvicorn.error",
        "asyncio",
    ]
    saved = {n: logging.getLogger(n).level for n in names}
    root.addHandler(handler)
    for n in names:
        logging.getLogger(n).setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


# -- the Python API --------------------------------------------------------------------------------
def test_python_api_everything_scanned(
    srv: V2Server, logs: io.StringIO, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CO_API_KEY", ENV_KEY)
    texts: list[tuple[str, str]] = []
    env_client = nbchat.get_backend("v2", base_url=srv.url, max_retries=0)
    arg_client = Client(base_url=srv.url, api_key=ARG_KEY, max_retries=0)
    arg_client.backoff = 0.01
    for client, key in ((env_client, ENV_KEY), (arg_client, ARG_KEY)):
        conv = Conversation(system="be brief", temperature=0.2)
        srv.push(reply("hello", " there"))
        turn = conv.send("hi", backend=client, model=MODEL)
        assert srv.last.headers["authorization"] == f"Bearer {key}"  # the key was really used
        for bad in echoing_errors(key):
            srv.push(bad)
            with pytest.raises(APIError) as info:
                conv.send("fail", backend=client, model=MODEL)
            texts += [(f"error {info.value.status_code}", t) for t in error_texts(info.value)]
        # a background turn that fails: the recorded error and exception
        srv.push(echoing_errors(key)[0])
        handle = runner.start_turn(conv, client, "bg", {"model": MODEL})
        handle.wait(10)
        texts += [("turn.error", handle.turn.error or ""), ("turn.stats", handle.turn.stats())]
        texts += [("turn.exception", t) for t in error_texts(handle.turn.exception)]
        stream = client.chat_stream(model=MODEL, messages=[{"role": "user", "content": "x"}])
        srv.push(reply("s"))
        events = list(stream)
        # reprs / strs of every public object
        for name, obj in [
            ("client", client),
            ("vars(client)", vars(client)),
            ("stream", stream),
            ("stream.response", stream.response),
            ("conversation", conv),
            ("turn", turn),
            ("turn.to_dict", turn.to_dict()),
            ("handle", handle),
            ("cancel", handle.cancel_signal),
            ("events", events),
        ]:
            texts += [(f"repr {name}", repr(obj)), (f"str {name}", str(obj))]
        texts += [
            ("markdown", conv._repr_markdown_()),
            ("mimebundle", json.dumps(conv._repr_mimebundle_())),
            ("to_json", conv.to_json()),
            ("dataframe", conv.to_dataframe().to_csv()),
            ("dataframe repr", repr(conv.to_dataframe())),
        ]
        path = tmp_path / f"conv-{key[:10]}.json"
        conv.save(path)
        texts.append(("saved file", path.read_text()))
        conv.to_dataframe().to_csv(tmp_path / "c.csv")
        texts.append(("csv file", (tmp_path / "c.csv").read_text()))
        from nbchat.notebook.render import static_bundle

        texts += [("static bundle", json.dumps(static_bundle(t))) for t in conv.turns]
        store = history.get_store(tmp_path / "history" / "history.sqlite3")
        for t in conv.turns:
            assert store.record(conv, t)
        assert store.flush(10) and store.warning is None
    # other backends holding a key
    from nbchat.backends.openai import OpenAIBackend

    oa = OpenAIBackend(base_url=srv.url + "/v1", api_key=ARG_KEY, model="m")
    texts += [("openai repr", repr(oa)), ("openai vars", repr(vars(oa)))]
    # refused connection and invalid URL errors (the URL is echoed; the key must not be)
    for bad_url in ("http://127.0.0.1:1", "htp://x"):
        c = Client(base_url=bad_url, api_key=ARG_KEY, max_retries=0)
        with pytest.raises(NbChatError) as info:
            c.chat(model=MODEL, messages=[{"role": "user", "content": "x"}])
        texts += [("net error", t) for t in error_texts(info.value)]
    stored = store_bytes(tmp_path / "history")
    assert "invalid api token" in stored  # the failed turns are in the store ...
    texts.append(("history store", stored))  # ... without the key
    texts.append(("logs", logs.getvalue()))
    assert "HTTP Request" in logs.getvalue()  # httpx really logged at DEBUG/INFO
    for where, text in texts:
        assert_clean(text, where)


# -- IPython: every output of a shell session -------------------------------------------------------
@pytest.fixture
def ip(srv: V2Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("CO_API_KEY", ENV_KEY)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbchat")
    shell.run_line_magic("config", "NbChat.backend = 'v2'")
    shell.run_line_magic("config", f"NbChat.base_url = '{srv.url}'")
    shell.run_line_magic("config", f"NbChat.model = '{MODEL}'")
    yield shell
    shell.run_line_magic("config", "NbChat.api_key = ''")
    shell.run_line_magic("config", "NbChat.live = 'auto'")
    shell.run_line_magic("unload_ext", "nbchat")
    InteractiveShell.clear_instance()


def cell_texts(ip: Any, source: str) -> list[str]:
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        res = ip.run_cell(source)
    out = [cap.stdout, cap.stderr]
    for o in cap.outputs:
        out += [json.dumps(o.data), json.dumps(o.metadata)]
    if res.error_in_exec is not None:
        out += error_texts(res.error_in_exec)
    if res.result is not None:
        out.append(repr(res.result))
    return out


def test_interactive_shell_session(
    ip: Any, srv: V2Server, logs: io.StringIO, tmp_path: Path
) -> None:
    texts: list[str] = []
    cells = [
        "%%chat\nhello",
        "%%chat --dry-run -t 0.1\nwhat would be sent",
        "%chat config",
        "%config NbChat",
        "%%chat\nthis fails 401",
        "%%chat\nthis fails 500",
        "%%chat\nthis fails 400",
        "%chat history",
        "chat",
        "print(repr(chat), chat.to_json(), chat.to_dataframe().to_string())",
        f"%chat export {tmp_path / 'ex.json'}",
        f"%chat export {tmp_path / 'ex.csv'}",
        "get_ipython().find_cell_magic('chat').__self__",
        "get_ipython().find_cell_magic('chat').__self__.settings",
        "import nbchat; nbchat.get_backend('v2', base_url=chat.turns[0].params.get('x') or None)",
        "%chat models",
        "%chat panel",
    ]
    for key in (ENV_KEY, CFG_KEY):
        if key == CFG_KEY:
            ip.run_line_magic("config", f"NbChat.api_key = '{CFG_KEY}'")
        srv.push(reply("fine"))
        srv.push(*[r for r in echoing_errors(key)])
        for source in cells:
            texts += cell_texts(ip, source)
        assert srv.requests[-4].headers["authorization"] == f"Bearer {key}"
    # live mode: a TurnView widget streams the reply; its state is what a notebook saves
    ip.run_line_magic("config", "NbChat.live = 'always'")
    srv.push(reply("live", " reply"), echoing_errors(CFG_KEY)[0])
    texts += cell_texts(ip, "%%chat --wait\nlive one")
    texts += cell_texts(ip, "%%chat --wait\nlive failing")
    import ipywidgets

    states = {mid: w.get_state() for mid, w in list(ipywidgets.Widget.widgets.items())}
    assert states, "no widget was created"
    texts.append(json.dumps(states, default=repr))
    texts += [p.read_text() for p in tmp_path.iterdir()]
    texts.append(logs.getvalue())
    assert any("invalid api token" in t for t in texts)  # the errors were shown ...
    for i, text in enumerate(texts):
        assert_clean(text, f"shell text #{i}")  # ... never the key


# -- nbclient: a notebook executed by a real kernel, saved whole ---------------------------------------
def test_nbclient_executed_notebook(
    srv: V2Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    monkeypatch.setenv("CO_API_KEY", ENV_KEY)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    srv.push(reply("notebook", " answer"), *echoing_errors(ENV_KEY), reply("cfg ok"))
    sources = [
        "%load_ext nbchat",
        f"%config NbChat.backend = 'v2'\n%config NbChat.base_url = '{srv.url}'\n%config NbChat.model = '{MODEL}'",
        "%%chat\nhello from a notebook",
        "%%chat --dry-run --max-tokens 5\nhello",
        "%%chat\nfails 401",
        "%%chat\nfails 500",
        "%%chat\nfails 400",
        "%chat config",
        "%config NbChat",
        "chat",
        "print(chat.to_json()); chat.to_dataframe()",
        "import os, logging; logging.basicConfig(level=logging.DEBUG, force=True)",
        f"%config NbChat.api_key = '{CFG_KEY}'",
        "%%chat\nwith the configured key",
        "%chat config",
        "import nbchat; [repr(t) for t in chat.turns], repr(nbchat.get_backend('v2'))",
    ]
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
    client.execute()
    saved = tmp_path / "executed.ipynb"
    nbformat.write(nb, saved)
    # everything the notebook saved except the cell sources (one holds the key: the user typed it)
    for c in nb.cells:
        c.source = ""
    nbformat.write(nb, saved)
    text = saved.read_text()
    assert "notebook answer" in text and "invalid api token" in text  # outputs are there ...
    assert [r.headers.get("authorization") for r in srv.requests[-1:]] == [f"Bearer {CFG_KEY}"]
    assert_clean(text, "executed notebook")  # ... and no key in any of them


# -- the server ------------------------------------------------------------------------------------------
def test_serve_never_returns_or_logs_the_upstream_key_or_token(
    srv: V2Server, logs: io.StringIO
) -> None:
    """nbchat serve proxying to an upstream that echoes the key back in errors."""
    import http.client

    from test_bad_input import run_server

    from nbchat.server import create_app

    upstream_client = Client(base_url=srv.url, api_key=ARG_KEY, max_retries=0)
    srv.push(*echoing_errors(ARG_KEY), reply("ok"))
    bodies = []
    with run_server(create_app(upstream_client, token=CFG_KEY)) as url:
        host, port = url.removeprefix("http://").split(":")
        for auth in [CFG_KEY] * 4 + [CFG_KEY + "x", "wrong", ""]:
            for stream in (True, False):
                conn = http.client.HTTPConnection(host, int(port), timeout=15)
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": stream,
                }
                conn.request(
                    "POST", "/v2/chat", json.dumps(body), {"Authorization": f"Bearer {auth}"}
                )
                resp = conn.getresponse()
                bodies.append(f"{resp.status} {resp.getheaders()} {resp.read()!r}")
                conn.close()
    joined = "\n".join(bodies)
    assert "401" in joined and "invalid api token" in joined
    assert_clean(joined, "server responses")
    assert_clean(logs.getvalue(), "server logs")


# -- a proxy echoing the key back in a header / body: the raw error attributes and DEBUG logs -------
def test_api_error_attributes_redact_an_echoed_key(srv: V2Server) -> None:
    """APIError.body and .headers are public attributes users print when debugging; a
    server (or proxy) echoing the key must not put it there unredacted."""
    client = Client(base_url=srv.url, api_key=ARG_KEY, max_retries=0)
    srv.push(echoing_errors(ARG_KEY)[0], header_echo(ARG_KEY))
    for _ in range(2):
        with pytest.raises(APIError) as info:
            client.chat(model=MODEL, messages=[{"role": "user", "content": "x"}])
        exc = info.value
        for text in (repr(exc.body), repr(exc.headers), repr(vars(exc))):
            assert_clean(text, "APIError attributes")


def test_debug_logs_redact_an_echoed_key(srv: V2Server, logs: io.StringIO) -> None:
    """httpcore logs response headers at DEBUG; an echoed key must not reach the log."""
    client = Client(base_url=srv.url, api_key=ARG_KEY, max_retries=0)
    srv.push(header_echo(ARG_KEY))
    with pytest.raises(APIError):
        client.chat(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert "receive_response_headers" in logs.getvalue()
    assert_clean(logs.getvalue(), "DEBUG logs")


# -- the history store: a key the user typed is never written ----------------------------------------
def test_history_store_never_holds_a_key(
    srv: V2Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A prompt, a system message, a parameter and a tool result carrying the key (the user
    pasted it, a tool printed it), and error answers echoing it: the conversation in memory has
    what the user typed, the store on disk has ``***``. The scan reads every byte, including
    free pages and the WAL."""
    monkeypatch.setenv("CO_API_KEY", ENV_KEY)
    client = Client(base_url=srv.url, api_key=ARG_KEY, max_retries=0)

    def leaky_tool(x: int) -> dict[str, str]:
        """Returns a secret it should not have.

        Args:
            x: anything.
        """
        return {"env": ENV_KEY, "arg": ARG_KEY}

    conv = Conversation(system=f"the key is {ENV_KEY}", temperature=0.3)
    srv.push(reply("ok"))
    conv.send(f"my keys are {ENV_KEY} and {ARG_KEY}", backend=client, model=MODEL)
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "leaky_tool", "arguments": '{"x": 1}'},
    }
    tool_turn = [
        {"type": "message-start", "id": "r1", "delta": {"message": {"role": "assistant"}}},
        {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": call}}},
        {"type": "tool-call-end", "index": 0},
        {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL"}},
    ]
    srv.push(sse(events_body(tool_turn)), reply("done"))
    conv.send("use the tool", backend=client, model=MODEL, tools=[leaky_tool])
    assert ENV_KEY in json.dumps(conv.turns[-1].to_dict())  # the tool result did carry it
    for bad in echoing_errors(ARG_KEY):
        srv.push(bad)
        with pytest.raises(APIError):
            conv.send(f"fail with Authorization: Bearer {ARG_KEY}", backend=client, model=MODEL)
    store = history.get_store(tmp_path / "h" / "history.sqlite3")
    for t in conv.turns:
        assert store.record(conv, t)
    assert store.flush(10) and store.warning is None
    stored = store_bytes(tmp_path / "h")
    assert "my keys are *** and ***" in stored and "invalid api token" in stored
    assert_clean(stored, "history store")
    assert "Bearer canary" not in stored and "bearer canary" not in stored.lower()
    restored = history.load(history.conversation_id(conv), store.path)
    assert restored.system == "the key is ***" and len(restored) == len(conv)
    assert_clean(restored.to_json(), "restored conversation")
