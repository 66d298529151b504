"""The threads invocations run on: reused while work is short, never all held by long work.

A host runs wasm off its event loop on these threads (wasmtime-py releases the GIL while wasm
runs). Two measured facts shape the pool:

- one hot thread is fastest for short invocations: a second thread taking turns made trivial
  invocations slower (GIL hand-offs on every wasmtime call), so an idle thread is reused,
  most recently used first, and a new one is started only when every existing one is busy;
- one slow or hostile invocation must not hold up the others: an agent spinning until its deadline
  (or sleeping until it) used to stall every specialist on a one-thread host (an unrelated echo
  waited 11 s). So there are enough threads for the host's slots, and a thread whose invocation
  has run longer than ``demote_after_s`` is *demoted*: its scheduling priority drops to the
  lowest (nice 19), so on a busy machine the CPU goes to short invocations first, the way an
  operating system's feedback scheduler favours interactive work. A demoted thread that cannot be
  restored (raising priority needs privileges) retires when its invocation ends; a fresh one,
  at normal priority, takes its place when needed.

Nothing here knows what runs on the threads: the mesh passes ``Executor.run`` in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["WorkerPool"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

_LOWEST_PRIORITY = 19
_CHECK_EVERY_S = 0.01


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    future: Future[Any]


@dataclass(slots=True, eq=False)
class _Worker:
    thread: threading.Thread | None = None
    tid: int = 0
    job: _Job | None = None
    started: float = 0.0
    demoted: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


class WorkerPool:
    """Threads for blocking calls. ``await pool.run(fn)``; ``shutdown()`` when done."""

    def __init__(self, *, max_workers: int, demote_after_s: float = 0.05, name: str = "dagr-wasm") -> None:
        if max_workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.max_workers = max_workers
        self.demote_after_s = demote_after_s
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the most recently used is reused first
        self._busy: set[_Worker] = set()
        self._backlog: deque[_Job] = deque()
        self._closed = False
        self._count = 0
        #: Demotions so far (for stats and tests).
        self.demotions = 0
        self._monitor = threading.Thread(target=self._watch, name=f"{name}-monitor", daemon=True)
        self._monitor.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread and wait for it."""
        future: Future[T] = Future()
        self._submit(_Job(lambda: fn(*args), future))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop taking work; idle threads exit, busy ones after their job. Safe to call twice."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            backlog = list(self._backlog)
            self._backlog.clear()
        for job in backlog:
            job.future.cancel()
        for worker in idle:
            worker.wake.set()

    @property
    def threads(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return len(self._idle) + len(self._busy)

    # -- internals ---------------------------------------------------------------------------

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            if self._idle:
                worker = self._idle.pop()
                worker.job = job
                self._busy.add(worker)
                worker.wake.set()
                return
            if len(self._busy) < self.max_workers:
                worker = _Worker(job=job)
                self._busy.add(worker)
                self._count += 1
                worker.thread = threading.Thread(
                    target=self._serve, args=(worker,), name=f"{self._name}-{self._count}", daemon=True
                )
                worker.thread.start()
                return
            self._backlog.append(job)

    def _serve(self, worker: _Worker) -> None:
        worker.tid = threading.get_native_id()
        while True:
            job = worker.job
            if job is None:
                return
            if job.future.set_running_or_notify_cancel():
                worker.started = time.monotonic()
                try:
                    job.future.set_result(job.fn())
                except BaseException as exc:  # handed to the awaiting coroutine
                    job.future.set_exception(exc)
            with self._lock:
                worker.started = 0.0  # from here on the monitor leaves this thread alone
            if worker.demoted and not _set_priority(worker.tid, 0):
                retire = True  # it cannot get its priority back: a fresh thread will take over
            else:
                worker.demoted = False
                retire = False
            with self._lock:
                worker.job = None
                if self._backlog and not retire:
                    worker.job = self._backlog.popleft()
                    continue
                self._busy.discard(worker)
                if retire or self._closed:
                    if self._backlog and not self._closed:
                        self._start_for_backlog()
                    return
                worker.wake.clear()
                self._idle.append(worker)
            worker.wake.wait()
            with self._lock:
                if worker.job is None:  # woken by shutdown
                    return

    def _start_for_backlog(self) -> None:
        # Called with the lock held, after a worker retired with work still queued.
        job = self._backlog.popleft()
        worker = _Worker(job=job)
        self._busy.add(worker)
        self._count += 1
        worker.thread = threading.Thread(
            target=self._serve, args=(worker,), name=f"{self._name}-{self._count}", daemon=True
        )
        worker.thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(_CHECK_EVERY_S)
            with self._lock:
                if self._closed and not self._busy:
                    return
                now = time.monotonic()
                for worker in self._busy:
                    slow = worker.started and now - worker.started > self.demote_after_s
                    eligible = slow and not worker.demoted and worker.tid
                    if eligible and _set_priority(worker.tid, _LOWEST_PRIORITY):
                        worker.demoted = True
                        self.demotions += 1


def _set_priority(tid: int, nice: int) -> bool:
    """Set one thread's nice value (Linux: per thread). False if not permitted or not supported."""
    if not hasattr(os, "setpriority"):
        return False
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        return True
    return False
