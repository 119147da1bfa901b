"""`Panel`: parameter sliders, a prompt box, Send/Stop, the transcript and a usage footer.

It drives the same `Conversation` as the ``%%chat`` magic (through `runner.start_turn`), so
turns sent from either place share one history. Ranges and defaults are Cohere's.
"""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as w

from ..protocol.request import SAFETY_MODE_CONFLICT
from .controls import (
    LABEL_WIDTH,
    RANGES,
    SAFETY_MODES,
    ThinkingControls,
    backend_label,
    int_box,
    safety_dropdown,
    sliders,
)
from .panelactions import PanelActions
from .panelbackend import GIVEN, PanelBackends
from .paneledit import EditControls
from .panelparams import PanelParams
from .promptbox import PromptBox
from .render import shown_params
from .saved import SavedPanelDisplay, doc_from_turn
from .view import TurnView

__all__ = ["Panel", "RANGES", "SAFETY_MODES"]


class Panel(PanelParams, PanelBackends, SavedPanelDisplay, w.VBox):
    """Parameter panel + prompt box + transcript for one Conversation.

    ``Panel(conversation=None, backend=None)``: `conversation` defaults to a new
    `Conversation`; `backend` is a Backend instance or name (default: the conversation's, else
    ``auto``). ``documents`` / ``tools`` attributes (or constructor arguments) are sent with
    each turn; while either is set the safety_mode dropdown is disabled with an explanation.
    """

    def __init__(
        self,
        conversation: Any = None,
        backend: Any = None,
        *,
        documents: list[Any] | None = None,
        tools: list[Any] | None = None,
        model: str | None = None,
        defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from ..conversation import Conversation

        self.conversation = conversation if conversation is not None else Conversation()
        self._backend_obj = (
            backend if backend is not None and not isinstance(backend, str) else None
        )
        self._backends: dict[str, Any] = {}
        self._handle: Any = None
        self._lock = threading.Lock()
        self.views: list[TurnView] = []
        self.dataframe: Any = None

        self.sliders = sliders()
        self.max_tokens = int_box(
            "max_tokens", "model default", "empty = the model's default", LABEL_WIDTH, "250px"
        )
        self.seed = int_box(
            "seed", "random", "same seed + same parameters -> same reply", "60px", "180px"
        )
        self._given = self._backend_obj
        if self._given is None and self.conversation.backend is not None:
            if not isinstance(self.conversation.backend, str):
                self._given = self.conversation.backend
        from ..backends import backend_names  # built-ins and plugins (nbchat.backends group)

        names = backend_names()
        options: list[tuple[str, str]] = [(b, b) for b in names]
        if self._given is not None:
            # show the instance as it is (e.g. "v2 · 127.0.0.1:8000"), not a guessed name
            self._given_label = backend_label(self._given)
            options.insert(0, (self._given_label, GIVEN))
            bname = GIVEN
        else:
            self._given_label = ""
            bname = backend if isinstance(backend, str) else self.conversation.backend
            bname = bname if bname in names else "auto"
        self.backend = w.Dropdown(
            options=options,
            value=bname,
            description="backend",
            style={"description_width": LABEL_WIDTH},
            layout=w.Layout(width="360px", max_width="100%"),
        )
        self.backend.add_class("nbchat-panel-backend")
        self.model = w.Combobox(
            value=model or self.conversation.params.get("model") or self._default_model(bname),
            options=self._model_options(bname),
            ensure_option=False,
            placeholder="model name",
            description="model",
            style={"description_width": LABEL_WIDTH},
            layout=w.Layout(width="360px", max_width="100%"),
        )
        self.model.add_class("nbchat-panel-model")
        self.backend.observe(self._on_backend, names="value")
        self.safety_mode = safety_dropdown()
        self.thinking = ThinkingControls()
        self.thinking.update(self._capability_backend(bname))
        self.safety_note = w.HTML("")
        self.prompt = PromptBox(
            on_send=lambda _text: self.send(),
            placeholder="Message (Enter sends, Shift+Enter: new line)",
            layout=w.Layout(width="auto"),
        )
        self.prompt.add_class("nbchat-panel-prompt")
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.send_button.add_class("nbchat-panel-send")
        self.compare_button = w.Button(
            description="Compare",
            icon="columns",
            tooltip="Send with these settings next to the previous send's, side by side",
        )
        self.compare_button.add_class("nbchat-panel-compare")
        self.compare_views: list[Any] = []
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.stop_button.add_class("nbchat-panel-stop")
        self.export_button = w.Button(
            description="Export",
            icon="download",
            tooltip="conversation.to_dataframe() -> panel.dataframe + CSV",
        )
        self.export_button.add_class("nbchat-panel-export")
        self.status = w.HTML("")
        self.status.add_class("nbchat-panel-status")
        # a maximum height (it scrolls) keeps the prompt box in view on long conversations
        self.transcript = w.VBox([], layout=w.Layout(max_height="60vh", overflow="auto"))
        self.transcript.add_class("nbchat-panel-transcript")
        self.footer = w.HTML("")
        self.footer.add_class("nbchat-panel-usage")

        self.send_button.on_click(lambda _b: self.send())
        self.stop_button.on_click(lambda _b: self.stop())
        self.compare_button.on_click(lambda _b: self.compare())
        self.export_button.on_click(lambda _b: self.export())

        self._documents = documents
        self._tools = tools
        self.defaults: dict[str, Any] = {}  # fields sent with every turn that have no control
        self._apply_defaults(dict(defaults or {}), model_given=bool(model))
        self._update_safety()
        self._display_handle: Any = None
        self._display_parent: Any = None
        self._earlier = list(self.conversation.turns)
        for turn in self._earlier:  # earlier turns: static, cheap
            self.transcript.children += (self._static(turn),)
        self.editing: int | None = None  # the turn Send resends (see `paneledit`)
        self.edit_controls = EditControls(self)
        self._update_footer()

        def row(*children: w.Widget) -> w.HBox:
            # rows wrap on narrow cells (side-by-side panes) instead of squashing sliders
            return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap"))

        params_box = w.VBox(
            [
                row(self.backend, self.model),
                row(self.sliders["temperature"], self.sliders["p"]),
                row(self.sliders["k"], self.max_tokens, self.seed),
                row(self.sliders["frequency_penalty"], self.sliders["presence_penalty"]),
                row(self.safety_mode, self.safety_note),
                row(*self.thinking.widgets),
            ]
        )
        buttons = row(
            self.send_button,
            self.compare_button,
            self.stop_button,
            self.export_button,
            *self.edit_controls.widgets,
            self.status,
        )
        super().__init__([params_box, self.transcript, self.prompt, buttons, self.footer], **kwargs)
        self.add_class("nbchat-panel")

    def __repr__(self) -> str:
        return f"<nbchat.Panel turns={len(self.conversation.turns)}>"

    # -- documents / tools gate safety_mode ------------------------------------------------------
    @property
    def documents(self) -> list[Any] | None:
        return self._documents

    @documents.setter
    def documents(self, value: list[Any] | None) -> None:
        self._documents = value
        self._update_safety()

    @property
    def tools(self) -> list[Any] | None:
        return self._tools

    @tools.setter
    def tools(self, value: list[Any] | None) -> None:
        self._tools = value
        self._update_safety()

    def _update_safety(self) -> None:
        blocked = bool(self._documents) or bool(self._tools)
        self.safety_mode.disabled = blocked
        note = f"{SAFETY_MODE_CONFLICT}: not sent."
        self.safety_note.value = f"<small><i>{_esc(note)}</i></small>" if blocked else ""

    # -- actions ---------------------------------------------------------------------------------
    def send(self, prompt: str | None = None) -> TurnView | None:
        """Send the prompt box (or `prompt`) as a new turn; returns its live view. In edit
        mode (the Edit button), the prompt box resends the edited turn (see `resend`)."""
        if self.editing is not None and prompt is None:
            return self.resend(self.editing)
        return self._launch(prompt, None)

    def resend(self, index: int, prompt: str | None = None) -> TurnView | None:
        """Edit and resend turn `index` with `prompt` (default: the prompt box): the request
        holds the history before it and the edited prompt; that turn and the later ones leave
        the conversation and the transcript (kept on the new turn: ``alternatives`` and
        ``dropped``). Returns the live view, or None (reason in the status)."""
        return self._launch(prompt, index)

    def _launch(self, prompt: str | None, index: int | None) -> TurnView | None:
        from .. import runner
        from ..errors import redact
        from ..resend import start_edit

        text = (prompt if prompt is not None else self.prompt.value).strip()
        if not text:
            self.status.value = "<small>Type a message first.</small>"
            return None
        try:
            params, backend, functions = self._prepare()
        except Exception as exc:  # bad seed, unknown backend...: show it, send nothing
            self.status.value = _error_html(redact(str(exc)))
            return None
        view = TurnView(
            text,
            params=shown_params(params, functions, hide_defaults=True),
            title=self.model.value or None,
        )
        actions = view.actions = PanelActions(self, view, backend)  # Continue / Regenerate
        listener = actions.listener(view.listener())
        extra = {"tools": functions or None, "approve": view.approve if functions else None}
        try:
            if index is None:
                handle = runner.start_turn(
                    self.conversation, backend, text, params, listener=listener, **extra
                )
            else:  # params are the panel's (the conversation's included), as for Send
                handle = start_edit(
                    self.conversation, index, text, backend, listener=listener, **extra, **params
                )
        except Exception as exc:  # ValidationError: nothing was sent, conversation unchanged
            self.status.value = _error_html(redact(str(exc)))
            view.close()
            return None
        view.attach(handle)
        from IPython import get_ipython

        from .cell import watch_interrupts

        watch_interrupts(get_ipython(), self.conversation)  # Kernel → Interrupt stops it
        with self._lock:
            self._handle = handle
            self.views.append(view)
        if index is None:
            self.transcript.children += (view,)
        else:  # the turns before the edited one, then the resent turn
            kept = self.conversation.turns[:-1]
            self.transcript.children = (*(self._static(t) for t in kept), view)
            self.edit_controls.end()
        self.edit_controls.refresh()
        if prompt is None:
            self.prompt.value = ""
        self.status.value = ""
        self.stop_button.disabled = False
        if handle.done:  # it ended before the button was enabled: _turn_done has run already
            self.stop_button.disabled = True
        return view

    def compare(self, prompt: str | None = None) -> Any:
        """Compare: the prompt with the current settings next to the previous send's, side by
        side (see `panelcompare`); returns the CompareView, or None (reason in the status)."""
        from .panelcompare import compare

        return compare(self, prompt)

    def stop(self) -> None:
        """Stop the running turn (its partial reply stays, marked stopped)."""
        with self._lock:
            handle = self._handle
        if handle is not None and not handle.done:
            view = self.views[-1] if self.views else None
            if view is not None:
                view.stop()  # marks the view and cancels the handle
            else:
                handle.cancel()

    def export(self, path: str | None = None) -> Any:
        """`conversation.to_dataframe()`, kept in `panel.dataframe`, saved as CSV (JSON-valued
        columns, integer counts), with a download link in the panel (see `panelexport`)."""
        from .panelexport import export

        return export(self, path)

    def _turn_done(self, handle_turn: Any) -> None:
        with self._lock:
            if self._handle is not None and self._handle.done:
                self.stop_button.disabled = True
        self._update_footer()
        try:  # the saved notebook then holds the transcript (readable without a kernel)
            self._refresh_display()
        except Exception:
            pass

    def _update_footer(self) -> None:
        usage = self.conversation.usage or {}
        toks = usage.get("tokens") or usage.get("billed_units") or {}
        n_in = int(toks.get("input_tokens") or 0)
        n_out = int(toks.get("output_tokens") or 0)
        n = len(self.conversation.turns)
        self.footer.value = (
            f"<small>{n} turn{'' if n == 1 else 's'} · {n_in + n_out} tokens "
            f"({n_in} in / {n_out} out)</small>"
        )

    def _static(self, turn: Any) -> w.Widget:
        """An earlier turn, drawn by the same view as new ones (stopped reads as stopped)."""
        doc = doc_from_turn(turn)
        view = TurnView(doc["prompt"], params=doc["params"], title=doc["title"])
        view.state = doc["state"]
        view.add_class("nbchat-panel-static")
        return view


def _error_html(text: str) -> str:
    return f"<small style='color:var(--jp-error-color1, #c62828)'>{_esc(text)}</small>"


def _esc(s: str) -> str:
    import html

    return html.escape(s)
