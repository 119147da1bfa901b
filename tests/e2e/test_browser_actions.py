"""Real browser (JupyterLab 4 and Notebook 7): "Insert below" on a code block of the live view
and Continue / Regenerate buttons, the panel prompt keys (Enter sends, Shift+Enter a new line).
and ``%%chat --code`` create a new code cell below the chat cell holding exactly the code,
through the prebuilt nbchat extension (nbchat/labextension) on the Jupyter path."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from test_browser import TOKEN, _slow_reply  # noqa: E402
from test_browser_saved import RUN_CELL, _api, _wait_open, browser, server  # noqa: E402, F401
from v2server import V2Server  # noqa: E402

CODE = "print('INSERTED-42')\nx = {'a': 1}  # <b>not html</b>"
PIECES = ["Here you go:\n\n", "```python\n", "print('INSERTED-42')\n", "x = {'a': 1}  # <b>not html</b>\n", "```\n\n", "DONE"]  # fmt: skip


@pytest.fixture(scope="module")
def code_server():
    srv = V2Server(default=_slow_reply(PIECES, 0.02))
    yield srv
    srv.close()


def _notebook(root: Path, url: str) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [
        f"%load_ext nbchat\n%config NbChat.api_key = 'test-key'\n%config NbChat.base_url = {url!r}\n"
        "%config NbChat.model = 'command-a-03-2025'",
        "%%chat --backend v2\nGive me code.",
        "%%chat --backend v2 --code\nGive me code again.",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    name = f"nbchat_actions_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    return name


SOURCES = "() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells.map((c) => [c.cell_type, c.getSource()])"


def _sources(page: Any) -> list[list[str]]:
    return page.evaluate(SOURCES)


@pytest.mark.parametrize("front_end", ["lab", "notebook7"])
def test_insert_below_and_code_flag(server, browser, code_server, front_end) -> None:  # noqa: F811
    from playwright.sync_api import expect

    base, root = server
    name = _notebook(root, code_server.url)
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
        page.evaluate(RUN_CELL, 0)
        page.evaluate(RUN_CELL, 1)
        turn = cells.nth(1).locator(".nbchat-turn")
        expect(turn).to_have_attribute("data-status", "done", timeout=30_000)
        assert len(_sources(page)) == 3
        insert = turn.locator("button.nbchat-insert")
        expect(insert).to_have_count(1)
        expect(turn.locator("button.nbchat-copy")).to_have_count(1)
        insert.click()
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells.length === 4"
        )
        assert _sources(page)[2] == ["code", CODE]  # right below the chat cell, exactly the code
        assert _sources(page)[3][1].startswith("%%chat --backend v2 --code")

        # --code: when the turn completes, its first code block lands below that cell
        page.evaluate(RUN_CELL, 3)
        turn3 = cells.nth(3).locator(".nbchat-turn")
        expect(turn3).to_have_attribute("data-status", "done", timeout=30_000)
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells.length === 5",
            timeout=15_000,
        )
        assert _sources(page)[4] == ["code", CODE]
        ours = [e for e in errors if "notebook_core" not in e]
        assert ours == [], errors
    finally:
        for s in _api(base, "/api/sessions"):
            _api(base, f"/api/sessions/{s['id']}", "DELETE")
        ctx.close()


def _reply(pieces: list[str], finish: str = "COMPLETE") -> Any:
    from v2server import events_body, sse, text_events

    return sse(events_body(text_events(pieces, finish_reason=finish)), delay=0.02)


@pytest.mark.parametrize("front_end", ["lab", "notebook7"])
def test_continue_and_regenerate_buttons(server, browser, front_end) -> None:  # noqa: F811
    from playwright.sync_api import expect

    base, root = server
    srv = V2Server()
    srv.push(_reply(["```python\n", "def f(x):\n", "    return"], finish="MAX_TOKENS"))
    srv.push(_reply([" x * 2\n", "```\n", "CONTINUED"]))
    srv.push(_reply(["REGENERATED ", "reply"]))
    name = _notebook(root, srv.url)
    url = f"{base}/lab/tree/{name}?token={TOKEN}&reset"
    if front_end == "notebook7":
        url = f"{base}/notebooks/{name}?token={TOKEN}"
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = ctx.new_page()
    try:
        page.goto(url)
        _wait_open(page, name, kernel=True)
        cells = page.locator(".jp-Notebook .jp-Cell")
        page.evaluate(RUN_CELL, 0)
        page.evaluate(RUN_CELL, 1)
        turn = cells.nth(1).locator(".nbchat-turn")
        expect(turn).to_have_attribute("data-status", "done", timeout=30_000)
        cont = turn.locator("button.nbchat-continue")
        expect(cont).to_be_visible()
        cont.click()
        expect(turn.locator(".nbchat-body")).to_contain_text("CONTINUED", timeout=30_000)
        expect(turn).to_have_attribute("data-status", "done", timeout=30_000)
        # the same turn grew: one code block holding the whole function, no Continue any more
        expect(turn.locator(".nbchat-body pre")).to_have_count(1)
        expect(turn.locator(".nbchat-body pre")).to_contain_text("return x * 2")
        expect(cont).to_be_hidden()
        regen = turn.locator("button.nbchat-regenerate")
        expect(regen).to_be_visible()
        regen.click()
        expect(turn.locator(".nbchat-body")).to_contain_text("REGENERATED reply", timeout=30_000)
        expect(turn).to_have_attribute("data-status", "done", timeout=30_000)
        expect(turn.locator(".nbchat-body")).not_to_contain_text("CONTINUED")
        chats = [r for r in srv.requests if r.path == "/v2/chat"]
        assert len(chats) == 3
        assert chats[1].json["messages"][-1]["role"] == "user"  # "continue ..."
        assert chats[2].json["messages"] == [{"role": "user", "content": "Give me code."}]
    finally:
        for s in _api(base, "/api/sessions"):
            _api(base, f"/api/sessions/{s['id']}", "DELETE")
        ctx.close()
        srv.close()


@pytest.mark.parametrize("front_end", ["lab", "notebook7"])
def test_panel_enter_sends_shift_enter_new_line(server, browser, front_end) -> None:  # noqa: F811
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from playwright.sync_api import expect

    base, root = server
    srv = V2Server(default=_reply(["Panel ", "PANEL-OK"]))
    nb = new_notebook(
        cells=[
            new_code_cell(
                "import nbchat\nfrom nbchat.backends import get_backend\n"
                f"panel = nbchat.Panel(nbchat.Conversation(), get_backend('v2', base_url={srv.url!r}, "
                "api_key='k'), model='command-a-03-2025')\npanel"
            )
        ]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    name = f"nbchat_panelkeys_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    url = f"{base}/lab/tree/{name}?token={TOKEN}&reset"
    if front_end == "notebook7":
        url = f"{base}/notebooks/{name}?token={TOKEN}"
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = ctx.new_page()
    try:
        page.goto(url)
        _wait_open(page, name, kernel=True)
        page.evaluate(RUN_CELL, 0)
        box = page.locator(".nbchat-panel textarea.nbchat-prompt-input")
        expect(box).to_be_visible(timeout=30_000)
        box.click()
        box.type("first line")
        box.press("Shift+Enter")  # a new line, nothing sent
        box.type("second")
        page.wait_for_timeout(300)
        assert [r for r in srv.requests if r.path == "/v2/chat"] == []
        box.press("Enter")
        turns = page.locator(".nbchat-panel .nbchat-panel-transcript .nbchat-turn")
        expect(turns).to_have_count(1, timeout=30_000)
        expect(turns.nth(0)).to_have_attribute("data-status", "done", timeout=30_000)
        chats = [r for r in srv.requests if r.path == "/v2/chat"]
        assert chats[0].json["messages"][-1] == {"role": "user", "content": "first line\nsecond"}
        box.click()
        box.type("again")
        box.press("Control+Enter")  # sends too (and never runs the notebook cell)
        expect(turns).to_have_count(2, timeout=30_000)
        expect(turns.nth(1)).to_have_attribute("data-status", "done", timeout=30_000)
        assert len(_sources(page)) == 1
        assert page.locator(".nbchat-panel").count() == 1  # the cell was not re-run
    finally:
        for s in _api(base, "/api/sessions"):
            _api(base, f"/api/sessions/{s['id']}", "DELETE")
        ctx.close()
        srv.close()
