"""Real browser: JupyterLab 4 in headless Chromium (Playwright), the nbchat view and panel.

Recipe: shared/notes/e2e-browser.md. One server + one notebook per test module; cells are run
one at a time from the test. Scripted v2 servers (tests/v2server.py, real sockets) stream slow,
hostile or recorded replies; the first cell streams from the embedded model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from v2server import V2Server, events_body, sse, text_events  # noqa: E402

ARTIFACTS = HERE.parent / "test-artifacts"
TOKEN = "nbchat-e2e"
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

KERNEL_EVAL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let out = '';
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
  };
  await future.done;
  return out;
}"""

RUN_CELL = """(i) => {
  const nb = window.jupyterapp.shell.currentWidget;
  nb.content.activeCellIndex = i;
  return window.jupyterapp.commands.execute('notebook:run-cell');
}"""

EVIL_PIECES = [
    "Here is ",
    "<script>window.__pwned = 1; alert('x')</script> ",
    "and ",
    '<img src=x onerror="window.__pwned = 2; alert(2)"> ',
    '<img src="http://evil.example/pixel.png"> ',
    "![t](http://evil.example/track.png) ",
    "[click](javascript:window.__pwned=3) ",
    "<iframe src=http://evil.example/></iframe> ",
    "EVIL-DONE",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slow_reply(pieces: list[str], delay: float) -> Any:
    return sse(events_body(text_events(pieces)), delay=delay)


@pytest.fixture(scope="module")
def servers():
    """Three scripted v2 endpoints: hostile text, a long slow reply, the panel's reply."""
    evil = V2Server(default=_slow_reply(EVIL_PIECES, 0.05))
    slow = V2Server(default=_slow_reply([f"word{i} " for i in range(600)], 0.02))
    panel = V2Server(default=_slow_reply(["Panel ", "reply ", "is ", "here. ", "PANEL-DONE"], 0.05))
    yield {"evil": evil, "slow": slow, "panel": panel}
    for s in (evil, slow, panel):
        s.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("nbroot")
    state = tmp_path_factory.mktemp("jupyter-state")
    settings = state / "config" / "lab" / "user-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})
    )
    (settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"})
    )
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
    )
    port = _free_port()
    log_path = state / "lab.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(root),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("jupyter lab did not start:\n" + log_path.read_text()) from None
            time.sleep(0.2)
    yield base, root
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
        pg = ctx.new_page()
        pg.errors, pg.dialogs, pg.foreign = [], [], []
        base = lab[0]
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))

        def on_dialog(d: Any) -> None:
            pg.dialogs.append(d.message)
            d.dismiss()

        pg.on("dialog", on_dialog)
        pg.on(
            "request",
            lambda r: (
                None if r.url.startswith((base, "data:", "blob:")) else pg.foreign.append(r.url)
            ),
        )
        yield pg
        ctx.close()
        browser.close()


def make_notebook(root: Path, urls: dict[str, str]) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [
        "%load_ext nbchat\n%config NbChat.api_key = 'test-key'",
        # 1: the embedded model, streamed live
        "%%chat -n local_chat --backend local --max-tokens 40 --temperature 0.7\n"
        "Write a long story about a lighthouse keeper and the sea.",
        # 2: a hostile reply from a v2 endpoint
        f"%config NbChat.base_url = {urls['evil']!r}",
        "%%chat -n evil --backend v2\nSay something.",
        # 4: a long slow reply to stop
        f"%config NbChat.base_url = {urls['slow']!r}",
        "%%chat -n slow --backend v2\nCount for a long time.",
        # 6: the panel, on its own conversation and v2 endpoint
        "import nbchat\nfrom nbchat.backends import get_backend\n"
        f"pconv = nbchat.Conversation()\npanel = nbchat.Panel(pconv, get_backend('v2', base_url={urls['panel']!r}, api_key='k'))\n"
        "panel",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    name = f"nbchat_e2e_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    return name


def kernel_eval(page: Any, code: str) -> str:
    return page.evaluate(KERNEL_EVAL, code)


def run_cell(page: Any, i: int) -> None:
    page.evaluate(RUN_CELL, i)


def cell(page: Any, i: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def shot(page: Any, name: str, locator: Any = None) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    if locator is not None:
        locator.scroll_into_view_if_needed()
    page.screenshot(path=str(path))
    return path


def test_live_view_panel_stop_and_hostile_reply_in_jupyterlab(lab, page, servers) -> None:
    from playwright.sync_api import expect

    base, root = lab
    name = make_notebook(root, {k: s.url for k, s in servers.items()})
    page.goto(f"{base}/lab/tree/{name}?token={TOKEN}&reset")
    page.wait_for_function(
        """(name) => {
             const w = window.jupyterapp?.shell.currentWidget;
             return w?.context?.path === name && w.sessionContext?.session?.kernel?.status === 'idle';
           }""",
        arg=name,
        timeout=60_000,
    )
    run_cell(page, 0)
    expect(cell(page, 0)).not_to_contain_text("Error", timeout=5_000)

    # 1. the embedded model: tokens arrive incrementally in the DOM
    run_cell(page, 1)
    view = cell(page, 1).locator(".nbchat-turn")
    expect(view).to_be_visible(timeout=60_000)
    body = view.locator(".nbchat-body")
    lengths: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = view.get_attribute("data-status")
        lengths.append(len(body.inner_text()))
        if status in ("done", "error", "stopped"):
            break
        page.wait_for_timeout(40)
    assert view.get_attribute("data-status") == "done", view.inner_text()
    growing = sorted({n for n in lengths if n > 0})
    assert len(growing) >= 4, lengths  # several partial states seen, not one final paint
    final_len = lengths[-1]
    assert final_len > 20
    stats = view.locator(".nbchat-stats").inner_text()
    assert "tokens" in stats and "tok/s" in stats and "TTFT" in stats, stats
    assert "COMPLETE" in stats or "MAX_TOKENS" in stats, stats
    turn = json.loads(
        kernel_eval(
            page,
            "import json; t = local_chat.turns[-1]; print(json.dumps([t.status, t.backend, len(t.text)]))",
        )
    )
    assert turn[0] == "complete" and turn[1] == "local" and turn[2] > 20
    shot(page, "embedded", view)

    # 2. hostile reply: rendered as text; nothing runs, nothing is injected or fetched
    run_cell(page, 2)
    run_cell(page, 3)
    evil = cell(page, 3).locator(".nbchat-turn")
    expect(evil.locator(".nbchat-body")).to_contain_text("EVIL-DONE", timeout=30_000)
    expect(evil).to_have_attribute("data-status", "done", timeout=10_000)
    text = evil.locator(".nbchat-body").inner_text()
    assert "<script>window.__pwned = 1" in text and "<img src=x onerror=" in text
    assert evil.locator(".nbchat-body script, .nbchat-body img, .nbchat-body iframe").count() == 0
    assert evil.locator(".nbchat-body a[href^='javascript']").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == [] and page.foreign == [], (page.dialogs, page.foreign)
    shot(page, "hostile", evil)

    # 3. Stop mid-stream: stops fast, partial reply kept, marked stopped
    run_cell(page, 4)
    run_cell(page, 5)
    slow = cell(page, 5).locator(".nbchat-turn")
    expect(slow.locator(".nbchat-body")).to_contain_text("word20", timeout=30_000)
    t0 = time.monotonic()
    slow.locator("button.nbchat-stop").click()
    expect(slow).to_have_attribute("data-status", "stopped", timeout=5_000)
    stop_seconds = time.monotonic() - t0
    partial = slow.locator(".nbchat-body").inner_text()
    assert "word0" in partial and "word599" not in partial
    assert "stopped" in slow.locator(".nbchat-stats").inner_text()
    state = json.loads(
        kernel_eval(
            page, "import json; t = slow.turns[-1]; print(json.dumps([t.status, t.text[:6]]))"
        )
    )
    assert state == ["cancelled", "word0 "]
    assert stop_seconds < 2.0, stop_seconds  # click -> kernel cancel -> DOM, through the browser
    shot(page, "stopped", slow)
    print(
        f"\nstop click -> 'stopped' shown: {stop_seconds * 1000:.0f} ms; {slow.locator('.nbchat-stats').inner_text()}"
    )

    # 4. panel: move a slider by keyboard, type, Send; the request carries the new value
    run_cell(page, 6)
    panel = cell(page, 6).locator(".nbchat-panel")
    expect(panel).to_be_visible(timeout=30_000)
    handle = panel.locator(".nbchat-panel-temperature .noUi-handle")
    handle.focus()
    for _ in range(5):
        handle.press("ArrowRight")
    expect(panel.locator(".nbchat-panel-temperature .widget-readout")).to_have_text("0.35")
    panel.locator(".nbchat-panel-prompt textarea").fill("Hello from the panel")
    panel.locator("button.nbchat-panel-send").click()
    pview = panel.locator(".nbchat-panel-transcript .nbchat-turn")
    expect(pview.locator(".nbchat-body")).to_contain_text("PANEL-DONE", timeout=30_000)
    expect(pview).to_have_attribute("data-status", "done", timeout=10_000)
    request = servers["panel"].last.json
    assert (
        request["temperature"] == 0.35
        and request["messages"][-1]["content"] == "Hello from the panel"
    )
    assert kernel_eval(page, "print(pconv.turns[-1].params['temperature'])").strip() == "0.35"
    expect(panel.locator(".nbchat-panel-usage")).to_contain_text("1 turn ·")
    shot(page, "panel", panel)

    assert page.errors == [], page.errors
    assert page.foreign == [], page.foreign
