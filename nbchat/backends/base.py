"""The Backend seam: anything that turns a v2 request into v2 stream events.

A backend takes a *validated* v2 request body (``protocol.validate_request`` output; the
``stream`` key is ignored) and yields plain event dicts in the exact wire shape, in the wire
grammar: ``message-start`` first, ``message-end`` last. Errors before the first event are
raised (``APIError``, ``ValidationError``, ``EngineError``); an error after it is either a
``message-end`` with ``finish_reason: ERROR`` or a raised ``ConnectionError``/``StreamError``
(the consumer keeps what it accumulated). Adding a protocol means one new module here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from ..errors import Cancelled

__all__ = ["Backend", "Cancel", "collect"]


class Cancel:
    """A thread-safe stop signal shared by the runner, the view and a backend.

    `cancel()` may be called from any thread; callbacks registered with `on_cancel` run at
    once in the cancelling thread (an HTTP backend uses one to shut its socket down, so a
    blocked read returns immediately instead of waiting for the next byte).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a failing cleanup must not stop the others
                pass

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Register callback; returns a function that unregisters it. Runs now if already set."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)

                def remove() -> None:
                    with self._lock:
                        if callback in self._callbacks:
                            self._callbacks.remove(callback)

                return remove
        callback()
        return lambda: None

    def raise_if_set(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")


@runtime_checkable
class Backend(Protocol):
    """Where events come from. See the module docstring for the contract."""

    name: str

    def stream(
        self, request: dict[str, Any], cancel: Cancel | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield v2 stream events for a validated request."""
        ...

    def models(self) -> list[str]:
        """Model names this backend can serve (best effort)."""
        ...


def collect(events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """Fold a whole event stream into the non-stream v2 response dict."""
    from ..protocol.accumulator import Accumulator

    acc = Accumulator()
    for event in events:
        acc.feed(event)
    return acc.response
