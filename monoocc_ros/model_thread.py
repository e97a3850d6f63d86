"""One long-lived thread for all of a model's work: loading, warm-up, inference and release.

PyTorch's CPU operators and the fused C kernels run their parallel regions on OpenMP (libgomp),
which keeps one team of worker threads for every thread that ever started a parallel region. Once
the teams together hold more threads than there are cores, libgomp stops spinning between regions
(its "throttled" spin count) and every region pays a sleep and a wake-up. A node that loaded and
warmed up its model on the executor thread and ran it on an inference thread had two teams: on two
cores the same model ran about 40 % slower there than in a process with one team
(``bench/bench_omp_teams.py``). Running everything of the model on this one thread keeps one team.

Example:
    >>> worker = ModelThread("example")
    >>> worker.call(lambda: 6 * 7)
    42
    >>> worker.call(lambda: 1 / 0)
    Traceback (most recent call last):
    ...
    ZeroDivisionError: division by zero
    >>> worker.close()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

__all__ = ["ModelThread"]

R = TypeVar("R")


class ModelThread:
    """A daemon thread that runs submitted callables one at a time, in order.

    Daemon, so a job that never returns (an inference loop whose stop flag was never set) cannot keep
    the process from exiting; :meth:`close` ends the thread after the jobs already queued.
    """

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], R]) -> Future:
        """Queue ``fn``; the Future holds its result or its exception."""
        if threading.get_ident() == self._thread.ident:
            raise RuntimeError("ModelThread.submit from its own thread would wait for itself")
        future: Future = Future()
        self._jobs.put((fn, future))
        return future

    def call(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` on the thread and return its result (its exception is raised here)."""
        return self.submit(fn).result()

    def close(self) -> None:
        """End the thread once the queued jobs are done (returns at once)."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:  # noqa: BLE001 - handed to the caller through the Future
                future.set_exception(err)
