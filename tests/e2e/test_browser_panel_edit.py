"""Real browser (JupyterLab 4): the panel's Edit and resend, and Regenerate on a panel turn."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from test_browser import TOKEN  # noqa: E402
from test_browser_actions import _reply  # noqa: E402
from test_browser_saved import RUN_CELL, _api, _wait_open, browser, server  # noqa: E402, F401
from v2server import V2Server  # noqa: E402


def test_panel_edit_and_resend_then_regenerate(server, browser) -> None:  # noqa: F811
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
    name = f"nbchat_paneledit_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = ctx.new_page()
    try:
        page.goto(f"{base}/lab/tree/{name}?token={TOKEN}&reset")
        _wait_open(page, name, kernel=True)
        page.evaluate(RUN_CELL, 0)
        panel = page.locator(".nbchat-panel")
        box = panel.locator("textarea.nbchat-prompt-input")
        expect(box).to_be_visible(timeout=30_000)
        turns = panel.locator(".nbchat-panel-transcript .nbchat-turn")
        for i, text in enumerate(["first question", "second question"]):
            box.click()
            box.type(text)
            box.press("Enter")
            expect(turns).to_have_count(i + 1, timeout=30_000)
            expect(turns.nth(i)).to_have_attribute("data-status", "done", timeout=30_000)
        panel.locator(".nbchat-panel-edit-turn select").select_option(label="1: first question")
        panel.locator("button.nbchat-panel-edit").click()
        expect(box).to_have_value("first question", timeout=10_000)
        expect(panel.locator("button.nbchat-panel-send")).to_contain_text("Resend")
        box.fill("first question, edited")
        srv.push(_reply(["EDITED ", "reply"]))
        panel.locator("button.nbchat-panel-send").click()
        expect(turns).to_have_count(1, timeout=30_000)  # the later turn left the transcript
        expect(turns.nth(0)).to_have_attribute("data-status", "done", timeout=30_000)
        expect(turns.nth(0).locator(".nbchat-body")).to_contain_text("EDITED reply")
        chats = [r for r in srv.requests if r.path == "/v2/chat"]
        assert chats[-1].json["messages"] == [{"role": "user", "content": "first question, edited"}]
        # Regenerate on the (last) panel turn: the same view shows the new reply
        srv.push(_reply(["REGENERATED ", "reply"]))
        regen = turns.nth(0).locator("button.nbchat-regenerate")
        expect(regen).to_be_visible(timeout=10_000)
        regen.click()
        expect(turns.nth(0).locator(".nbchat-body")).to_contain_text(
            "REGENERATED reply", timeout=30_000
        )
        chats = [r for r in srv.requests if r.path == "/v2/chat"]
        assert len(chats) == 4
        assert chats[-1].json["messages"] == [{"role": "user", "content": "first question, edited"}]
    finally:
        for s in _api(base, "/api/sessions"):
            _api(base, f"/api/sessions/{s['id']}", "DELETE")
        ctx.close()
        srv.close()
