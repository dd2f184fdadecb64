"""The sync driver with hedging: a copy of a slow request starts at once, and the first answer wins.

Owns: ``_iterate_hedged`` (the consumer's thread keeps the hedging clock and hands each request over) and how it
runs copies (``_StartedCopies``: each copy started by the client's start function, or by a
:class:`~inferkit.batching.engines.ThreadStart` for a plain function; a losing copy is cancelled where the start
function can cancel it). When to hedge is the
scheduler's decision (:class:`~inferkit.batching.scheduler.HedgePolicy`), shared with the asyncio driver.

Must not import: requests, urllib3, aiohttp, grpc (the work goes through ``infer`` or a
:data:`~inferkit.batching.engines.StartFn`), the mixin, nor tqdm at import time.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import time
from typing import Any, Callable, Generator, Iterable

from inferkit.batching.engines import StartFn, ThreadStart, _Deferred, _end_started, _until_done, no_cancel
from inferkit.batching.results import make_progress_bar
from inferkit.batching.scheduler import HedgePolicy, _Scheduler

__all__: list[str] = []


class _StartedCopies:
    """How the hedging driver runs copies started by the client (gRPC futures, the REST client's workers):
    the losing copy of a request is cancelled as soon as the request has its answer."""

    def __init__(self, start: StartFn, concurrency: int, done: queue.SimpleQueue[Any]) -> None:
        self.start = start
        self.done = done
        self.deferred = _Deferred(concurrency)
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)
        self.running: dict[int, dict[int, Callable[[], Any]]] = {}  # index -> copy -> cancel
        self.copies = itertools.count()

    def send(self, index: int, request: Any) -> None:
        copy = next(self.copies)
        with self.lock:
            self.running.setdefault(index, {})[copy] = no_cancel  # it may end before start() returns
        cancel = self.start(request, functools.partial(self._done, index, copy), self.deferred)
        with self.lock:
            copies = self.running.get(index)
            if copies is not None and copy in copies:
                copies[copy] = cancel

    def _done(self, index: int, copy: int, ok: bool, value: Any) -> None:
        with self.lock:
            copies = self.running.get(index)
            if copies is not None:
                copies.pop(copy, None)
                if not copies:
                    del self.running[index]
            if not self.running:
                self.settled.notify_all()
        self.done.put((index, ok, value))

    def cancel(self, index: int) -> None:
        """``index`` has its answer: cancel its copies still running (each then reports its cancellation)."""
        with self.lock:
            cancels = list(self.running.get(index, {}).values())
        for cancel in cancels:
            cancel()

    def stop(self, graceful: bool) -> None:
        with self.lock:
            cancels = [cancel for copies in self.running.values() for cancel in copies.values()]
        _end_started(self, cancels, graceful)


def _iterate_hedged(
    infer: Callable[[Any], Any],
    requests: Iterable[Any],
    *,
    concurrency: int,
    ordered: bool,
    return_exceptions: bool,
    progress: bool,
    hedge: HedgePolicy,
    total: int | None,
    start: StartFn | None = None,
) -> Generator[Any, None, None]:
    """The driver with hedging: a copy of a slow request must start at once, so nothing queues ahead of the
    engine and the consumer's thread, which also keeps the hedging clock, hands each request over to ``start``
    (default: ``infer`` on worker threads); a losing copy is cancelled."""
    sched = _Scheduler(concurrency, ordered, hedge)
    bar = make_progress_bar(progress, total)
    source = iter(requests)
    done: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
    clock = time.monotonic
    copies = _StartedCopies(start or ThreadStart(infer, concurrency), concurrency, done)
    with _until_done(bar, copies.stop):
        while True:
            sched.raise_failure(return_exceptions)
            while (hedged := sched.due_hedge(clock())) is not None:
                copies.send(*hedged)
            while sched.can_pull():
                try:
                    request = next(source)
                except StopIteration:
                    sched.exhausted = True
                    break
                copies.send(sched.add(request, clock()), request)
            yield from sched.hand_out(bar, return_exceptions)
            if sched.finished:
                return
            if sched.in_flight == 0:
                continue  # the loop above made room: pull again
            deadline = sched.next_hedge_deadline()
            try:
                first = done.get() if deadline is None else done.get(timeout=max(0.0, deadline - clock()))
            except queue.Empty:
                continue  # time to hedge
            answers = [first]
            while True:  # take every answer that is already there before scheduling again
                try:
                    answers.append(done.get_nowait())
                except queue.Empty:
                    break
            for index, ok, value in answers:
                resolved = sched.is_resolved(index)
                sched.complete(index, ok, value)
                if not resolved and sched.is_resolved(index):
                    copies.cancel(index)  # the other copy, if one still runs, has lost
