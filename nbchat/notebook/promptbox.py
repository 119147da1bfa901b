"""The panel's prompt box: Enter sends, Shift+Enter is a new line, Ctrl/Cmd+Enter sends.

An anywidget (ipywidgets' Textarea has no key events). The text to send travels in the
message itself, so a send never races the box's value sync.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

_ESM = """
export default {
  render({ model, el }) {
    const ta = document.createElement("textarea");
    ta.className = "nbchat-prompt-input";
    ta.rows = 3;
    ta.dataset.lmSuppressShortcuts = "true"; // no JupyterLab shortcut (Shift+Enter: run cell)
    ta.placeholder = model.get("placeholder");
    ta.value = model.get("value");
    ta.addEventListener("input", () => { model.set("value", ta.value); model.save_changes(); });
    ta.addEventListener("keydown", (e) => {
      if (e.key !== "Enter" || e.isComposing) return;
      e.stopPropagation(); // never the notebook's Shift/Ctrl+Enter (run cell)
      e.preventDefault();
      if (e.shiftKey && !(e.ctrlKey || e.metaKey)) { // Shift+Enter: a new line, here
        ta.setRangeText("\\n", ta.selectionStart, ta.selectionEnd, "end");
        ta.dispatchEvent(new Event("input"));
        return;
      }
      if (ta.value.trim()) model.send({ type: "send", text: ta.value });
    });
    // while typing, a late echo of an older value must not overwrite the box (text was lost);
    // the panel clearing it after a send ("") always applies
    const sync = () => {
      const v = model.get("value");
      if (ta.value !== v && (v === "" || document.activeElement !== ta)) ta.value = v;
    };
    model.on("change:value", sync);
    el.append(ta);
    return () => model.off("change:value", sync);
  },
};
"""

_CSS = """
.nbchat-prompt-input {
  width: 100%; box-sizing: border-box; min-height: 4.5em; resize: vertical;
  font-family: var(--jp-ui-font-family, sans-serif); font-size: var(--jp-ui-font-size1, 13px);
  color: var(--jp-ui-font-color1, #222); background: var(--jp-layout-color1, #fff);
  border: 1px solid var(--jp-border-color1, #bbb); border-radius: 2px; padding: 4px 6px;
}
"""


class PromptBox(anywidget.AnyWidget):
    """A textarea whose Enter / Ctrl+Enter calls `on_send(text)`; `value` is its text."""

    _esm = _ESM
    _css = _CSS
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)

    def __init__(self, on_send: Callable[[str], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_send = on_send
        self.on_msg(self._handle)

    def _handle(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "send" and self._on_send:
            text = str(content.get("text") or "")
            self.value = text  # what was typed, even if the value sync has not arrived
            self._on_send(text)
