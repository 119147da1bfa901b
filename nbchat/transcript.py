"""A conversation as readable text: plain (``repr``) or markdown (``_repr_markdown_``).

Model text is untrusted: the markdown form goes through `untrusted.inert_markdown`, so raw
HTML in a reply is shown, never rendered.
"""

from __future__ import annotations

from typing import Any

from .protocol.messages import display_text
from .turn import Turn, format_number

__all__ = ["render"]


def render(turns: list[Turn], system: Any, usage: dict[str, Any], *, markdown: bool) -> str:
    """The transcript: a heading with the token totals, then every message of every turn
    (and, in markdown or for an unfinished turn, its one-line stats)."""
    n = len(turns)
    head = f"Conversation: {n} turn{'s' if n != 1 else ''}"
    tok = usage.get("tokens") or usage.get("billed_units") or {}
    if tok:
        head += (
            f", {format_number(tok.get('input_tokens'))} in / "
            f"{format_number(tok.get('output_tokens'))} out tokens"
        )
    lines = [f"**{head}**" if markdown else head]
    if system:
        sys_text = system if isinstance(system, str) else display_text({"content": system})
        lines.append(_block("system", sys_text, markdown))
    for i, t in enumerate(turns, 1):  # "turn 1" is the first of "N turns"
        snap = t.to_dict()
        for m in snap["input"] + snap["output"]:
            lines.append(_render_message(m, markdown))
        if snap["status"] != "complete" or markdown:
            note = f"turn {i}: {t.stats()}"
            lines.append(f"*{note}*" if markdown else f"  ({note})")
    if markdown:  # model text is untrusted: Jupyter renders raw HTML in markdown outputs
        from .untrusted import inert_markdown

        return inert_markdown("\n\n".join(lines))
    return "\n".join(lines)


def _block(label: str, text: str, markdown: bool) -> str:
    if markdown:
        return f"**{label}:** {text}" if "\n" not in text else f"**{label}:**\n\n{text}"
    return f"[{label}] {text}"


def _render_message(m: dict[str, Any], markdown: bool) -> str:
    role = m.get("role", "?")
    parts: list[str] = []
    if m.get("tool_plan"):
        parts.append(_block("plan", m["tool_plan"], markdown))
    text = display_text(m) if role != "tool" else ""
    if text or role in ("user", "system"):
        parts.append(_block(role, text, markdown))
    if role == "user":
        from .images import count_images, placeholder

        for block in count_images([m]):  # say what was sent, never the base64
            parts.append(_block("image", placeholder(block), markdown))
    for c in m.get("tool_calls") or []:
        fn = c.get("function") or {}
        call = f"{fn.get('name')}({fn.get('arguments')})"
        parts.append(_block("tool call", f"`{call}`" if markdown else call, markdown))
    if role == "tool":
        result = display_text(m)
        if len(result) > 500:
            result = result[:497] + "..."
        parts.append(_block("tool result", f"`{result}`" if markdown else result, markdown))
    if not parts:
        parts.append(_block(role, "", markdown))
    return ("\n\n" if markdown else "\n").join(parts)
