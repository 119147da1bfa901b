"""The engine's scheduler: one thread per model decodes up to `slots` requests in ONE batch.

Continuous batching: a request is admitted as soon as a slot is free (a finished or cancelled
sequence frees its slot for the next); while all slots are busy, requests wait in a priority
queue - the lowest ``priority`` is admitted first, FIFO within equal priority. A running
request is never pre-empted. Each loop evaluates at most one prompt chunk (`batch.CHUNK`
tokens: a long prompt does not stall the others' streams for more than a chunk) and then one
token for every generating sequence, in one ``llama_decode``.

Each job hands its events to its consumer through a BOUNDED queue; a consumer that reads slowly
(a slow HTTP client behind `nbchat serve`) pauses only its own sequence (it skips decode steps
until its queue drains), never the batch. Cancelling sets the job's stop flag; its slot is freed
at the next step, and a prompt chunk being evaluated for it is aborted (llama.cpp's abort flag).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import queue
import threading
from typing import Any

from .llama import LlamaModel
from .sequence import Sequence

END = object()  # job queue sentinel: the stream is over
JOB_QUEUE = 64  # events a job may have produced ahead of its consumer
IDLE_WAIT = 0.005  # seconds to wait when every sequence waits for its consumer


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

    def wake(self) -> None:
        """Unblock a consumer waiting on an empty queue (a full queue never blocks it)."""
        try:
            self.out.put_nowait(END)
        except queue.Full:
            pass


class _Running:
    """A job admitted to a slot: its sequence, events not yet taken, its timer."""

    __slots__ = ("job", "seq", "pending", "timer")

    def __init__(self, job: Job, seq: Sequence, timer: threading.Timer | None) -> None:
        self.job, self.seq, self.timer = job, seq, timer
        self.pending: collections.deque[Any] = collections.deque()

    def flush(self) -> bool:
        """Move pending events to the consumer's queue; True when nothing is left."""
        while self.pending:
            try:
                self.job.out.put_nowait(self.pending[0])
            except queue.Full:
                return False
            self.pending.popleft()
        return True


class Engine:
    """One model + one scheduler thread + a priority queue of waiting jobs."""

    def __init__(self, path: str, n_ctx: int, n_threads: int, slots: int = 4) -> None:
        self.model = LlamaModel(path, n_ctx, n_threads, slots)
        self.path, self.n_ctx, self.n_threads, self.slots = path, n_ctx, n_threads, slots
        self._cond = threading.Condition()
        self._heap: list[Job] = []
        self._seq = itertools.count()
        self._running: dict[int, _Running] = {}  # slot -> running job (scheduler thread only)
        self._prefilling: Job | None = None
        self._thread: threading.Thread | None = None
        # (job seq, slot) in admission order, the last 256 (tests and benches read it)
        self.admitted: collections.deque[tuple[int, int]] = collections.deque(maxlen=256)
        self.max_batch = 0  # the most sequences decoded in one llama_decode so far

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
            if self._prefilling is job:
                self.model.abort()
            self._cond.notify()
        job.wake()

    def _time_out(self, job: Job) -> None:
        job.timed_out.set()
        with self._cond:
            if self._prefilling is job:
                self.model.abort()
            self._cond.notify()

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                progressed = self._admit()
                progressed |= self._tend()
                progressed |= self._prefill_one()
                progressed |= self._decode_step()
            except BaseException as exc:  # never kills the thread: every running job ends
                for slot in list(self._running):
                    self._fail(slot, exc)
                progressed = True
            with self._cond:
                if not self._heap and not self._running:
                    self._cond.wait()
                elif not progressed:
                    self._cond.wait(IDLE_WAIT)

    def _admit(self) -> bool:
        """Start waiting jobs in free slots, lowest priority first."""
        jobs = []
        with self._cond:
            free = self.slots - len(self._running)
            while len(jobs) < free and self._heap:
                job = heapq.heappop(self._heap)
                if not job.stop.is_set():
                    jobs.append(job)
        for job in jobs:
            try:
                seq = Sequence(self.model, job.request)
            except BaseException as exc:  # bad request: raised to the consumer, before any event
                job.out.put_nowait(exc)
                job.out.put_nowait(END)
                continue
            ctx = self.model.ctx()
            free_slots = [s for s in range(self.slots) if s not in self._running]
            slot = max(free_slots, key=lambda s: (ctx.reusable(s, seq.tokens), -s))
            seq.slot = slot
            seq.at = ctx.start(slot, seq.tokens)
            timer = None
            if job.time_limit:
                timer = threading.Timer(job.time_limit, self._time_out, (job,))
                timer.daemon = True
                timer.start()
            run = _Running(job, seq, timer)
            run.pending.extend(seq.start())
            self._running[slot] = run
            self.admitted.append((job.seq, slot))
        return bool(jobs)

    def _tend(self) -> bool:
        """Hand events over; end cancelled, timed-out and finished sequences (freeing slots)."""
        changed = False
        for slot, run in list(self._running.items()):
            job, seq = run.job, run.seq
            if job.stop.is_set():
                self._release(slot)
                changed = True
                continue
            if job.timed_out.is_set() and not seq.done:
                run.pending.extend(seq.finish("TIMEOUT"))
            if run.flush() and seq.done:
                try:
                    job.out.put_nowait(END)
                except queue.Full:
                    continue
                self._release(slot)
                changed = True
        return changed

    def _release(self, slot: int) -> None:
        run = self._running.pop(slot)
        if run.timer is not None:
            run.timer.cancel()
        run.seq.close()
        self.model.ctx().release(slot)

    def _fail(self, slot: int, exc: BaseException) -> None:
        run = self._running[slot]
        if not run.seq.ended:
            run.pending.extend(run.seq.error(exc))
        run.seq.done = True

    def _prefill_one(self) -> bool:
        """Evaluate one prompt chunk of the most urgent sequence still reading its prompt."""
        waiting = [
            r for r in self._running.values() if not r.seq.done and r.seq.at < len(r.seq.tokens)
        ]
        if not waiting:
            return False
        run = min(waiting, key=lambda r: r.job)
        seq, ctx = run.seq, self.model.ctx()
        with self._cond:
            if run.job.stop.is_set():
                return True
            self._prefilling = run.job
            self.model.clear_abort()
            if run.job.timed_out.is_set():
                self.model.abort()
        try:
            seq.at = ctx.prefill_chunk(seq.slot, seq.tokens, seq.at)
        except InterruptedError:
            return True  # cancelled or timed out: _tend ends it
        except Exception as exc:
            self._fail(seq.slot, exc)
            return True
        finally:
            with self._cond:
                self._prefilling = None
                self.model.clear_abort()
        if seq.at == len(seq.tokens):
            seq.pos = seq.at
            self._sample(run, -1)
        return True

    def _decode_step(self) -> bool:
        """One token for every generating sequence whose consumer keeps up, in one batch."""
        ready = [
            r
            for r in self._running.values()
            if r.seq.token is not None and not r.pending and not r.job.stop.is_set()
        ]
        if not ready:
            return False
        self.model.ctx().step([(r.seq.token, r.seq.pos, r.seq.slot) for r in ready])
        self.max_batch = max(self.max_batch, len(ready))
        for i, run in enumerate(ready):
            run.seq.pos += 1
            self._sample(run, i)
        return True

    def _sample(self, run: _Running, index: int) -> None:
        try:
            run.pending.extend(run.seq.sample(index))
        except Exception as exc:
            self._fail(run.seq.slot, exc)


_ENGINES: dict[tuple[str, int, int, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(path: str, n_ctx: int, n_threads: int, slots: int = 4) -> Engine:
    """The process-wide engine for (file, n_ctx, n_threads, slots), created on first use."""
    key = (os.path.realpath(path), n_ctx, n_threads, slots)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = Engine(path, n_ctx, n_threads, slots)
        return eng
