"""Model output is untrusted: make it inert in markdown *source* that we hand to front ends.

Jupyter renders a trusted ``text/markdown`` output with raw HTML kept, so a reply containing
``<img onerror=...>``, ``<script>`` or a ``javascript:`` link would become live markup in
``chat``'s repr or a saved notebook. `inert_markdown` keeps ordinary markdown (emphasis, lists,
code, http(s) links) and neutralises the rest: outside code, ``<`` becomes ``&lt;`` (no raw HTML,
no autolinks), ``![`` becomes ``!\\[`` (no image fetches), links to anything but http(s), mailto
and ``#`` lose their link syntax, and control / bidi-override characters become visible.
Code blocks and code spans are left alone: every renderer shows them as text.
"""

from __future__ import annotations

import re

__all__ = ["inert_markdown", "CONTROL_TABLE"]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK_TARGET = re.compile(r"\]\(\s*([^)\s]*)")
_REF_DEF = re.compile(r"^( {0,3})\[([^\]]+)\]:\s*(\S*)", re.M)
_SAFE = ("http://", "https://", "mailto:", "#")


def _controls() -> dict[int, str]:
    """str.translate table: C0/C1 controls become visible control pictures or U+FFFD, and bidi
    overrides (which make text read differently from what it is) become U+FFFD. One code
    point in, one out, so offsets into the text stay valid."""
    table = {c: chr(0x2400 + c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}
    table[0x7F] = "\u2421"
    for c in (*range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)):
        table[c] = "\ufffd"
    return table


CONTROL_TABLE = _controls()


def _safe_target(target: str) -> bool:
    return target.strip().lower().startswith(_SAFE)


def _inline(text: str) -> str:
    text = text.replace("<", "&lt;").replace("![", "!\\[")
    text = _LINK_TARGET.sub(
        lambda m: m.group(0) if _safe_target(m.group(1)) else "\\]\\(" + m.group(0)[2:], text
    )
    return _REF_DEF.sub(
        lambda m: (
            m.group(0)
            if _safe_target(m.group(3))
            else m.group(1) + "\\" + m.group(0)[len(m.group(1)) :]
        ),
        text,
    )


def inert_markdown(text: str) -> str:
    """Markdown source with the model's raw HTML, images and unsafe links neutralised."""
    text = text.translate(CONTROL_TABLE)
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if prose:
            chunk = "".join(prose)
            pieces = _CODE_SPAN.split(chunk)
            # split() yields [text, ticks, code, text, ticks, code, ...]
            for i in range(0, len(pieces), 3):
                out.append(_inline(pieces[i]))
                if i + 2 < len(pieces):
                    out.append(pieces[i + 1] + pieces[i + 2] + pieces[i + 1])
            prose.clear()

    for line in text.splitlines(keepends=True):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                flush()
                fence = m.group(1)[0] * len(m.group(1))
                out.append(line)
            else:
                prose.append(line)
        else:
            out.append(line)
            if m and m.group(1).startswith(fence):
                fence = None
    flush()
    return "".join(out)
