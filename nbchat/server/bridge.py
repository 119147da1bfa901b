"""The bridge from a backend's synchronous iterator (llama.cpp, httpx) to the event loop.

Each generation runs in its own thread and hands its events to the loop through a BOUNDED
channel: a semaphore of `size` slots guards an asyncio queue. When the client reads slowly, the
socket write blocks, the slots run out and the generation thread blocks in `acquire` --
backpressure all the way down to the engine, so server memory stays flat however slow the
client is. A client that stops reading altogether is cut off by the writer's timeout, which
cancels the generation. (A free slot costs no round trip to the loop: one
``call_soon_threadsafe`` per event, as fast as the unbounded queue it replaces.)

`Backlog` counts, across all generations, the events produced but not yet taken by the loop;
it is changed from generation threads and the loop, so under a lock.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..backends.base import Backend, Cancel

END = object()  # what `Generation.get` returns once the thread has let go of the backend


class Backlog:
    """A thread-safe count of queued events, with its high-water mark."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self.peak = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n
            if self.value > self.peak:
                self.peak = self.value


class Generation:
    """One backend iterator running in its own thread, feeding a bounded channel.

    Items are ("event", dict) or ("error", exc); `get` returns `END` once the thread has
    closed the backend's iterator (the engine is free).
    """

    def __init__(
        self, backend: Backend, request: dict[str, Any], size: int, backlog: Backlog
    ) -> None:
        self.backend = backend
        self.request = request
        self.backlog = backlog
        self.cancel = Cancel()
        self._slots = threading.Semaphore(size)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._over = False
        self.thread = threading.Thread(target=self._run, name="nbchat-serve-gen", daemon=True)

    def start(self) -> None:
        """Start the thread (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self.thread.start()

    # -- generation thread ------------------------------------------------------------------
    def _send(self, item: Any) -> bool:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            return True
        except RuntimeError:  # the loop is closed (server shut down)
            return False

    def _put_event(self, event: Any) -> bool:
        """Wait for a free slot, then hand `event` over; False when it never will be."""
        while not self._slots.acquire(timeout=0.5):
            if self.cancel.is_set() or self._loop is None or self._loop.is_closed():
                return False
        self.backlog.add(1)
        if self._send(("event", event)):
            return True
        self.backlog.add(-1)
        return False

    def _run(self) -> None:
        it = None
        try:
            it = iter(self.backend.stream(self.request, self.cancel))
            for event in it:
                if self.cancel.is_set():
                    break
                if not self._put_event(event):
                    self.cancel.cancel("server shutting down")
                    break
        except BaseException as exc:  # noqa: B036 - forwarded to the loop, never swallowed
            if not self.cancel.is_set():
                self._send(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:  # run the generator's cleanup in this thread: frees the engine
                    close()
                except Exception:
                    pass
            self._send(END)

    # -- event loop ---------------------------------------------------------------------------
    def _taken(self, item: Any) -> Any:
        if item is END:
            self._over = True
        elif item[0] == "event":
            self.backlog.add(-1)
            self._slots.release()
        return item

    async def get(self) -> Any:
        """The next item, waiting for it; `END` when the generation is over."""
        if self._over:
            return END
        return self._taken(await self._queue.get())

    def get_nowait(self) -> Any:
        """The next item if one is queued, else None; `END` when the generation is over."""
        if self._over:
            return END
        try:
            return self._taken(self._queue.get_nowait())
        except asyncio.QueueEmpty:
            return None

    async def finish(self, timeout: float = 10.0) -> bool:
        """Cancel (if still running), drain, and wait until the thread has let go.

        Returns False when the thread did not stop within `timeout` seconds.
        """
        self.cancel.cancel("client disconnected")

        async def drain() -> None:
            while await self.get() is not END:
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
