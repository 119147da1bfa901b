"""The bridge from a backend's synchronous iterator (llama.cpp, httpx) to the event loop.

Each generation runs in its own thread and hands its events to the loop through a BOUNDED
memory object stream (anyio): when the client reads slowly, the socket write blocks, the
stream fills up and the generation thread blocks in `send` -- backpressure all the way down to
the engine, so server memory stays flat however slow the client is. A client that stops
reading altogether is cut off by the writer's timeout, which cancels the generation.

`Backlog` counts, across all generations, the events produced but not yet taken by the loop;
it is changed from generation threads and the loop, so under a lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import anyio

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
    """One backend iterator running in its own thread, feeding a bounded stream.

    Items are ("event", dict) or ("error", exc); `get` returns `END` once the thread has
    closed the backend's iterator (the engine is free) and closed its end of the stream.
    """

    def __init__(
        self, backend: Backend, request: dict[str, Any], size: int, backlog: Backlog
    ) -> None:
        self.backend = backend
        self.request = request
        self.backlog = backlog
        self.cancel = Cancel()
        self._send, self._receive = anyio.create_memory_object_stream[Any](max_buffer_size=size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="nbchat-serve-gen", daemon=True)

    def start(self) -> None:
        """Start the thread (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self.thread.start()

    # -- generation thread ------------------------------------------------------------------
    def _put(self, item: Any) -> bool:
        """Block until the loop has room for `item`; False when it never will."""
        assert self._loop is not None
        try:
            fut = asyncio.run_coroutine_threadsafe(self._send.send(item), self._loop)
        except RuntimeError:  # the loop is closed (server shut down)
            return False
        while True:
            try:
                fut.result(timeout=0.5)
                return True
            except concurrent.futures.TimeoutError:
                if self._loop.is_closed():
                    return False
            except Exception:  # the receiving end is closed: nobody will read this
                return False

    def _run(self) -> None:
        it = None
        try:
            it = iter(self.backend.stream(self.request, self.cancel))
            for event in it:
                if self.cancel.is_set():
                    break
                self.backlog.add(1)
                if not self._put(("event", event)):
                    self.backlog.add(-1)
                    self.cancel.cancel("server shutting down")
                    break
        except BaseException as exc:  # noqa: B036 - forwarded to the loop, never swallowed
            if not self.cancel.is_set():
                self._put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:  # run the generator's cleanup in this thread: frees the engine
                    close()
                except Exception:
                    pass
            try:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._send.close)
            except RuntimeError:
                pass

    # -- event loop ---------------------------------------------------------------------------
    def _taken(self, item: Any) -> Any:
        if item[0] == "event":
            self.backlog.add(-1)
        return item

    async def get(self) -> Any:
        """The next item, waiting for it; `END` when the generation is over."""
        try:
            return self._taken(await self._receive.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return END

    def get_nowait(self) -> Any:
        """The next item if one is queued, else None; `END` when the generation is over."""
        try:
            return self._taken(self._receive.receive_nowait())
        except anyio.WouldBlock:
            return None
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return END

    async def finish(self, timeout: float = 10.0) -> bool:
        """Cancel (if still running), drain, and wait until the thread has let go.

        Returns False when the thread did not stop within `timeout` seconds.
        """
        self.cancel.cancel("client disconnected")
        stopped = False
        with anyio.move_on_after(timeout):
            while await self.get() is not END:
                pass
            stopped = True
        self._receive.close()
        return stopped
