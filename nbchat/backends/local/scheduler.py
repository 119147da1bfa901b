"""The engine's scheduler: one thread per model, a priority queue of jobs, cancel and time-out.

The lowest ``priority`` runs first among those waiting, FIFO within equal priority; a running
job is never pre-empted. Each job hands its events to its consumer through a BOUNDED queue: a
consumer that reads slowly (a slow HTTP client behind `nbchat serve`) holds the generation back
instead of letting events pile up. Cancelling sets the job's stop flag and aborts a running
``llama_decode`` through the model's abort flag, so the engine is free within one token.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import threading
from typing import Any

from .llama import LlamaModel

END = object()  # job queue sentinel: the stream is over
JOB_QUEUE = 64  # events a job may have produced ahead of its consumer


class Job:
    __slots__ = ("request", "priority", "seq", "out", "stop", "timed_out", "time_limit")

    def __init__(self, request: dict[str, Any], priority: int, seq: int, time_limit: Any):
        self.request = request
        self.priority = priority
        self.seq = seq
        self.out: queue.Queue[Any] = queue.Queue(JOB_QUEUE)
        self.stop = threading.Event()  # cancelled by the consumer
        self.timed_out = threading.Event()
        self.time_limit = time_limit

    def __lt__(self, other: Job) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)

    def put(self, item: Any) -> None:
        """Hand `item` to the consumer, waiting while it is behind; dropped once cancelled."""
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def wake(self) -> None:
        """Unblock a consumer waiting on an empty queue (a full queue never blocks it)."""
        try:
            self.out.put_nowait(END)
        except queue.Full:
            pass


class Engine:
    """One model + one scheduler thread + a priority queue of jobs."""

    def __init__(self, path: str, n_ctx: int, n_threads: int) -> None:
        self.model = LlamaModel(path, n_ctx, n_threads)
        self.path, self.n_ctx, self.n_threads = path, n_ctx, n_threads
        self._cond = threading.Condition()
        self._heap: list[Job] = []
        self._seq = itertools.count()
        self._current: Job | None = None
        self._thread: threading.Thread | None = None

    def llm(self) -> Any:
        return self.model.llm()

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text)

    def submit(self, request: dict[str, Any], time_limit: float | None) -> Job:
        job = Job(request, int(request.get("priority") or 0), next(self._seq), time_limit)
        with self._cond:
            heapq.heappush(self._heap, job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="nbchat-engine", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        job.stop.set()
        with self._cond:
            if self._current is job:
                self.model.abort()
        job.wake()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                job = heapq.heappop(self._heap)
                if job.stop.is_set():
                    continue
                self._current = job
                self.model.clear_abort()
            timer = None
            if job.time_limit:
                timer = threading.Timer(job.time_limit, self._time_out, (job,))
                timer.daemon = True
                timer.start()
            try:
                for ev in self.model.run(job.request, job.stop, job.timed_out):
                    job.put(ev)
            except BaseException as exc:  # handed to the consumer, never kills the thread
                job.put(exc)
            finally:
                if timer is not None:
                    timer.cancel()
                with self._cond:
                    self._current = None
                    self.model.clear_abort()
                job.put(END)

    def _time_out(self, job: Job) -> None:
        job.timed_out.set()
        with self._cond:
            if self._current is job:
                self.model.abort()


_ENGINES: dict[tuple[str, int, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(path: str, n_ctx: int, n_threads: int) -> Engine:
    """The process-wide engine for (file, n_ctx, n_threads), created on first use."""
    key = (os.path.realpath(path), n_ctx, n_threads)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = Engine(path, n_ctx, n_threads)
        return eng
