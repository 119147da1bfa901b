"""Real browser: a saved notebook reopened after its kernel is gone (JupyterLab 4, Notebook 7).

A %%chat turn and a panel turn run live, the notebook is saved, its kernel shut down and the
page reloaded: both read as the turn (drawn by the nbchat extension from the saved
application/vnd.nbchat.*+json data), never "Error displaying widget", and the file grows by
less than 8 KB per turn. The extension is the prebuilt one shipped in the wheel
(nbchat/labextension), put on the Jupyter path as an installed wheel would.
"""

from __future__ import annotations

import json
import os
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
from test_browser import CHROMIUM, CHROMIUM_ARGS, TOKEN, _free_port, _slow_reply  # noqa: E402
from v2server import V2Server  # noqa: E402

LABEXT = HERE.parent / "nbchat" / "labextension"


def labext_path(tmp: Path) -> str:
    """A Jupyter data dir holding labextensions/nbchat -> the built extension (like the wheel)."""
    data = tmp / "jupyter-data"
    (data / "labextensions").mkdir(parents=True, exist_ok=True)
    link = data / "labextensions" / "nbchat"
    if not link.exists():
        link.symlink_to(LABEXT, target_is_directory=True)
    return str(data)


@pytest.fixture(scope="module")
def reply_servers():
    chat = V2Server(default=_slow_reply(["Saved ", "reply ", "text ", "SAVED-DONE"], 0.03))
    panel = V2Server(default=_slow_reply(["Panel ", "answer ", "PANEL-DONE"], 0.03))
    yield chat, panel
    chat.close()
    panel.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
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
        JUPYTER_PATH=labext_path(state),
    )
    port = _free_port()
    log_path = state / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
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
                raise RuntimeError("jupyter did not start:\n" + log_path.read_text()) from None
            time.sleep(0.2)
    yield base, root
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _notebook(root: Path, chat_url: str, panel_url: str) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [
        "%load_ext nbchat\n%config NbChat.api_key = 'test-key'\n"
        f"%config NbChat.base_url = {chat_url!r}",
        "%%chat --backend v2\nSay something worth saving.",
        "import nbchat\nfrom nbchat.backends import get_backend\n"
        f"panel = nbchat.Panel(nbchat.Conversation(), get_backend('v2', base_url={panel_url!r}, api_key='k'))\n"
        "panel",
        "pview = panel.send('Hello saved panel')",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    name = f"nbchat_saved_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    return name


def _api(base: str, path: str, method: str = "GET") -> Any:
    req = urllib.request.Request(f"{base}{path}?token={TOKEN}", method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else None


def _wait_open(page: Any, name: str, kernel: bool) -> None:
    page.wait_for_function(
        """([name, kernel]) => {
             const w = window.jupyterapp?.shell.currentWidget;
             if (w?.context?.path !== name || !w.context.isReady) return false;
             return !kernel || w.sessionContext?.session?.kernel?.status === 'idle';
           }""",
        arg=[name, kernel],
        timeout=60_000,
    )


RUN_CELL = """(i) => {
  const nb = window.jupyterapp.shell.currentWidget;
  nb.content.activeCellIndex = i;
  return window.jupyterapp.commands.execute('notebook:run-cell');
}"""


@pytest.mark.parametrize("front_end", ["lab", "notebook7"])
def test_saved_notebook_reopens_without_kernel(server, browser, reply_servers, front_end) -> None:
    from playwright.sync_api import expect

    base, root = server
    chat, panel_srv = reply_servers
    name = _notebook(root, chat.url, panel_srv.url)
    size_before = (root / name).stat().st_size
    url = f"{base}/lab/tree/{name}?token={TOKEN}&reset"
    if front_end == "notebook7":
        url = f"{base}/notebooks/{name}?token={TOKEN}"
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{e} {e.stack}"))
    try:
        page.goto(url)
        _wait_open(page, name, kernel=True)
        cells = page.locator(".jp-Notebook .jp-Cell")
        for i in range(4):
            page.evaluate(RUN_CELL, i)
            if i == 1:
                live = cells.nth(1).locator(".nbchat-turn")
                expect(live).to_have_attribute("data-status", "done", timeout=30_000)
        panel = cells.nth(2).locator(".nbchat-panel")
        pturn = panel.locator(".nbchat-panel-transcript .nbchat-turn")
        expect(pturn).to_have_attribute("data-status", "done", timeout=30_000)
        expect(pturn.locator(".nbchat-body")).to_contain_text("PANEL-DONE")

        # while the kernel runs, the live widget is shown (not the saved drawing)
        turn = cells.nth(1).locator(".nbchat-turn")
        expect(turn.locator(".nbchat-body")).to_contain_text("SAVED-DONE", timeout=10_000)
        page.wait_for_timeout(500)
        assert cells.nth(1).locator(".nbchat-saved-turn").count() == 0
        assert cells.nth(1).locator(".nbchat-turn").count() == 1
        assert panel.locator("button.nbchat-panel-send").count() == 1

        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        deadline = time.monotonic() + 20
        while "PANEL-DONE" not in (root / name).read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        saved = json.loads((root / name).read_text())
        size_after = (root / name).stat().st_size
        per_turn = (size_after - size_before) / 2
        mimes = [set(o.get("data", {})) for c in saved["cells"] for o in c.get("outputs", [])]
        assert any("application/vnd.nbchat.turn+json" in m for m in mimes), mimes
        assert any("application/vnd.nbchat.panel+json" in m for m in mimes), mimes
        assert all("text/html" in m for m in mimes if "application/vnd.nbchat.turn+json" in m)
        assert per_turn < 8 * 1024, (size_before, size_after)
        print(f"\n{front_end}: saved file grew {size_after - size_before} B for 2 turns")

        # shut the kernel down (the session with it), then reopen the page
        for s in _api(base, "/api/sessions"):
            if s.get("path", "").endswith(name):
                _api(base, f"/api/sessions/{s['id']}", "DELETE")
        page.reload()
        _wait_open(page, name, kernel=False)
        cells = page.locator(".jp-Notebook .jp-Cell")
        saved_turn = cells.nth(1).locator(".nbchat-saved-turn")
        expect(saved_turn.locator(".nbchat-body")).to_contain_text("SAVED-DONE", timeout=30_000)
        expect(saved_turn.locator(".nbchat-prompt")).to_contain_text("Say something worth")
        saved_panel = cells.nth(2).locator(".nbchat-saved-panel")
        expect(saved_panel).to_contain_text("PANEL-DONE", timeout=30_000)
        expect(saved_panel).to_contain_text("Hello saved panel")
        # give a restarted kernel's widget manager time to give up on the old models
        page.wait_for_timeout(4_000)
        body = page.evaluate("() => document.body.innerText")
        assert "Error displaying widget" not in body
        assert saved_turn.locator(".nbchat-stats").inner_text().strip() != ""
        ARTIFACTS = HERE.parent / "test-artifacts"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"browser-saved-{front_end}.png"))
        # Notebook 7.6 itself logs "reading 'schema'" from notebook_core (settings) on load
        ours = [e for e in errors if "notebook_core" not in e]
        assert ours == [], errors
    finally:
        for s in _api(base, "/api/sessions"):
            _api(base, f"/api/sessions/{s['id']}", "DELETE")
        ctx.close()


def _events(pieces: list[str], finish: str = "COMPLETE", cite: bool = False) -> list[dict]:
    from nbchat.protocol.events import StreamBuilder, usage_dict

    b = StreamBuilder()
    ev = [b.start()]
    for p in pieces:
        ev += b.text(p)
    if cite:
        ev += b.close_content()
        ev += b.citation(
            {
                "start": 0,
                "end": 5,
                "text": "Tokyo",
                "type": "TEXT_CONTENT",
                "sources": [
                    {"type": "document", "id": "d1", "document": {"title": "Atlas of Japan"}}
                ],
            }
        )
    ev += b.end(finish, usage_dict(5, len(pieces)))
    return ev


LONG_CODE = (
    "Here:\n\n```python\ndef f(x):\n    return x + 1  # " + "long " * 80 + "\n```\n\nTokyo is big."
)


def test_panel_keys_code_and_view_polish_in_jupyterlab(server, browser) -> None:
    """Panel: Shift+Enter is a new line, Enter and Ctrl+Enter send; code scrolls inside the
    panel instead of being clipped; the transcript has a max height. View: syntax highlighting,
    the citation source list, the max_tokens mark, "1 token"."""
    from playwright.sync_api import expect
    from v2server import events_body, sse

    base, root = server
    panel_srv = V2Server(default=sse(events_body(_events([LONG_CODE]))))
    chat_srv = V2Server(default=sse(events_body(_events(["Tokyo ", "is big."], cite=True))))
    cut_srv = V2Server(default=sse(events_body(_events(["Hi"], finish="MAX_TOKENS"))))
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [
        "%load_ext nbchat\n%config NbChat.api_key = 'test-key'\n"
        f"%config NbChat.base_url = {chat_srv.url!r}",
        "%%chat --backend v2 -t 0.5\nWhere?",
        f"%config NbChat.base_url = {cut_srv.url!r}",
        "%%chat --backend v2 -n cut\nSay hi.",
        "import nbchat\nfrom nbchat.backends import get_backend\n"
        f"panel = nbchat.Panel(nbchat.Conversation(), get_backend('v2', base_url={panel_srv.url!r}, api_key='k'))\n"
        "panel",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    name = f"nbchat_polish_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    ctx = browser.new_context(viewport={"width": 1000, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(f"{base}/lab/tree/{name}?token={TOKEN}&reset")
        _wait_open(page, name, kernel=True)
        cells_ = page.locator(".jp-Notebook .jp-Cell")
        page.evaluate(RUN_CELL, 0)
        page.evaluate(RUN_CELL, 1)
        turn = cells_.nth(1).locator(".nbchat-turn")
        expect(turn).to_have_attribute("data-status", "done", timeout=30_000)
        # citation: a numbered source list under the reply (not only a hover title)
        expect(turn.locator(".nbchat-sources li")).to_contain_text("Atlas of Japan", timeout=5_000)
        assert turn.locator(".nbchat-body sup.nbchat-cite").count() == 1
        assert turn.locator(".nbchat-cut").is_hidden()

        page.evaluate(RUN_CELL, 2)
        page.evaluate(RUN_CELL, 3)
        cut = cells_.nth(3).locator(".nbchat-turn")
        expect(cut).to_have_attribute("data-status", "done", timeout=30_000)
        expect(cut.locator(".nbchat-cut")).to_be_visible()
        expect(cut.locator(".nbchat-cut")).to_contain_text("max_tokens reached")
        stats = cut.locator(".nbchat-stats").inner_text()
        assert stats.startswith("1 token ") or stats.startswith("1 token·"), stats

        page.evaluate(RUN_CELL, 4)
        panel = cells_.nth(4).locator(".nbchat-panel")
        box = panel.locator(".nbchat-panel-prompt textarea")
        expect(box).to_be_visible(timeout=30_000)
        box.click()
        box.type("first line")
        box.press("Shift+Enter")  # a new line, nothing sent (and the cell does not run)
        box.type("second")
        page.wait_for_timeout(300)
        assert not [r for r in panel_srv.requests if r.body]
        box.press("Enter")
        turns = panel.locator(".nbchat-panel-transcript .nbchat-turn")
        expect(turns.first).to_have_attribute("data-status", "done", timeout=30_000)
        chats = lambda: [r.json for r in panel_srv.requests if r.body]  # noqa: E731 (not preconnects)
        sent = chats()[0]["messages"][-1]["content"]
        assert sent == "first line\nsecond", sent
        expect(box).to_have_value("")
        box.type("again")
        box.press("Control+Enter")
        expect(turns.nth(1)).to_have_attribute("data-status", "done", timeout=30_000)
        assert chats()[1]["messages"][-1]["content"] == "again"
        for i in range(4):  # enough turns to overflow the transcript
            box.type(f"more {i}")
            box.press("Enter")
            expect(turns.nth(2 + i)).to_have_attribute("data-status", "done", timeout=30_000)
        # the code block scrolls inside its block; the turn is not wider than the panel
        dims = page.evaluate(
            """() => {
              const panel = document.querySelector('.nbchat-panel');
              const pre = panel.querySelector('.nbchat-code pre');
              const tr = panel.querySelector('.nbchat-panel-transcript');
              const turn = panel.querySelector('.nbchat-panel-transcript .nbchat-turn');
              return {panel: panel.getBoundingClientRect().width,
                      turn: turn.getBoundingClientRect().width,
                      preScroll: pre.scrollWidth, preClient: pre.clientWidth,
                      preOverflow: getComputedStyle(pre).overflowX,
                      trHeight: tr.getBoundingClientRect().height,
                      trScroll: tr.scrollHeight, winH: window.innerHeight};
            }"""
        )
        assert dims["turn"] <= dims["panel"] + 1, dims
        assert dims["preScroll"] > dims["preClient"] and dims["preOverflow"] == "auto", dims
        assert dims["trHeight"] <= 0.61 * dims["winH"] and dims["trScroll"] > dims["trHeight"]
        # syntax highlighting: spans made from the code's text
        code = panel.locator(".nbchat-code code").first
        assert code.locator(".nbchat-hl-kw", has_text="def").count() >= 1
        assert code.locator(".nbchat-hl-com").count() >= 1
        box.scroll_into_view_if_needed()
        expect(box).to_be_in_viewport()
        # dark theme: parameter chips and the panel footer stay readable
        page.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:change-theme', "
            "{theme: 'JupyterLab Dark'})"
        )
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
        page.wait_for_timeout(1000)
        looks = page.evaluate(
            """() => {
              const rgb = (c) => (c.match(/[\\d.]+/g) || []).slice(0, 3).map(Number);
              const lum = ([r, g, b]) => {
                const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
              };
              const contrast = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
              const chip = document.querySelector('.nbchat-chip');
              const foot = document.querySelector('.nbchat-panel-usage');
              const cs = getComputedStyle(chip);
              return {chip: contrast(rgb(cs.color), rgb(cs.backgroundColor)),
                      footPx: parseFloat(getComputedStyle(foot.querySelector('small') || foot).fontSize)};
            }"""
        )
        assert looks["chip"] >= 4.5 and looks["footPx"] >= 12, looks
        ARTIFACTS = HERE.parent / "test-artifacts"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-panel-polish.png"))
    finally:
        for s in _api(base, "/api/sessions"):
            _api(base, f"/api/sessions/{s['id']}", "DELETE")
        ctx.close()
        for s in (panel_srv, chat_srv, cut_srv):
            s.close()
