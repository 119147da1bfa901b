"""The panel's controls as request parameters (a mixin of `Panel`).

`request_params` reads the sliders, boxes and dropdowns on top of ``panel.defaults`` and the
conversation's parameters; `request` is the exact body Send would send, composed and validated
as the runner does. The ranges and defaults are `controls`' (Cohere's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .controls import SAFETY_MODES, int_value

__all__ = ["PanelParams"]


class PanelParams:
    """Needs the panel's widgets (``sliders``, ``max_tokens``, ``seed``, ``safety_mode``,
    ``model``, ``thinking``, ``prompt``), ``conversation``, ``defaults``, ``_documents``,
    ``_tools`` and ``_get_backend`` (set by `Panel.__init__` and `PanelBackends`)."""

    sliders: dict[str, Any]
    max_tokens: Any
    seed: Any
    safety_mode: Any
    model: Any
    thinking: Any
    prompt: Any
    conversation: Any
    defaults: dict[str, Any]
    _documents: list[Any] | None
    _tools: list[Any] | None
    _get_backend: Callable[[], Any]  # PanelBackends' (an annotation only: no attribute)

    def _apply_defaults(self, defaults: dict[str, Any], model_given: bool) -> None:
        """Start the controls at `defaults` (NbChat.defaults: v2 field -> value); fields with
        no control are kept in `.defaults` and sent with every turn."""
        for key, value in defaults.items():
            if key in self.sliders:
                self.sliders[key].value = value
            elif key in ("max_tokens", "seed"):
                getattr(self, key).value = "" if value is None else str(value)
            elif key == "safety_mode" and value in SAFETY_MODES:
                self.safety_mode.value = value
            elif key == "model":
                if not model_given and value:
                    self.model.value = str(value)
            else:
                self.defaults[key] = value

    def request_params(self) -> dict[str, Any]:
        """The v2 parameters Send will use: `.defaults`, the conversation's, then the controls."""
        params: dict[str, Any] = {**self.defaults, **self.conversation.params}
        for name, slider in self.sliders.items():
            value = slider.value
            params[name] = value if isinstance(value, int) else round(float(value), 4)
        if self.model.value:
            params["model"] = self.model.value
        max_tokens = self.max_tokens.value.strip()
        if max_tokens and max_tokens != "0":  # empty (or 0) = the model's default
            params["max_tokens"] = int_value("max_tokens", max_tokens)
        seed = self.seed.value.strip()
        if seed:
            params["seed"] = int_value("seed", seed)  # the error names the bad input
        if self._documents:
            params["documents"] = list(self._documents)
        if self._tools:
            params["tools"] = list(self._tools)
        if not self.safety_mode.disabled:
            params["safety_mode"] = self.safety_mode.value
        else:
            params.pop("safety_mode", None)
        thinking = self.thinking.value()
        if thinking is not None:
            params["thinking"] = thinking
        return params

    def _prepare(self) -> tuple[dict[str, Any], Any, list[Any]]:
        """(params, backend, Python tool functions) for the next turn; raises on bad input."""
        params = self.request_params()
        backend = self._get_backend()
        functions = [t for t in params.pop("tools", []) if callable(t)]
        tool_dicts = [t for t in (self._tools or []) if not callable(t)]
        if tool_dicts:
            params["tools"] = tool_dicts
        return params, backend, functions

    def request(self, prompt: str | None = None) -> dict[str, Any]:
        """The exact body Send would send now for `prompt` (default: the prompt box), composed
        and validated as the runner does; raises `ValidationError` like Send refuses."""
        from ..compose import build_request

        text = (prompt if prompt is not None else self.prompt.value).strip()
        params, backend, functions = self._prepare()
        composed = build_request(self.conversation, text, params, backend=backend, tools=functions)
        return dict(composed.request)
