"""A finished comparison as one output bundle: what headless runs show and saved notebooks keep.

The nbchat panel document (one titled turn per variant: the extension draws it without a
kernel) and side-by-side HTML, markdown and text fallbacks (nbconvert, GitHub, VS Code).
"""

from __future__ import annotations

from typing import Any

__all__ = ["compare_bundle"]


def compare_bundle(comparison: Any) -> dict[str, Any]:
    """Every variant of a finished comparison: the nbchat panel document (one titled turn per
    variant) and side-by-side HTML, markdown and text fallbacks."""
    import html

    from .render import static_bundle
    from .saved import PANEL_MIME, doc_from_turn

    labels = comparison.labels()
    heads = [
        f"Variant {i + 1}: {label}" + (" (kept)" if i == comparison.kept else "")
        for i, label in enumerate(labels)
    ]
    parts = [static_bundle(t) for t in comparison.turns]
    docs = []
    for head, t in zip(heads, comparison.turns, strict=True):
        doc = doc_from_turn(t)
        doc["title"] = head
        docs.append(doc)
    cols = "".join(
        '<div class="nbchat-compare-col" style="flex:1 1 260px;min-width:0">'
        f"<div><strong>{html.escape(h)}</strong></div>{p['text/html']}</div>"
        for h, p in zip(heads, parts, strict=True)
    )
    footer = f"compared {len(parts)} variants"
    return {
        PANEL_MIME: {"turns": docs, "footer": footer},
        "text/html": '<div class="nbchat-compare" style="display:flex;flex-wrap:wrap;gap:8px">'
        + cols
        + "</div>",
        "text/markdown": "\n\n---\n\n".join(
            f"**{h}**\n\n{p['text/markdown']}" for h, p in zip(heads, parts, strict=True)
        ),
        "text/plain": "\n\n".join(
            f"== {h} ==\n{p['text/plain']}" for h, p in zip(heads, parts, strict=True)
        ),
    }
