"""What a saved notebook keeps of a turn or a panel, so it reads without a kernel.

Every live view (and the panel) is displayed as one bundle: the widget reference, the turn
itself as ``application/vnd.nbchat.turn+json`` (panel: ``application/vnd.nbchat.panel+json``),
and ``text/html`` + ``text/markdown`` + ``text/plain``. The nbchat front-end extension
(labext/, shipped prebuilt in the wheel) prefers the nbchat mimetype: it draws the turn with
the same view code as the widget, and swaps in the live widget while its model exists in the
kernel. Front ends without the extension (nbconvert, GitHub, VS Code) use the HTML/markdown.
No JS or CSS is stored per output: a turn costs its text, a few hundred bytes more.
"""

from __future__ import annotations

from typing import Any

from .kernel import parent_message, publish
from .render import clean_text, render_markdown, static_bundle, turn_summary

TURN_MIME = "application/vnd.nbchat.turn+json"
PANEL_MIME = "application/vnd.nbchat.panel+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def turn_doc(prompt: str, title: str, params: dict[str, Any], state: dict[str, Any]) -> dict:
    """The nbchat turn document: what js/view.js needs to draw a turn (no kernel)."""
    return {"prompt": prompt, "title": title, "params": params, "state": state}


def doc_from_turn(turn: Any) -> dict[str, Any]:
    """A turn document for a finished Turn that had no live view (e.g. loaded history)."""
    s = turn_summary(turn)
    toks = (s["usage"] or {}).get("tokens") or (s["usage"] or {}).get("billed_units") or {}
    stats: dict[str, Any] = {"tokens": int(toks.get("output_tokens") or 0)}
    if toks.get("input_tokens") is not None:
        stats["input_tokens"] = int(toks["input_tokens"])
    if s["finish_reason"]:
        stats["finish"] = s["finish_reason"]
    status = "stopped" if s["cancelled"] else ("error" if s["error"] else "done")
    meta: dict[str, Any] = {"status": status, "stats": stats}
    if s["error"] and not s["cancelled"]:
        from ..errors import redact

        meta["error"] = redact(str(s["error"]))
    if s["tool_calls"]:
        meta["calls"] = [{"name": clean_text(n), "args": clean_text(a)} for n, a in s["tool_calls"]]
    state = {
        "s": 1,
        "blocks": [render_markdown(s["text"], s["citations"])] if s["text"] else [],
        "tail": "",
        "meta": meta,
        "plan": clean_text(s["tool_plan"]),
        "think": "",
        "lp": [],
        "n": stats["tokens"],
    }
    params = {"model": s["model"]} if s["model"] else {}
    return turn_doc(clean_text(s["prompt"]), "", params, state)


def panel_bundle(docs: list[dict[str, Any]], turns: list[Any], footer: str) -> dict[str, Any]:
    """The panel's saved transcript: nbchat panel document + HTML/markdown/plain fallbacks."""
    parts = [static_bundle(t) for t in turns]
    head = f"nbchat panel · {footer}" if footer else "nbchat panel"
    return {
        PANEL_MIME: {"turns": docs, "footer": footer},
        "text/html": f"<div class='nbchat-panel-saved'><p><small>{_esc(head)}</small></p>"
        + "".join(p["text/html"] for p in parts)
        + "</div>",
        "text/markdown": "\n\n---\n\n".join([f"*{head}*"] + [p["text/markdown"] for p in parts]),
        "text/plain": "\n\n".join([head] + [p["text/plain"] for p in parts]),
    }


class SavedPanelDisplay:
    """Panel display: the widget + its saved transcript, kept up to date under a display id.

    Needs `views` (TurnViews), `_earlier` (turns before the panel), `_lock` on the panel.
    """

    _display_handle: Any = None
    _display_parent: Any = None

    def _saved_bundle(self) -> dict[str, Any]:
        with self._lock:
            views = list(self.views)
        docs = [doc_from_turn(t) for t in self._earlier] + [v.doc() for v in views]
        turns = list(self._earlier) + [v._as_turn() for v in views]
        n = len(docs)
        return panel_bundle(docs, turns, f"{n} turn{'' if n == 1 else 's'}")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)
        saved = self._saved_bundle()
        data = {**saved, **dict(data or {}), "text/plain": saved["text/plain"]}
        return (data, meta) if meta is not None else data

    def _ipython_display_(self) -> None:
        """Display with a display id, so each finished turn updates the saved transcript."""
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        self._display_parent = parent_message()
        self._display_handle = display(data, metadata=meta or {}, raw=True, display_id=True)

    def _refresh_display(self) -> None:
        handle = self._display_handle
        if handle is None:
            return
        bundle = self._repr_mimebundle_()
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        content = {
            "data": data,
            "metadata": meta or {},
            "transient": {"display_id": handle.display_id},
        }
        if self._display_parent and publish(
            self._display_parent, "update_display_data", content, b"display_data"
        ):
            return
        handle.update(data, metadata=meta or {}, raw=True)


def _esc(s: str) -> str:
    import html

    return html.escape(s)
