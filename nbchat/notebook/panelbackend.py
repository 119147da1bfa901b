"""The panel's backend and model choice (a mixin of `Panel`).

The backend dropdown lists the registered backend names (built-ins and plugins), plus the
Backend instance the panel was created with (value `GIVEN`); the model box follows the backend's
default model. One backend instance per name is kept, so the local model loads once.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PanelBackends", "GIVEN"]

GIVEN = "given"  # dropdown value for the Backend instance the panel was created with


def _kind(label: str) -> str:
    return label.split(" · ", 1)[0]


class PanelBackends:
    """Needs ``backend`` / ``model`` widgets, ``thinking``, ``conversation``, ``_given``,
    ``_given_label``, ``_backend_obj`` and ``_backends`` (set by `Panel.__init__`)."""

    backend: Any
    model: Any
    thinking: Any
    conversation: Any
    _given: Any
    _given_label: str
    _backend_obj: Any
    _backends: dict[str, Any]

    # -- backend / model -------------------------------------------------------------------------
    def _default_model(self, bname: str) -> str:
        from ..backends import default_model

        if bname == GIVEN:
            bname = _kind(self._given_label)
        try:
            return default_model(bname)
        except Exception:
            return ""

    def _model_options(self, bname: str) -> list[str]:
        default = self._default_model(bname)
        return [default] if default else []

    def _on_backend(self, change: dict[str, Any]) -> None:
        self.model.options = self._model_options(change["new"])
        self.model.value = self._default_model(change["new"])
        self._backend_obj = self._given if change["new"] == GIVEN else None
        self.thinking.update(self._capability_backend(change["new"]))

    def _capability_backend(self, bname: str) -> Any:
        """What `capabilities` needs: the given Backend, or the resolved backend name."""
        from ..backends import resolve_name

        if bname == GIVEN:
            return self._given
        try:
            return resolve_name(bname)
        except Exception:
            return bname

    def _get_backend(self) -> Any:
        if self._backend_obj is not None:
            return self._backend_obj
        name = self.backend.value
        if name not in self._backends:  # one instance per name: the local model loads once
            conv_backend = self.conversation.backend
            if (
                conv_backend is not None
                and not isinstance(conv_backend, str)
                and getattr(conv_backend, "name", None) == name
            ):
                self._backends[name] = conv_backend
            else:
                from ..backends import get_backend

                self._backends[name] = get_backend(name)
        return self._backends[name]
