"""The sync driver with hedging: a copy of a slow request starts at once, and the first answer wins.

Owns: ``_iterate_hedged`` (the consumer's thread keeps the hedging clock and hands each request over) and how it
runs copies: ``_ThreadCopies`` (blocking calls on worker threads; a losing copy is cancelled through its scope,
or runs to its end without one) and ``_StartedCopies`` (requests started without blocking: a losing copy is
cancelled). When to hedge is the
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generator, Iterable

from inferkit.batching.engines import StartFn, _Deferred, _end_started, _until_done, no_cancel
from inferkit.batching.results import make_progress_bar
from inferkit.batching.scheduler import HedgePolicy, _Scheduler

__all__: list[str] = []


class _ThreadCopies:
    """How the hedging driver runs copies on worker threads: one blocking ``infer`` each, inside its own cancel
    scope when ``scope`` is given (the REST client: a losing copy's connection is closed); without one a losing
    copy runs to its end and its answer is discarded."""

    def __init__(
        self,
        infer: Callable[[Any], Any],
        concurrency: int,
        done: queue.SimpleQueue[Any],
        scope: Callable[[], Any] | None = None,
    ) -> None:
        self.infer = infer
        self.done = done
        self.scope = scope
        self.lock = threading.Lock()
        self.running: dict[int, list[Any]] = {}  # index -> the scopes of its copies still running
        # One worker per slot: at most `concurrency` requests run; leaving early cancels the ones still queued.
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="inferkit-infer-many")

    def send(self, index: int, request: Any) -> None:
        scope = self.scope() if self.scope is not None else None
        if scope is not None:
            with self.lock:
                self.running.setdefault(index, []).append(scope)
        self.pool.submit(self._attempt, index, request, scope)

    def _attempt(self, index: int, request: Any, scope: Any) -> None:
        try:
            if scope is None:
                outcome = (index, True, self.infer(request))
            else:
                with scope:
                    outcome = (index, True, self.infer(request))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes this item's outcome
            outcome = (index, False, exc)
        if scope is not None:
            with self.lock:
                copies = self.running.get(index, [])
                if scope in copies:
                    copies.remove(scope)
                if not copies:
                    self.running.pop(index, None)
        self.done.put(outcome)

    def cancel(self, index: int) -> None:
        """``index`` has its answer: cancel its copies still running (without a scope, nothing can be done)."""
        with self.lock:
            scopes = list(self.running.get(index, ()))
        for scope in scopes:
            scope.cancel()

    def stop(self, graceful: bool) -> None:
        with self.lock:
            scopes = [scope for copies in self.running.values() for scope in copies]
        for scope in scopes:
            scope.cancel()
        self.pool.shutdown(wait=graceful, cancel_futures=True)


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
    scope: Callable[[], Any] | None = None,
) -> Generator[Any, None, None]:
    """The driver with hedging: a copy of a slow request must start at once, so nothing queues ahead of the
    engine and the consumer's thread, which also keeps the hedging clock, hands each request over: to worker
    threads (each copy in its own cancel ``scope`` when given), or, given ``start``, to requests started without
    blocking; a losing copy is cancelled where it can be."""
    sched = _Scheduler(concurrency, ordered, hedge)
    bar = make_progress_bar(progress, total)
    source = iter(requests)
    done: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
    clock = time.monotonic
    copies: _ThreadCopies | _StartedCopies = (
        _ThreadCopies(infer, concurrency, done, scope) if start is None else _StartedCopies(start, concurrency, done)
    )
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
