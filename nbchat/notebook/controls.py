"""The panel's parameter controls, built from the flag table (`flags.PANEL_FIELDS`).

Ranges and defaults are the protocol's (`protocol.request.RANGES`, ``DEFAULTS``,
``SAFETY_MODES``); the tooltips are the flags' help, so the panel, ``%%chat?`` and the
validator never disagree.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w
import traitlets

from ..protocol.request import DEFAULTS, SAFETY_MODES
from ..protocol.request import RANGES as LIMITS
from .flags import PANEL_FIELDS, Flag

__all__ = [
    "RANGES",
    "SAFETY_MODES",
    "LABEL_WIDTH",
    "sliders",
    "int_box",
    "safety_dropdown",
    "ThinkingControls",
]

LABEL_WIDTH = "135px"  # wide enough for "frequency_penalty" (the API's own names are kept)

# field: (min, max, step, default) of each slider, read from the protocol and the flag table
RANGES: dict[str, tuple[float, float, float, float]] = {
    name: (LIMITS[name][0], LIMITS[name][1] or 0, f.step, DEFAULTS[name])
    for name, f in PANEL_FIELDS.items()
    if f.panel == "slider"
}


class OptionalIntText(w.Text):
    """A text box for an optional integer: empty shows a placeholder ("default", "random")
    instead of a misleading 0; ints assigned from Python are accepted (CUnicode casts)."""

    value = traitlets.CUnicode("", help="integer or empty").tag(sync=True)


def _css(name: str) -> str:
    return f"nbchat-panel-{name.replace('_', '-')}"


def _slider(name: str, flag: Flag) -> w.Widget:
    lo, hi, step, default = RANGES[name]
    integer = flag.kwargs.get("type") is int
    cls = w.IntSlider if integer else w.FloatSlider
    kw: dict[str, Any] = {} if integer else {"readout_format": ".2f"}
    s = cls(
        value=default,
        min=lo,
        max=hi,
        step=step,
        description=name,
        tooltip=flag.help,
        continuous_update=False,
        style={"description_width": LABEL_WIDTH},
        layout=w.Layout(width="360px", max_width="100%"),
        **kw,
    )
    s.add_class(_css(name))
    return s


def sliders() -> dict[str, w.Widget]:
    """One slider per numeric field the panel shows, in the flag table's order."""
    return {name: _slider(name, f) for name, f in PANEL_FIELDS.items() if f.panel == "slider"}


def int_box(name: str, placeholder: str, tooltip: str, label_width: str, width: str) -> Any:
    """An optional-integer box for `name` (max_tokens, seed)."""
    flag = PANEL_FIELDS[name]
    box = OptionalIntText(
        value="",
        placeholder=placeholder,
        description=name,
        tooltip=f"{tooltip}. {flag.help}",
        style={"description_width": label_width},
        layout=w.Layout(width=width, max_width="100%"),
    )
    box.add_class(_css(name))
    return box


def int_value(name: str, text: str) -> int:
    """The integer in an optional-integer box, checked against the protocol's minimum."""
    from ..errors import ValidationError

    minimum = int(LIMITS[name][0])
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValidationError(name, text, f"an integer >= {minimum}, or empty")
    return value


def safety_dropdown() -> w.Dropdown:
    d = w.Dropdown(
        options=list(SAFETY_MODES),
        value=DEFAULTS["safety_mode"],
        description="safety_mode",
        tooltip=PANEL_FIELDS["safety_mode"].help,
        style={"description_width": LABEL_WIDTH},
        layout=w.Layout(width="360px", max_width="100%"),
    )
    d.add_class("nbchat-panel-safety")
    return d


def backend_label(backend: Any) -> str:
    """What a Backend instance really talks to: a Client on another host is a v2 endpoint,
    not Cohere (its class name says "cohere" either way)."""
    from urllib.parse import urlsplit

    name = str(getattr(backend, "name", None) or type(backend).__name__)
    base = getattr(backend, "base_url", None)
    if not isinstance(base, str) or not base:
        return name
    host = urlsplit(base).netloc or base
    if name == "cohere" and host not in ("api.cohere.com", "api.cohere.ai"):
        name = "v2"
    return f"{name} · {host}"


class ThinkingControls:
    """The panel's reasoning controls: a ``thinking`` toggle (default / on / off) and a
    ``token_budget`` box, disabled with the reason when the backend cannot reason."""

    def __init__(self) -> None:
        self.toggle = w.ToggleButtons(
            options=[("default", ""), ("on", "on"), ("off", "off")],
            value="",
            description="thinking",
            tooltip="--thinking: a reasoning model thinks before it answers",
            style={"description_width": LABEL_WIDTH, "button_width": "64px"},
        )
        self.toggle.add_class("nbchat-panel-thinking")
        self.budget = OptionalIntText(
            value="",
            placeholder="model default",
            description="token_budget",
            tooltip="--thinking-budget: at most N thinking tokens (>= 1); empty: model default",
            style={"description_width": "90px"},
            layout=w.Layout(width="210px", max_width="100%"),
        )
        self.budget.add_class("nbchat-panel-thinking-budget")
        self.note = w.HTML("")
        self.note.add_class("nbchat-panel-thinking-note")

    @property
    def widgets(self) -> list[w.Widget]:
        return [self.toggle, self.budget, self.note]

    def update(self, backend: Any) -> None:
        """Enable or disable for `backend` (a Backend or a backend name), saying why."""
        from ..backends.capabilities import capabilities

        caps = capabilities(backend)
        self.toggle.disabled = self.budget.disabled = not caps.thinking
        self.note.value = "" if caps.thinking else f"<small><i>{caps.reason}</i></small>"

    def value(self) -> dict[str, Any] | None:
        """The v2 ``thinking`` object to send, or None (not sent)."""
        from ..errors import ValidationError

        if self.toggle.disabled:
            return None
        budget = self.budget.value.strip()
        if self.toggle.value == "off":
            if budget:
                raise ValidationError("thinking.token_budget", budget, "empty when thinking is off")
            return {"type": "disabled"}
        if not self.toggle.value and not budget:
            return None
        thinking: dict[str, Any] = {"type": "enabled"}
        if budget:
            try:
                n = int(budget)
            except ValueError:
                n = 0
            if n < 1:
                raise ValidationError("thinking.token_budget", budget, "an integer >= 1, or empty")
            thinking["token_budget"] = n
        return thinking
