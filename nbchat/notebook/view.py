"""The live view of one turn: an anywidget fed by small incremental patches.

The worker thread feeds events to a `TurnState` (which folds them with the protocol's
`Accumulator`); a flush (at most every ``FLUSH_INTERVAL`` s, from the event itself or from a
small timer thread) sends the front end what changed, as patches built by `StreamDoc` (see
`streamdoc` for the message format; js/view.js applies them). A view that appears late (page
reload mid-stream) says "hello" and gets one snapshot; at the end the kernel-side `state`
trait holds the final state (for reloads and saved widget state).

Messages are attributed to the cell that started the turn (`kernel.publish`), not to whatever
cell runs when the worker sends them.
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
from typing import Any

import anywidget
import traitlets

from .kernel import parent_message, publish, set_thread_parent
from .render import clean_text, static_bundle
from .saved import TURN_MIME, turn_doc
from .streamdoc import StreamDoc, apply_message
from .turnstate import TurnState, args_text

__all__ = ["TurnView", "StreamDoc", "apply_message", "FLUSH_INTERVAL"]

FLUSH_INTERVAL = 0.06  # ~16 updates per second at most
APPROVAL_TIMEOUT = 600.0


def _asset(name: str) -> pathlib.Path:
    """js/ in a source checkout (editable install), else the copy packed into nbchat/static/."""
    here = pathlib.Path(__file__).resolve().parent.parent
    for p in (here.parent / "js" / name, here / "static" / name):
        if p.is_file():
            return p
    raise FileNotFoundError(f"nbchat front-end file {name} not found (looked in js/ and static/)")


class _Listener:
    """What runner.start_turn(listener=...) calls, from the worker thread."""

    def __init__(self, view: TurnView) -> None:
        self.view = view
        self.parent = parent_message()  # constructed on the main thread, inside the cell
        view._parent = self.parent  # every later message of the view names this cell

    def on_start(self) -> None:
        set_thread_parent(self.parent)
        self.view._on_start(self.parent)

    def on_event(self, event: dict[str, Any]) -> None:
        self.view._on_event(event)

    def on_tool_calls(self, calls: list[dict[str, Any]]) -> None:
        self.view._on_tool_calls(calls)

    def on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None:
        self.view._on_tool_result(call, message)

    def on_done(self, turn: Any) -> None:
        self.view._on_done(turn)


class TurnView(anywidget.AnyWidget):
    """Live view of one chat turn. Create on the main thread; feed it via `.listener()`."""

    _esm = _asset("view.js")
    _css = _asset("view.css")

    prompt = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    params = traitlets.Dict().tag(sync=True)
    # Thumbnails of the images sent with the prompt: data: URIs made in the kernel from its own
    # copy (`nbchat.images.thumbnail`), or a placeholder text for a URL (never fetched).
    images = traitlets.List(traitlets.Unicode()).tag(sync=True)
    # Final state for late views / reloads / saved widget state. Set once at the end *without*
    # echoing it to live views (they rebuilt the same state from the patches, see js/view.js).
    state = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        prompt: str,
        *,
        params: dict[str, Any] | None = None,
        title: str | None = None,
        refresh_fallback: bool = True,
        **kwargs: Any,
    ) -> None:
        shown = {k: v for k, v in (params or {}).items() if isinstance(v, (str, int, float, bool))}
        super().__init__(prompt=clean_text(prompt), params=shown, title=title or "", **kwargs)
        self.refresh_fallback = refresh_fallback
        self._lock = threading.RLock()
        self._st = TurnState()
        if str(shown.get("response_format", "")).startswith("json"):
            self._st.code_lang = "json"  # --json: a code block, never a prose paragraph
        self._last_flush = 0.0
        self._handle: Any = None
        self._stop_requested = False
        self._t_stop: float | None = None
        self._approval: list[Any] | None = None  # [threading.Event, decision]
        self._timer: threading.Thread | None = None
        self._running = False
        self._queued = False
        self._done = False
        self._display_handle: Any = None
        self._parent: Any = None  # the starting cell's request (set by listener())
        self.actions: Any = None  # Continue / Regenerate (viewactions.ViewActions), if offered
        self.bytes_sent = 0  # custom-message payload bytes (for the bench and tests)
        self.messages_sent = 0
        self.on_msg(self._on_frontend_msg)

    def __repr__(self) -> str:  # cheap: no trait serialisation
        return f"<nbchat.TurnView {self.prompt[:40]!r} {self._st.meta.get('status')}>"

    # -- public API (main thread) ----------------------------------------------------------------
    def listener(self) -> _Listener:
        """The listener for runner.start_turn; captures the current cell's parent header."""
        return _Listener(self)

    def attach(self, handle: Any) -> None:
        """Let the Stop button cancel this turn (handle.cancel()); a turn waiting for an
        earlier reply of its conversation shows "queued" (and its TTFT excludes the wait)."""
        self._handle = handle
        if self._stop_requested:
            handle.cancel()
        conv = getattr(handle, "conversation", None)
        others = [h for h in conv.running_handles() if h is not handle] if conv else []
        with self._lock:
            if others and not self._done and self._st.t_first is None:
                self._queued = True
                self._st.set_meta(status="queued")
        self._flush()

    def display(self) -> Any:
        """Show the live view (with a text fallback in the same bundle)."""
        from IPython.display import display

        self._display_handle = display(self, display_id=True)
        return self._display_handle

    def stop(self) -> None:
        """What the Stop button does: cancel the attached turn; the partial reply stays."""
        with self._lock:
            self._stop_requested = True
            self._t_stop = time.monotonic()
            if self._approval is not None:
                self._approval[1] = False
                self._approval[0].set()
            if not self._done:
                self._st.set_meta(status="stopping")
        if self._handle is not None:
            self._handle.cancel()
        self._flush()

    def approve(self, calls: list[dict[str, Any]], timeout: float = APPROVAL_TIMEOUT) -> bool:
        """Block the worker until Approve/Deny is clicked (Stop or the timeout -> deny)."""
        event = threading.Event()
        with self._lock:
            if self._stop_requested:
                return False
            self._approval = [event, False]
            shown = [
                {
                    "name": clean_text(str((c.get("function") or {}).get("name") or "?")),
                    "args": args_text((c.get("function") or {}).get("arguments") or "{}"),
                }
                for c in calls
            ]
            self._st.set_meta(status="approval", approval=shown)
        self._flush()
        event.wait(timeout)
        with self._lock:
            ok = bool(self._approval[1]) and event.is_set()
            self._approval = None
            self._st.set_approved(ok)
            self._st.set_meta(approval=None)
            if not self._stop_requested:
                self._st.set_meta(status="streaming")
        self._flush()
        return ok

    def show_error(self, error: BaseException | str) -> None:
        """Show an error (redacted) in the view, e.g. one raised before the stream started."""
        from ..errors import redact

        with self._lock:
            self._st.error = redact(str(error)) or type(error).__name__
            self._st.set_meta(error=self._st.error, status="error")
        self._flush()

    def snapshot(self) -> dict[str, Any]:
        """The complete front-end state (what a view that appears now needs)."""
        with self._lock:
            return self._st.snapshot()

    @property
    def text(self) -> str:
        with self._lock:
            return self._st.text

    def doc(self) -> dict[str, Any]:
        """The turn as the saved notebook keeps it (application/vnd.nbchat.turn+json)."""
        doc = turn_doc(self.prompt, self.title, dict(self.params), self.snapshot())
        if self.images:  # small thumbnails made in the kernel (data: URIs), kept with the turn
            doc["images"] = list(self.images)
        return doc

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)
        data = dict(data or {})
        # the nbchat extension draws this without a kernel (see saved.py)
        data[TURN_MIME] = self.doc()
        fallback = static_bundle(self._as_turn())
        data["text/plain"] = fallback["text/plain"]
        if self._done:
            # nbconvert / GitHub / VS Code use these; sanitised HTML outranks markdown, so
            # raw HTML in a reply is never rendered by a converter
            data["text/html"] = fallback["text/html"]
            data["text/markdown"] = fallback["text/markdown"]
        return (data, meta) if meta is not None else data

    # -- worker side -----------------------------------------------------------------------------
    def _on_start(self, parent: Any = None) -> None:
        with self._lock:
            self._st.t0 = time.monotonic()
            self._running = True
            self._st.set_meta(status="streaming")
        self._timer = threading.Thread(
            target=self._tick, args=(parent,), name="nbchat-view-flush", daemon=True
        )
        self._timer.start()
        self._flush()

    def _tick(self, parent: Any) -> None:
        set_thread_parent(parent)
        while True:
            time.sleep(FLUSH_INTERVAL)
            if not self._running:
                return
            if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
                self._flush()

    def _on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self._queued:  # the wait is over: time from here, like the runner does
                self._queued = False
                self._st.t0 = time.monotonic()
                self._st.set_meta(status="streaming")
            self._st.feed(event)
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self._flush()

    def _on_tool_calls(self, calls: list[dict[str, Any]]) -> None:
        with self._lock:
            self._st.report_calls(calls)
        self._flush()

    def _on_tool_result(self, call: dict[str, Any], message: dict[str, Any]) -> None:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for block in content:
                if isinstance(block, dict):
                    doc = block.get("document")
                    parts.append(
                        str(doc.get("data", doc))
                        if isinstance(doc, dict)
                        else str(block.get("text", block))
                    )
            content = "\n".join(parts)
        with self._lock:
            self._st.set_result(call.get("id"), str(content or ""), call.get("outcome"))
        self._flush()

    def _on_done(self, turn: Any) -> None:
        from ..errors import redact

        st = self._st
        with self._lock:
            if turn is not None:
                get = (
                    (lambda k: turn.get(k))
                    if isinstance(turn, dict)
                    else (lambda k: getattr(turn, k, None))
                )
                st.finish = get("finish_reason") or st.finish
                st.usage = get("usage") or st.usage
                cancelled = bool(get("cancelled")) or self._stop_requested
                err = get("error")
                if err and not st.error and not cancelled:  # a stop is not an error
                    st.error = redact(str(err))
            else:
                cancelled = self._stop_requested
            if st.finish == "MAX_TOKENS":
                st.mark_unrun("max_tokens reached")
            status = (
                "stopped"
                if cancelled
                else ("error" if st.error or st.finish == "ERROR" else "done")
            )
            stats = st.stats(final=True)
            omitted = get("omitted") if turn is not None else None
            if omitted:  # context.py left earlier turns out of the request
                stats["omitted"] = int(omitted)
            timings = (get("timings") or {}) if turn is not None else {}
            # one source for the numbers: the live view shows what chat.turns / history keep
            if timings.get("ttft") is not None:
                stats["ttft"] = round(float(timings["ttft"]), 3)
            if timings.get("tokens_per_second"):
                stats["tps"] = round(float(timings["tokens_per_second"]), 1)
            if cancelled and self._t_stop is not None:
                stats["stop_ms"] = round((time.monotonic() - self._t_stop) * 1000)
            st.set_meta(status=status, stats=stats, error=st.error, approval=None)
            self._running = False
            self._done = True
        self._flush(final=True)
        if self.refresh_fallback and self._display_handle is not None:
            try:  # saved notebooks then show the whole reply without widget state
                self._refresh_display()
            except Exception:
                pass

    def _refresh_display(self) -> None:
        """Update the displayed bundle (its fallback now holds the whole reply) in place."""
        from IPython import get_ipython

        handle = self._display_handle
        formatter = getattr(get_ipython(), "display_formatter", None)
        if formatter is not None and self._parent:
            data, md = formatter.format(self)
            content = {"data": data, "metadata": md, "transient": {"display_id": handle.display_id}}
            if publish(self._parent, "update_display_data", content, b"display_data"):
                return
        handle.update(self)

    # -- flushing --------------------------------------------------------------------------------
    def _flush(self, final: bool = False) -> None:
        with self._lock:
            self._last_flush = time.monotonic()
            msg = self._st.patch(final)
            if msg is None:
                return
            self._send_patch(msg)
            if final:
                snap = self._st.snapshot()
                with self._lock_property(state=snap):  # kernel-side only; no echo
                    self.state = snap

    def _send_patch(self, msg: dict[str, Any]) -> None:
        if os.environ.get("NBCHAT_VIEW_COUNT", "1") != "0":
            import json

            self.bytes_sent += len(
                json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()
            )
            self.messages_sent += 1
        comm = self.comm
        if comm is not None and publish(
            self._parent,
            "comm_msg",  # what Widget.send would send, but attributed to the starting cell
            {"comm_id": comm.comm_id, "data": {"method": "custom", "content": msg}},
            getattr(comm, "topic", None),
        ):
            return
        self.send(msg)

    # -- front end -> kernel ---------------------------------------------------------------------
    def _on_frontend_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "stop":
            self.stop()
        elif kind == "approve":
            with self._lock:
                if self._approval is not None:
                    self._approval[1] = bool(content.get("ok"))
                    self._approval[0].set()
        elif kind in ("continue", "regenerate") and self.actions is not None:
            self.actions.run(kind)
        elif kind in ("hello", "resync"):
            with self._lock:
                behind = kind == "resync" or int(content.get("s") or 0) < self._st.seq
                if behind and self._st.seq > 0:
                    self._send_patch({"type": "snap", "state": self.snapshot()})

    def _as_turn(self) -> dict[str, Any]:
        with self._lock:
            stopped = self._st.meta.get("status") == "stopped"
            return self._st.as_turn(self.prompt, self.params, stopped)
