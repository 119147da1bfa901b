"""%%chat --image / --image-detail / --thinking / --thinking-budget and NbChat.defaults."""

from __future__ import annotations

import matplotlib
import numpy as np
from test_magics import CANARY, all_text, dry_request, ip, reply, run, server  # noqa: F401

from nbchat.images import image_block

matplotlib.use("Agg")


def test_image_flags_put_image_blocks_in_the_request(ip):  # noqa: F811
    ip.user_ns["arr"] = np.zeros((30, 40, 3), dtype=np.uint8)
    ip.run_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 1), dpi=50)")
    req = dry_request(
        ip, "--image arr --image ax --image 'https://x.org/a.png' --image-detail low", "What?"
    )
    content = req["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What?"}
    assert [b["type"] for b in content[1:]] == ["image_url"] * 3
    assert content[1] == image_block(ip.user_ns["arr"], "low")
    assert content[2]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[3] == {
        "type": "image_url",
        "image_url": {"url": "https://x.org/a.png", "detail": "low"},
    }


def test_image_flag_errors_name_the_flag(ip):  # noqa: F811
    ip.user_ns["notimg"] = {"a": 1}
    res, cap = run(ip, "%%chat --dry-run --image notimg\nWhat?")
    text = str(res.error_in_exec) + all_text(cap)
    assert "--image" in text and "builtins.dict" in text and "matplotlib Figure" in text
    res, cap = run(ip, "%%chat --dry-run --image missing_var\nWhat?")
    assert "--image: variable 'missing_var' is not defined" in str(res.error_in_exec)
    ip.user_ns["urls"] = ["https://x.org/a.png"] * 21
    flags = " ".join(f"--image urls[{i}]" for i in range(21))
    res, _ = run(ip, f"%%chat --dry-run {flags}\nWhat?")
    assert "--image" in str(res.error_in_exec) and "at most 20" in str(res.error_in_exec)


def test_thinking_flags(ip):  # noqa: F811
    assert dry_request(ip, "--thinking on", "Hi")["thinking"] == {"type": "enabled"}
    assert dry_request(ip, "--thinking off", "Hi")["thinking"] == {"type": "disabled"}
    req = dry_request(ip, "--thinking-budget 512", "Hi")
    assert req["thinking"] == {"type": "enabled", "token_budget": 512}
    res, _ = run(ip, "%%chat --dry-run --thinking off --thinking-budget 5\nHi")
    assert "--thinking-budget" in str(res.error_in_exec)
    res, _ = run(ip, "%%chat --dry-run --thinking-budget 0\nHi")
    assert "--thinking" in str(res.error_in_exec) and "token_budget" in str(res.error_in_exec)
    help_text = ip.find_cell_magic("chat").__doc__
    assert "--thinking" in help_text and "--image-detail" in help_text


def test_thinking_from_nbchat_defaults(ip):  # noqa: F811
    ip.run_line_magic(
        "config", "NbChat.defaults = {'thinking': {'type': 'enabled', 'token_budget': 100}}"
    )
    assert dry_request(ip, "", "Hi")["thinking"] == {"type": "enabled", "token_budget": 100}
    assert dry_request(ip, "--thinking off", "Hi")["thinking"] == {"type": "disabled"}


def test_embedded_engine_refuses_image_naming_flag_and_model(ip):  # noqa: F811
    ip.user_ns["arr"] = np.zeros((8, 8), dtype=np.uint8)
    res, cap = run(ip, "%%chat --backend local --image arr\nWhat is this?")
    err = str(res.error_in_exec)
    assert "--image" in err and "smollm2-135m" in err and "cannot see images" in err
    assert "chat" not in ip.user_ns or len(ip.user_ns["chat"]) == 0  # nothing recorded
    res, _ = run(ip, "%%chat --backend local --thinking on\nHi")
    err = str(res.error_in_exec)
    assert "--thinking" in err and "smollm2-135m" in err and "cannot reason" in err
