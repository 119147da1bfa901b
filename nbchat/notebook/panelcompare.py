"""The panel's **Compare**: the prompt with the current settings next to the previous send's.

The previous send is the conversation's last turn: its request settings (``turn.params``) and
its backend. Only the settings the panel controls are compared (sliders, max_tokens, seed,
safety_mode, thinking, model, backend); when none differ, nothing is sent and the status says
so. Both variants run at once (`comparison.start_comparison`) into a `CompareView` appended to
the transcript; the first column (the previous settings) is the reply until Keep says otherwise.
"""

from __future__ import annotations

from typing import Any

from .flags import PANEL_FIELDS

__all__ = ["compare", "COMPARED"]

COMPARED = (*PANEL_FIELDS, "thinking", "model")


def _differences(prev: dict[str, Any], cur: dict[str, Any]) -> list[str]:
    keys = [k for k in COMPARED if prev.get(k) != cur.get(k)]
    return [k for k in keys if not (k == "model" and not cur.get(k))]  # unset: the backend's


def compare(panel: Any, prompt: str | None = None) -> Any:
    """Send `prompt` (default: the prompt box) as a two-column comparison; returns the view
    (None, with the reason in the status line, when nothing was sent)."""
    from ..comparison import start_comparison
    from ..errors import redact
    from .compareview import CompareView

    text = (prompt if prompt is not None else panel.prompt.value).strip()
    if not text:
        panel.status.value = "<small>Type a message first.</small>"
        return None
    last = panel.conversation.last
    if last is None or not last.done:
        panel.status.value = (
            "<small>Compare puts the current settings next to the previous send's: send "
            "once first.</small>"
        )
        return None
    try:
        params, backend, functions = panel._prepare()
    except Exception as exc:
        panel.status.value = _error_html(redact(str(exc)))
        return None
    prev = dict(last.params)
    bname, prev_bname = getattr(backend, "name", None), last.backend
    diff = _differences(prev, params)
    if not diff and (prev_bname in (None, bname)):
        panel.status.value = (
            "<small>Same settings as the previous send: change a slider (or the model) "
            "first.</small>"
        )
        return None
    before = dict(params)
    for k in diff:
        if k in prev:
            before[k] = prev[k]
        else:
            before.pop(k, None)
    prev_backend = backend
    varied_prev = {k: prev.get(k, "unset") for k in diff}
    varied_cur = {k: params.get(k, "unset") for k in diff}
    if prev_bname and prev_bname != bname:
        from ..backends import get_backend

        prev_backend = panel._backends.get(prev_bname) or get_backend(prev_bname)
        varied_prev["backend"], varied_cur["backend"] = prev_bname, bname
    variants = [(varied_prev, before, prev_backend), (varied_cur, params, backend)]
    view = CompareView(text, [v for v, _, _ in variants], [p for _, p, _ in variants], "panel")

    def done(handle: Any) -> None:
        view.all_done(handle)
        panel._update_footer()
        try:
            panel._refresh_display()
        except Exception:
            pass

    try:
        handle = start_comparison(
            panel.conversation,
            text,
            variants,
            listeners=view.listeners(),
            tools=functions or None,
            approve=view.approvers() if functions else None,
            on_all_done=done,
        )
    except Exception as exc:  # ValidationError: nothing sent, conversation unchanged
        panel.status.value = _error_html(redact(str(exc)))
        view.close()
        return None
    view.attach(handle)
    panel.compare_views.append(view)
    panel.transcript.children += (view,)
    if prompt is None:
        panel.prompt.value = ""
    panel.status.value = ""
    return view


def _error_html(text: str) -> str:  # as the panel's status line shows errors
    import html

    return f"<small style='color:var(--jp-error-color1, #c62828)'>{html.escape(text)}</small>"
