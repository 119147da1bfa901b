"""Model output -> safe HTML, and static mimebundles for runs without a live front end.

Model output is untrusted. `render_markdown` uses markdown-it-py's CommonMark preset with raw
HTML disabled, images disabled (a remote image is a request the reader never asked for, and a
classic exfiltration channel), links limited to http(s)/mailto/#fragment, and control or
bidi-override characters made visible instead of interpreted. Everything else is escaped text.
"""

from __future__ import annotations

import functools
import html
import json
import re
from typing import Any

from ..untrusted import CONTROL_TABLE

__all__ = [
    "render_markdown",
    "clean_text",
    "citation_title",
    "static_bundle",
    "turn_summary",
    "shown_params",
]

# Private-use code points mark citation positions while rendering; model text never keeps any
# (clean_text replaces them), so a marker in the output can only be ours.
_MARK_BASE = 0xE000
_MARK_RE = re.compile("[\ue000-\uf8ff]")
_TAG_OR_MARK = re.compile("(<[^>]*>)|([\ue000-\uf8ff])")
_SAFE_SCHEMES = ("http:", "https:", "mailto:")


def clean_text(text: str) -> str:
    """Make control, bidi-override and private-use characters visible and inert.

    One code point in, one code point out, so citation offsets stay valid.
    """
    return _MARK_RE.sub("\ufffd", text.translate(CONTROL_TABLE))


def _validate_link(url: str) -> bool:
    u = url.strip().lower()
    return u.startswith(_SAFE_SCHEMES) or u.startswith("#")


@functools.lru_cache(maxsize=1)
def _md() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])  # GFM tables: models answer with them all the time
    md.disable("image")  # ![alt](url) renders as "!" + a checked link: no automatic request
    md.validateLink = _validate_link  # type: ignore[method-assign]
    default_link_open = md.renderer.rules.get("link_open")

    def link_open(tokens, idx, options, env):  # noqa: ANN001 - markdown-it signature
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        if default_link_open is not None:
            return default_link_open(tokens, idx, options, env)
        return md.renderer.renderToken(tokens, idx, options, env)

    md.renderer.rules["link_open"] = link_open

    def cell_open(tokens, idx, options, env):  # noqa: ANN001 - markdown-it signature
        # column alignment as a class, not a style attribute: the front end drops all styles
        tok = tokens[idx]
        align = str(tok.attrGet("style") or "").removeprefix("text-align:")
        if align in ("left", "right", "center"):
            tok.attrs.pop("style", None)
            tok.attrSet("class", f"nbchat-al-{align}")
        return md.renderer.renderToken(tokens, idx, options, env)

    md.renderer.rules["th_open"] = cell_open
    md.renderer.rules["td_open"] = cell_open
    return md


def md_parser() -> Any:
    """The shared, configured MarkdownIt instance (for incremental block splitting)."""
    return _md()


def citation_title(citation: dict[str, Any]) -> str:
    """A short plain-text description of a citation's sources, for a hover tooltip."""
    parts = []
    for src in citation.get("sources") or []:
        if not isinstance(src, dict):
            continue
        sid = str(src.get("id") or src.get("type") or "source")
        data = src.get("document") or src.get("tool_output") or {}
        if isinstance(data, dict):
            title = data.get("title") or data.get("name") or ""
            body = data.get("snippet") or data.get("text") or data.get("output") or ""
            if not body:
                body = json.dumps({k: v for k, v in data.items() if k != "id"}, ensure_ascii=False)
        else:
            title, body = "", str(data)
        body = " ".join(str(body).split())
        if len(body) > 200:
            body = body[:197] + "..."
        parts.append(f"{sid}{' - ' + str(title) if title else ''}: {body}")
    cited = citation.get("text")
    head = f'"{cited}" ' if isinstance(cited, str) and cited else ""
    return clean_text(head + ("; ".join(parts) or "source"))


def sup_html(number: int, title: str) -> str:
    """The superscript shown for citation `number` (1-based), with its source on hover."""
    return f'<sup class="nbchat-cite" title="{html.escape(title, quote=True)}">[{number}]</sup>'


def insert_marks(text: str, marks: list[tuple[int, int]], start: int = 0) -> str:
    """Insert marker characters for `marks` [(offset, mark_id)] falling in text[start:]."""
    if not marks:
        return text
    out, pos = [], 0
    for off, mid in marks:
        rel = off - start
        if rel < 0 or rel > len(text):
            continue
        # never inside a word: a citation ending mid-word ("To|kyo") moves to the word's end
        while 0 < rel < len(text) and text[rel].isalnum() and text[rel - 1].isalnum():
            rel += 1
        rel = max(rel, pos)
        out.append(text[pos:rel])
        out.append(chr(_MARK_BASE + mid))
        pos = rel
    out.append(text[pos:])
    return "".join(out)


def replace_marks(rendered: str, sups: dict[int, str]) -> str:
    """Swap marker characters for superscripts, but only in text: a marker inside a tag
    (e.g. a link title attribute) is dropped, so it can never break out of the attribute."""
    if not _MARK_RE.search(rendered):
        return rendered

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return _MARK_RE.sub("", m.group(1))
        return sups.get(ord(m.group(2)) - _MARK_BASE, "")

    return _TAG_OR_MARK.sub(sub, rendered)


def render_source(src: str, sups: dict[int, str] | None = None) -> str:
    """Render already-cleaned markdown (possibly carrying citation markers) to HTML.

    A marker that lands in a URL would be percent/punycode-encoded into the link target, so
    the superscript would vanish and the link change: markers not found in text context are
    removed from the source and the block is rendered again.
    """
    out = _md().render(src)
    if not sups and not _MARK_RE.search(src):
        return out
    wanted = set(_MARK_RE.findall(src))
    found = {m.group(2) for m in _TAG_OR_MARK.finditer(out) if m.group(2)}
    lost = wanted - found
    if lost:
        src = "".join(ch for ch in src if ch not in lost)
        out = _md().render(src)
    return replace_marks(out, sups or {})


def render_markdown(text: str, citations: list[dict[str, Any]] | None = None) -> str:
    """Untrusted markdown -> sanitised HTML (raw HTML, images and unsafe links disabled).

    `citations` (v2 citation dicts with code-point `start`/`end`) become superscripts after
    the cited text, with the sources in the `title` tooltip.
    """
    text = clean_text(text or "")
    marks: list[tuple[int, int]] = []
    sups: dict[int, str] = {}
    for i, c in enumerate(citations or []):
        end = c.get("end")
        if isinstance(end, int) and 0 <= end <= len(text) and i < 0x1800:
            marks.append((end, i))
            sups[i] = sup_html(i + 1, citation_title(c))
    marks.sort()
    return render_source(insert_marks(text, marks), sups)


# -- the parameter chips of a view's header ------------------------------------------------------
def shown_params(
    params: dict[str, Any], tools: list[Any] | None = None, *, hide_defaults: bool = False
) -> dict[str, Any]:
    """The request parameters as chips: scalars, lists and dicts summarised, the model left
    out (it is in the title). `hide_defaults` drops values equal to the API's defaults (the
    panel sends every slider; listing 0.75, 0 and CONTEXTUAL on every turn is noise)."""
    from ..protocol.request import DEFAULTS

    shown: dict[str, Any] = {}
    for key, value in params.items():
        if key in ("model", "messages", "system", "tools", "stream"):
            continue
        if hide_defaults and DEFAULTS.get(key, object()) == value:
            continue
        if key in ("documents", "images") and isinstance(value, list):
            shown[key] = len(value)
        elif key == "thinking" and isinstance(value, dict):
            on = value.get("type") == "enabled"
            budget = value.get("token_budget")
            shown[key] = ("on" if on else "off") + (f" ≤{budget}" if on and budget else "")
        elif key == "response_format" and isinstance(value, dict):
            shown[key] = str(value.get("type", "")) + (
                " + schema" if value.get("json_schema") else ""
            )
        elif key == "citation_options" and isinstance(value, dict):
            shown["citations"] = value.get("mode", "")
        elif isinstance(value, (list, dict)):
            shown[key] = json.dumps(value, ensure_ascii=False, default=str)[:200]
        else:
            shown[key] = value
    names = [_tool_name(t) for t in [*(params.get("tools") or []), *(tools or [])]]
    if names:
        shown["tools"] = ", ".join(names)
    return shown


def _tool_name(tool: Any) -> str:
    if isinstance(tool, dict):
        return str((tool.get("function") or {}).get("name") or "tool")
    return str(getattr(tool, "__name__", "tool"))


# -- static output (no live front end) ---------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _text_of(message: Any) -> str:
    from ..protocol.request import message_text

    return message_text(message) if isinstance(message, dict) else ""


def turn_summary(turn: Any) -> dict[str, Any]:
    """Duck-typed view of a Turn (object or dict): prompt, reply, tool steps, stats."""
    messages = _get(turn, "messages") or []
    prompt = _get(turn, "prompt")
    if prompt is None:
        user = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
        prompt = _text_of(user) if user else ""
    response = _get(turn, "response") or {}
    assistants = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    final = response.get("message") if isinstance(response, dict) else None
    if not final and assistants:
        final = assistants[-1]
    text = _get(turn, "text")
    if not isinstance(text, str):
        text = _text_of(final)
    calls = []
    for m in assistants:
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function") or {}
            calls.append((fn.get("name") or "?", fn.get("arguments") or "{}"))
    usage = _get(turn, "usage") or (response.get("usage") if isinstance(response, dict) else None)
    finish = _get(turn, "finish_reason") or (
        response.get("finish_reason") if isinstance(response, dict) else None
    )
    cits = (final or {}).get("citations") or _get(turn, "citations") or []
    return {
        "prompt": str(prompt or ""),
        "text": text or "",
        "citations": [c for c in cits if c.get("type") != "THINKING_CONTENT"],
        "thinking_citations": [c for c in cits if c.get("type") == "THINKING_CONTENT"],
        "tool_plan": "\n".join(m["tool_plan"] for m in assistants if m.get("tool_plan")),
        "tool_calls": calls,
        "finish_reason": finish,
        "usage": usage if isinstance(usage, dict) else None,
        "cancelled": bool(_get(turn, "cancelled", False)),
        "error": _get(turn, "error"),
        "model": (_get(turn, "params") or {}).get("model") or _get(turn, "model"),
        "omitted": _get(turn, "omitted") or 0,
    }


def _stats_text(s: dict[str, Any]) -> str:
    bits = []
    usage = s.get("usage") or {}
    toks = usage.get("tokens") or usage.get("billed_units") or {}
    if toks:
        bits.append(
            f"{toks.get('input_tokens', '?')} in / {toks.get('output_tokens', '?')} out tokens"
        )
    if s["cancelled"]:
        bits.append("stopped")
    elif s["finish_reason"]:
        bits.append(str(s["finish_reason"]))
    if s.get("model"):
        bits.insert(0, str(s["model"]))
    if s.get("omitted"):
        from ..turn import omitted_note

        bits.append(omitted_note(int(s["omitted"])))
    return " · ".join(bits)


def static_bundle(turn: Any) -> dict[str, str]:
    """A complete text/plain + text/markdown + text/html bundle for one finished turn.

    Used when no live front end exists (nbclient, nbconvert, terminal IPython) and as the
    fallback representation of a live view, so saved notebooks read well without widget state.
    """
    from ..errors import redact
    from ..untrusted import inert_markdown

    s = turn_summary(turn)
    text = clean_text(s["text"])
    # a stopped turn is not an error: it reads as stopped, like the live view
    error = redact(str(s["error"])) if s["error"] and not s["cancelled"] else ""
    note = ""
    if s["cancelled"]:
        note = "■ Stopped — partial reply kept"
    elif s["finish_reason"] == "MAX_TOKENS":
        note = "✂ reply cut off here: max_tokens reached"
    stats = _stats_text(s)

    plain = [f"User: {s['prompt']}"]
    if s["tool_plan"]:
        plain.append(f"Plan: {s['tool_plan']}")
    plain += [f"Tool call: {n}({a})" for n, a in s["tool_calls"]]
    plain.append(f"Assistant: {text}")
    if note:
        plain.append(note)
    for i, c in enumerate(s["citations"]):
        plain.append(f"[{i + 1}] {citation_title(c)}")
    for c in s["thinking_citations"]:
        plain.append(f"[thinking] {citation_title(c)}")
    if error:
        plain.append(f"Error: {error}")
    if stats:
        plain.append(f"({stats})")

    quoted = "\n".join("> " + line for line in s["prompt"].splitlines() or [""])
    md = [quoted, ""]
    if s["tool_plan"]:
        md += [f"*Plan:* {s['tool_plan']}", ""]
    md += [f"- tool call `{n}` `{a}`" for n, a in s["tool_calls"]]
    if s["tool_calls"]:
        md.append("")
    md.append(text)
    if note:
        md += ["", f"*{note}*"]
    if s["citations"]:
        md.append("")
        md += [f"{i + 1}. {citation_title(c)}" for i, c in enumerate(s["citations"])]
    if s["thinking_citations"]:
        md += ["", "*Cited in the thinking:*"]
        md += [f"- {citation_title(c)}" for c in s["thinking_citations"]]
    if error:
        md += ["", f"**Error:** {error}"]
    if stats:
        md += ["", f"*{stats}*"]

    body = render_markdown(s["text"], s["citations"])
    parts = [
        '<div class="nbchat-static" style="border-left:3px solid var(--jp-brand-color1, #39c);'
        'padding:2px 10px;margin:4px 0">',
        f'<div class="nbchat-prompt" style="font-weight:600;white-space:pre-wrap">'
        f"{html.escape(s['prompt'])}</div>",
    ]
    if s["tool_plan"]:
        parts.append(f"<p><em>Plan:</em> {html.escape(s['tool_plan'])}</p>")
    for n, a in s["tool_calls"]:
        parts.append(
            f"<p>tool call <code>{html.escape(n)}</code> <code>{html.escape(a)}</code></p>"
        )
    parts.append(f'<div class="nbchat-body" style="overflow-wrap:anywhere">{body}</div>')
    if note:
        parts.append(f'<p class="nbchat-note"><em>{html.escape(note)}</em></p>')
    if s["citations"]:
        items = "".join(f"<li>{html.escape(citation_title(c))}</li>" for c in s["citations"])
        parts.append(f'<ol class="nbchat-sources">{items}</ol>')
    if error:
        parts.append(f'<p class="nbchat-error"><strong>Error:</strong> {html.escape(error)}</p>')
    if stats:
        parts.append(
            '<p class="nbchat-stats" style="margin:2px 0;opacity:0.7">'
            f"<small>{html.escape(stats)}</small></p>"
        )
    parts.append("</div>")
    return {
        "text/plain": "\n".join(plain),
        "text/markdown": inert_markdown("\n".join(md)),
        "text/html": "".join(parts),
    }
