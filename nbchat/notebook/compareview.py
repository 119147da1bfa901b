"""The live view of a ``%%chat --compare`` turn: one `TurnView` column per variant.

Columns sit side by side and wrap (a narrow cell stacks them); each is labelled with what
differs and keeps the TurnView's own stats (tokens, tok/s, TTFT, finish reason) and Stop; under
each, **Keep this** makes that variant the turn's reply. The header holds the prompt and one
**Stop all**. When every variant is done, the displayed bundle is updated in place with the
comparison's saved form (`comparebundle.compare_bundle`), so a saved notebook shows it without
the widget state.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from .render import clean_text
from .view import TurnView

__all__ = ["CompareView"]

_KEPT = "✓ Kept"
_KEEP = "Keep this"


class _ColumnHandle:
    """What a column's TurnView calls on Stop: cancel that variant only."""

    def __init__(self, handle: Any, index: int) -> None:
        self.handle, self.index = handle, index

    def cancel(self, reason: str = "cancelled") -> Any:
        return self.handle.cancel_variant(self.index, reason)


class CompareView(w.VBox):
    """Columns of TurnViews; feed variant i through ``listeners()[i]``."""

    def __init__(
        self,
        prompt: str,
        varied: list[dict[str, Any]],
        params: list[dict[str, Any]],
        name: str,
    ) -> None:
        from ..comparison import variant_label

        self.labels = [variant_label(v) for v in varied]
        self.views = [
            TurnView("", params=p, title=f"{i + 1} · {label}", refresh_fallback=False)
            for i, (label, p) in enumerate(zip(self.labels, params, strict=True))
        ]
        self.keep_buttons = [
            w.Button(description=_KEPT if i == 0 else _KEEP, disabled=True, tooltip=label)
            for i, label in enumerate(self.labels)
        ]
        for i, b in enumerate(self.keep_buttons):
            b.add_class("nbchat-keep")
            b.on_click(lambda _b, i=i: self.keep(i))
        self.stop_all = w.Button(description="Stop all", button_style="warning")
        self.stop_all.add_class("nbchat-stop-all")
        self.stop_all.on_click(lambda _b: self.stop())
        columns = [
            w.VBox(
                [w.HTML(f"<b>{_esc(label)}</b>"), view, btn],
                layout=w.Layout(flex="1 1 300px", min_width="260px", overflow="hidden"),
            )
            for label, view, btn in zip(self.labels, self.views, self.keep_buttons, strict=True)
        ]
        for c in columns:
            c.add_class("nbchat-compare-col")
        self.grid = w.Box(
            columns, layout=w.Layout(display="flex", flex_flow="row wrap", grid_gap="8px")
        )
        self.grid.add_class("nbchat-compare")
        head = w.HBox(
            [w.HTML(f"<b>{_esc(name)}</b> · compare {len(varied)} variants"), self.stop_all]
        )
        note = w.HTML(f"<div style='white-space:pre-wrap'>{_esc(prompt)}</div>")
        super().__init__([head, note, self.grid])
        self.handle: Any = None
        self._display_handle: Any = None
        self._comparison: Any = None
        from .kernel import parent_message

        self._parent = parent_message()

    # -- wiring (main thread) ------------------------------------------------------------------
    def listeners(self) -> list[Any]:
        return [v.listener() for v in self.views]

    def approvers(self) -> list[Any]:
        """Tool calls are approved in their own column."""
        return [v.approve for v in self.views]

    def attach(self, handle: Any) -> None:
        self.handle = handle
        self._comparison = handle.comparison
        for i, v in enumerate(self.views):
            v.attach(_ColumnHandle(handle, i))
        self._mark(handle.comparison.kept)

    def display(self) -> Any:
        from IPython.display import display

        self._display_handle = display(self, display_id=True)
        return self._display_handle

    # -- buttons -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop all: every column still streaming stops (partial replies kept)."""
        for v in self.views:
            if not v._done:
                v.stop()

    def keep(self, index: int) -> None:
        """Keep this: variant `index` becomes the turn's reply."""
        if self.handle is None:
            return
        self.handle.keep(index)
        self._mark(index)
        if self.handle.done:
            self._refresh()

    def _mark(self, kept: int) -> None:
        for i, b in enumerate(self.keep_buttons):
            b.description = _KEPT if i == kept else _KEEP
            b.button_style = "success" if i == kept else ""

    def all_done(self, handle: Any) -> None:
        """Every variant is done: Keep becomes clickable, the stored bundle gets the columns."""
        for b in self.keep_buttons:
            b.disabled = False
        self.stop_all.disabled = True
        self._mark(handle.comparison.kept)
        self._refresh()

    def _refresh(self) -> None:
        """Update the displayed bundle in place (saved notebooks keep the comparison)."""
        from IPython import get_ipython

        from .kernel import publish

        handle = self._display_handle
        formatter = getattr(get_ipython(), "display_formatter", None)
        if handle is None or formatter is None:
            return
        try:
            data, md = formatter.format(self)
            content = {"data": data, "metadata": md, "transient": {"display_id": handle.display_id}}
            if not (
                self._parent
                and publish(self._parent, "update_display_data", content, b"display_data")
            ):
                handle.update(self)
        except Exception:
            pass

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = dict(bundle or {})
        comp = self._comparison
        if comp is not None and not any(t.status == "running" for t in comp.turns):
            from .comparebundle import compare_bundle

            data.update(compare_bundle(comp))
        else:
            data["text/plain"] = "nbchat compare: " + ", ".join(self.labels)
        return data


def _esc(text: str) -> str:
    import html

    return html.escape(clean_text(text))
