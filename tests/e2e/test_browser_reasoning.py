"""Real browser: a reasoning model's stream drives the live view (JupyterLab + Chromium).

The scripted v2 server replays tests/fixtures/built/va_reasoning_stream.sse (thinking block at
index 0, then the answer) slowly, so the test sees the thinking arrive live: into the collapsed
"Thinking" section, never into the answer body. Nothing may be fetched from the network.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_browser import TOKEN, cell, kernel_eval, lab, page, run_cell, shot  # noqa: F401
from v2server import V2Server, sse

pytestmark = pytest.mark.browser

BODY = (Path(__file__).parents[1] / "fixtures" / "built" / "va_reasoning_stream.sse").read_bytes()
THINKING_END = "I can calculate the answer directly."
ANSWER = "The answer to 2 + 2 is 4."


@pytest.fixture(scope="module")
def reasoning_server():
    srv = V2Server(default=sse(BODY, delay=0.04))
    yield srv
    srv.close()


def _notebook(root: Path, url: str) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    cells = [
        f"%load_ext nbchat\n%config NbChat.api_key = 'test-key'\n%config NbChat.base_url = {url!r}",
        "import numpy as np\nchart = np.zeros((120, 200, 3), dtype=np.uint8)\nchart[:, :100, 0] = 255",
        "%%chat -n rc --backend v2 --model command-a-reasoning-08-2025 --thinking on --image chart\n"
        "What is 2 + 2?",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    name = f"nbchat_reasoning_{time.monotonic_ns()}.ipynb"
    nbformat.write(nb, str(root / name))
    return name


def test_reasoning_stream_fills_the_collapsed_thinking_section(lab, page, reasoning_server):  # noqa: F811
    from playwright.sync_api import expect

    base, root = lab
    name = _notebook(root, reasoning_server.url)
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
    run_cell(page, 1)
    run_cell(page, 2)
    view = cell(page, 2).locator(".nbchat-turn")
    expect(view).to_be_visible(timeout=30_000)
    think = view.locator("details.nbchat-think")
    think_body = think.locator(".nbchat-think-body")
    body = view.locator(".nbchat-body")

    # while thinking streams: the section grows (several partial states), the body stays empty
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        thinking = think_body.text_content() or ""
        seen.append((len(thinking), len(body.text_content() or "")))
        if view.get_attribute("data-status") in ("done", "error", "stopped"):
            break
        page.wait_for_timeout(30)
    assert view.get_attribute("data-status") == "done", view.inner_text()
    during = sorted({t for t, b in seen if 0 < t and b == 0})
    assert len(during) >= 3, seen  # thinking arrived piece by piece before any answer text

    assert (think_body.text_content() or "").endswith(THINKING_END)
    assert think.get_attribute("open") is None  # collapsed by default
    assert not think_body.is_visible()
    assert body.inner_text().strip() == ANSWER
    assert "straightforward" not in body.inner_text()

    # the kernel keeps the thinking block in the assistant message, as Cohere takes it back
    msg = json.loads(kernel_eval(page, "import json; print(json.dumps(rc.messages[-1]))"))
    assert [b["type"] for b in msg["content"]] == ["thinking", "text"]
    user = json.loads(kernel_eval(page, "print(json.dumps(rc.messages[-2]))"))
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert msg["content"][0]["thinking"].endswith(THINKING_END)
    assert reasoning_server.last.json["model"] == "command-a-reasoning-08-2025"

    # the image sent is shown as a thumbnail made in the kernel (a data: URI, nothing fetched)
    thumb = view.locator(".nbchat-images img.nbchat-thumb")
    expect(thumb).to_have_count(1)
    assert thumb.get_attribute("src").startswith("data:image/png;base64,")
    size = thumb.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    assert size == [160, 96], size  # scaled down in the kernel, aspect kept
    sent = reasoning_server.last.json
    assert sent["thinking"] == {"type": "enabled"}
    assert [b["type"] for b in sent["messages"][-1]["content"]] == ["text", "image_url"]
    # stats: thinking and answer apart, cached input tokens shown
    stats = view.locator(".nbchat-stats").inner_text()
    assert "thinking 36 · answer 9" in stats and "1360 cached" in stats, stats
    assert think.locator("summary").inner_text() == "Thinking · 36 tokens"

    think.locator("summary").click()
    expect(think_body).to_be_visible()
    shot(page, "reasoning", view)
    assert page.errors == [], page.errors
    assert page.foreign == [], page.foreign  # nothing fetched from the network
