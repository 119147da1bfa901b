"""Real browser (JupyterLab 4): ``%%chat --compare`` streams two columns at once (both grow
before either finishes), **Keep this** makes the clicked column the turn's reply, and the saved
notebook shows the comparison without a kernel (the nbchat extension's document)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from test_browser import KERNEL_EVAL, _slow_reply  # noqa: E402
from test_browser_saved import RUN_CELL, _api, _wait_open, browser, server  # noqa: E402, F401
from v2server import V2Server  # noqa: E402


class ByTemperature(V2Server):
    """COLD words for temperature 0.2, HOT words for 0.9, each trickling for ~2 s."""

    def _next(self, rec: Any) -> Any:
        with self._lock:
            self.requests.append(rec)
        hot = (rec.json or {}).get("temperature") == 0.9
        return _slow_reply([f"{'HOT' if hot else 'COLD'}{i} " for i in range(40)], 0.05)


GROWING = """() => {
  const turns = [...document.querySelectorAll('.nbchat-compare .nbchat-turn')];
  if (turns.length !== 2) return false;
  return turns.every((t) => (t.querySelector('.nbchat-body')?.textContent || '').length > 0
    && t.getAttribute('data-status') !== 'done');
}"""


def test_compare_columns_stream_at_once_and_keep(server, browser) -> None:  # noqa: F811
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from playwright.sync_api import expect

    base, root = server
    srv = ByTemperature()
    cells = [
        f"%load_ext nbchat\n%config NbChat.api_key = 'test-key'\n%config NbChat.base_url = "
        f"{srv.url!r}\n%config NbChat.model = 'command-a-03-2025'",
        "%%chat --backend v2 --compare temperature=0.2,0.9\nSay words.",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    name = f"nbchat_compare_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = ctx.new_page()
    try:
        page.goto(f"{base}/lab/tree/{name}?token=nbchat-e2e&reset")
        _wait_open(page, name, kernel=True)
        page.evaluate(RUN_CELL, 0)
        page.evaluate(RUN_CELL, 1)
        turns = page.locator(".nbchat-compare .nbchat-turn")
        expect(turns).to_have_count(2, timeout=60_000)
        # both columns hold text while neither has finished: they stream at the same time
        page.wait_for_function(GROWING, timeout=30_000)
        cols = page.locator(".nbchat-compare-col")
        expect(cols.nth(0)).to_contain_text("temperature=0.2")
        expect(cols.nth(1)).to_contain_text("temperature=0.9")
        for i in range(2):
            expect(turns.nth(i)).to_have_attribute("data-status", "done", timeout=30_000)
        expect(turns.nth(0).locator(".nbchat-body")).to_contain_text("COLD39")
        expect(turns.nth(1).locator(".nbchat-body")).to_contain_text("HOT39")
        box0, box1 = cols.nth(0).bounding_box(), cols.nth(1).bounding_box()
        assert box0 and box1 and box1["x"] > box0["x"] + 100  # side by side in a wide cell
        page.set_viewport_size({"width": 560, "height": 1400})  # a narrow cell: stacked
        page.wait_for_function(
            """() => { const c = [...document.querySelectorAll('.nbchat-compare-col')];
              return c.length === 2 && c[1].getBoundingClientRect().top
                > c[0].getBoundingClientRect().bottom - 1; }""",
            timeout=10_000,
        )
        page.set_viewport_size({"width": 1280, "height": 1400})
        keep = page.locator("button.nbchat-keep")
        expect(keep.nth(0)).to_have_text("✓ Kept")
        expect(keep.nth(1)).to_be_enabled(timeout=10_000)
        keep.nth(1).click()
        expect(keep.nth(1)).to_have_text("✓ Kept", timeout=10_000)
        out = page.evaluate(
            KERNEL_EVAL,
            "print(chat.last.comparison.kept, chat.messages[-1]['content'][0]['text'][:4],"
            " [a.text[:4] for a in chat.last.alternatives])",
        )
        assert out.strip() == "1 HOT0 ['COLD']", out
        assert sorted(r.json["temperature"] for r in srv.requests if r.path == "/v2/chat") == [
            0.2,
            0.9,
        ]
        # saved notebook, kernel gone: the extension draws the comparison from its document
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        deadline = time.monotonic() + 20
        while "(kept)" not in (root / name).read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Variant 2: temperature=0.9 (kept)" in (root / name).read_text()
        for s in _api(base, "/api/sessions"):
            if s.get("path", "").endswith(name):
                _api(base, f"/api/sessions/{s['id']}", "DELETE")
        page.reload()
        _wait_open(page, name, kernel=False)
        saved = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".nbchat-saved-panel")
        expect(saved).to_contain_text("COLD39", timeout=30_000)
        expect(saved).to_contain_text("HOT39")
        expect(saved).to_contain_text("temperature=0.9 (kept)")
        page.wait_for_timeout(3_000)
        assert "Error displaying widget" not in page.evaluate("() => document.body.innerText")
    finally:
        for s in _api(base, "/api/sessions"):
            _api(base, f"/api/sessions/{s['id']}", "DELETE")
        ctx.close()
        srv.close()
