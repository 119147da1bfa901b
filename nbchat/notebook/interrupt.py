"""Kernel → Interrupt (■, I I) stops streaming replies the way Stop does.

A live ``%%chat`` cell returns at once and its reply streams while the kernel is idle, when
ipykernel ignores SIGINT (``SIG_IGN``). Around each cell ipykernel keeps the idle handler in
``kernel.saved_sigint_handler``, installs ``default_int_handler`` and puts the saved one back
afterwards. `install` (called during a cell) puts nbchat's handler in that slot: an interrupt
while idle cancels every reply streaming in the conversations nbchat started turns in (partial
reply kept, flagged cancelled, shown as stopped) and otherwise does what the previous handler
did. During a cell ipykernel's KeyboardInterrupt is untouched (``%%chat --wait`` cancels its
turn on it).
"""

from __future__ import annotations

import signal
import threading
import weakref
from typing import Any

_conversations: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
REASON = "interrupted (Kernel → Interrupt)"


def watch(conversation: Any) -> None:
    """Let an interrupt stop the replies streaming in `conversation`."""
    with _lock:
        _conversations.add(conversation)


def stop_all(reason: str = REASON) -> list[Any]:
    """Cancel every running turn of the watched conversations; returns their handles."""
    with _lock:
        convs = list(_conversations)
    stopped = []
    for conv in convs:
        for handle in conv.running_handles():
            handle.cancel(reason)
            stopped.append(handle)
    return stopped


class _Handler:
    """The idle SIGINT handler: stop streaming replies, else defer to the previous one."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: Any) -> None:
        if stop_all():
            return
        if callable(self.previous):
            self.previous(signum, frame)


def install(shell: Any) -> bool:
    """Put the handler in ipykernel's idle slot (call during a cell); False without one."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "saved_sigint_handler"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    current = kernel.saved_sigint_handler
    if isinstance(current, _Handler):
        return True
    kernel.saved_sigint_handler = _Handler(current)
    return True


def uninstall(shell: Any) -> None:
    kernel = getattr(shell, "kernel", None)
    current = getattr(kernel, "saved_sigint_handler", None)
    if isinstance(current, _Handler):
        kernel.saved_sigint_handler = current.previous
        if signal.getsignal(signal.SIGINT) is current:  # only when idle (never during a cell)
            signal.signal(signal.SIGINT, current.previous or signal.SIG_IGN)
