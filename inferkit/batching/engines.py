"""The sync driver without hedging: requests queued ahead of an engine that runs them, the consumer woken in batches.

Owns: :data:`StartFn` (how a client starts one request without blocking) with :func:`settle` and
:func:`no_cancel` (helpers for clients that provide one), the engines (``_ThreadEngine``: one blocking ``infer``
per worker thread, cancellable through a scope; ``_StartEngine``: requests started without blocking, gRPC
futures), the helpers both sync drivers share to end their work (``_Deferred``, ``_end_started``,
``_until_done``), and ``_iterate_pooled``, the driver itself.

Must not import: requests, urllib3, aiohttp, grpc (the work goes through ``infer`` or a :data:`StartFn`), the
hedging driver or the mixin (they build on this module), nor tqdm at import time.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generator, Iterable, Iterator

from inferkit.batching.results import make_progress_bar
from inferkit.batching.scheduler import _Scheduler

__all__ = ["StartFn", "no_cancel", "settle"]


@contextlib.contextmanager
def _until_done(bar: Any, stop: Callable[[bool], None]) -> Iterator[None]:
    """A sync driver's ending: close the progress bar and ``stop(graceful)`` its engine, however the loop ended.

    Graceful (wait for the requests in flight) unless Ctrl-C and friends: their threads end with them.
    """
    graceful = True
    try:
        yield
    except GeneratorExit:
        raise
    except BaseException as exc:
        graceful = isinstance(exc, Exception)
        raise
    finally:
        bar.close()
        stop(graceful)


class _Shared:
    """What the consumer and the engine of :func:`_iterate_pooled` share, under one lock."""

    __slots__ = (
        "pending",
        "finished",
        "first_at",
        "outstanding",
        "exhausted",
        "failed",
        "stop",
        "waiting",
        "low",
        "high",
    )

    def __init__(self, concurrency: int) -> None:
        self.pending: deque[tuple[int, Any]] = deque()  # handed over by the consumer, not started yet
        self.finished: list[tuple[int, bool, Any]] = []  # answered, not yet seen by the consumer
        self.first_at = 0.0  # when the oldest answer in `finished` arrived (time.monotonic)
        self.outstanding = 0  # handed over and not finished
        self.exhausted = False  # the consumer has taken the input's last request
        self.failed = False
        self.stop = False
        self.waiting = 0  # the consumer sleeps: 1 until the first answer, 2 until due() (or its linger ran out)
        self.low = concurrency // 2  # wake the consumer to refill when this few requests are left queued
        self.high = concurrency  # ... or when this many answers wait for it

    def due(self) -> bool:
        """Whether the consumer has something worth waking up for."""
        if not self.finished:
            return False
        return (
            self.failed
            or self.outstanding == 0
            or len(self.finished) >= self.high
            or (not self.exhausted and len(self.pending) <= self.low)
        )


class _Engine:
    """Runs the requests the consumer queues in ``shared.pending``; reports each with :meth:`finish`."""

    def __init__(self, shared: _Shared, lock: threading.Lock, concurrency: int) -> None:
        self.shared = shared
        self.lock = lock
        self.concurrency = concurrency
        self.wake = threading.Condition(lock)  # the consumer waits here for shared.due()

    def finish(self, index: int, ok: bool, value: Any) -> None:
        """Record one answer (call with the lock held) and wake the consumer if it is due."""
        shared = self.shared
        if not shared.finished:
            shared.first_at = time.monotonic()
        shared.finished.append((index, ok, value))
        shared.outstanding -= 1
        if not ok:
            shared.failed = True
        if shared.waiting and (shared.waiting == 1 or shared.due()):
            shared.waiting = 0
            self.wake.notify()

    def fed(self, count: int) -> list[tuple[int, Any]]:
        """``count`` requests were added to ``shared.pending`` (lock held); returns what to :meth:`launch`."""
        raise NotImplementedError

    def launch(self, items: list[tuple[int, Any]]) -> None:
        """Start ``items`` (from :meth:`fed`; called without the lock)."""

    def stop(self, graceful: bool) -> None:
        """Start nothing more; with ``graceful``, return once every request started has ended."""
        raise NotImplementedError


class _ThreadEngine(_Engine):
    """One blocking ``infer`` per worker thread; a worker takes its next request from the queue itself.

    Given ``scope`` (a factory of cancel scopes: context managers with a ``cancel()`` method, the sync REST
    transport's ``CancelScope``), each worker runs inside its own scope, and :meth:`stop` cancels the requests in
    flight (their connections are closed) instead of waiting for them to end; without one they run to their end.
    """

    def __init__(
        self,
        infer: Callable[[Any], Any],
        shared: _Shared,
        lock: threading.Lock,
        concurrency: int,
        scope: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(shared, lock, concurrency)
        self.infer = infer
        self.scope = scope
        self.scopes: list[Any] = []
        self.work = threading.Condition(lock)  # idle workers wait here for a request
        self.threads: list[threading.Thread] = []

    def fed(self, count: int) -> list[tuple[int, Any]]:
        shared = self.shared
        while len(self.threads) < min(self.concurrency, shared.outstanding):
            thread = threading.Thread(target=self._worker, name="inferkit-infer-many", daemon=True)
            thread.start()
            self.threads.append(thread)
        if count:
            self.work.notify(count)
        return []

    def _worker(self) -> None:
        if self.scope is None:
            self._work()
            return
        scope = self.scope()
        with self.lock:
            self.scopes.append(scope)
            if self.shared.stop:
                return
        with scope:
            self._work()

    def _work(self) -> None:
        shared, lock, infer = self.shared, self.lock, self.infer
        while True:
            with lock:
                while not shared.pending:
                    if shared.stop:
                        return
                    self.work.wait()
                index, request = shared.pending.popleft()
            try:
                outcome = (index, True, infer(request))
            except BaseException as exc:  # noqa: BLE001 - every failure becomes this item's outcome
                outcome = (index, False, exc)
            request = None
            with lock:
                self.finish(*outcome)
            outcome = None  # type: ignore[assignment]

    def stop(self, graceful: bool) -> None:
        with self.lock:
            self.shared.stop = True
            self.shared.pending.clear()  # not started: cancelled
            self.work.notify_all()
            scopes = list(self.scopes)
        for scope in scopes:
            scope.cancel()  # a cancelled call ends at once: leaving early does not wait for it to finish
        if graceful:
            for thread in self.threads:
                thread.join()


#: ``start(request, done, defer) -> cancel``: begin one request without blocking; ``done(ok, value)`` once it
#: ended; ``defer(fn)`` runs ``fn`` where blocking is fine (a retry's sleeps). See ``InferenceGRPCClient`` (gRPC
#: futures) and ``InferenceRESTClient`` (worker threads, each request cancellable by closing its connection).
StartFn = Callable[[Any, Callable[[bool, Any], None], Callable[[Callable[[], None]], None]], Callable[[], Any]]


class _Deferred:
    """The ``defer`` of a :data:`StartFn`: runs functions that may block (a retry's sleeps) on up to
    ``concurrency`` helper threads, created when first needed."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.pool: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()

    def __call__(self, fn: Callable[[], None]) -> None:
        with self.lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="inferkit-infer-many")
            self.pool.submit(fn)

    def shutdown(self, graceful: bool) -> None:
        with self.lock:
            pool = self.pool
        if pool is not None:
            pool.shutdown(wait=graceful)


def _end_started(run: Any, cancels: list[Callable[[], Any]], graceful: bool) -> None:
    """The end of requests started without blocking (``run``: a :class:`_StartEngine` or :class:`_StartedCopies`,
    with ``lock``, ``settled``, ``running``, ``deferred`` and ``start``): cancel those still running (a cancelled
    call ends at once, so leaving early does not wait for it), with ``graceful`` wait until every one reported,
    then end the helpers and the start function's own loop, if it has one (the REST client's)."""
    for cancel in cancels:
        cancel()
    if graceful:
        with run.lock:
            while run.running:
                run.settled.wait()
    run.deferred.shutdown(graceful)
    close = getattr(run.start, "close", None)
    if close is not None:
        close(graceful)


class _StartEngine(_Engine):
    """Requests started by the client's start function (gRPC futures, the REST client's cancellable workers).
    The thread that reports an answer (gRPC's, or the worker's) starts the next queued request, so the
    consumer is only needed to refill."""

    def __init__(self, start: StartFn, shared: _Shared, lock: threading.Lock, concurrency: int) -> None:
        super().__init__(shared, lock, concurrency)
        self.start = start
        self.running: dict[int, Callable[[], Any]] = {}  # index -> cancel
        self.settled = threading.Condition(lock)  # stop() waits here for the running ones
        self.deferred = _Deferred(concurrency)
        self.local = threading.local()

    def fed(self, count: int) -> list[tuple[int, Any]]:
        shared = self.shared
        items = []
        while shared.pending and len(self.running) < self.concurrency and not shared.stop:
            index, request = shared.pending.popleft()
            self.running[index] = no_cancel  # counted before it starts: it may end before start() returns
            items.append((index, request))
        return items

    def launch(self, items: list[tuple[int, Any]]) -> None:
        local = self.local
        if getattr(local, "queue", None) is not None:
            local.queue.extend(items)  # a call that ended inside start(): started by the loop below, not nested
            return
        local.queue = queue_ = deque(items)
        try:
            while queue_:
                index, request = queue_.popleft()
                with self.lock:
                    if self.shared.stop:
                        self._settle(index)
                        continue
                cancel = self.start(request, functools.partial(self._done, index), self.deferred)
                request = None
                with self.lock:
                    if index in self.running:
                        self.running[index] = cancel
        finally:
            local.queue = None

    def _done(self, index: int, ok: bool, value: Any) -> None:
        with self.lock:
            self._settle(index)
            self.finish(index, ok, value)
            items = self.fed(0)
        value = None
        if items:
            self.launch(items)

    def _settle(self, index: int) -> None:
        self.running.pop(index, None)
        if self.shared.stop and not self.running:
            self.settled.notify_all()

    def stop(self, graceful: bool) -> None:
        with self.lock:
            self.shared.stop = True
            self.shared.pending.clear()
            cancels = list(self.running.values())
        _end_started(self, cancels, graceful)


def settle(done: Callable[[bool, Any], None], work: Callable[[], Any]) -> None:
    """``done(True, work())``, or ``done(False, exc)`` when it raised: how a :data:`StartFn` reports an outcome."""
    try:
        outcome = (True, work())
    except BaseException as exc:  # noqa: BLE001 - every failure is the item's outcome
        outcome = (False, exc)
    done(*outcome)


def no_cancel() -> bool:
    """The cancel function of a request that cannot be cancelled (it already ended, or runs on a thread)."""
    return False


#: The longest an answer waits for its batch before the consumer hands it out anyway (seconds).
_LINGER = 0.005


def _iterate_pooled(
    infer: Callable[[Any], Any],
    requests: Iterable[Any],
    *,
    concurrency: int,
    ordered: bool,
    return_exceptions: bool,
    progress: bool,
    total: int | None,
    start: StartFn | None = None,
    scope: Callable[[], Any] | None = None,
) -> Generator[Any, None, None]:
    """The driver without hedging: requests queued up to ``concurrency`` ahead, the consumer woken in batches.

    The input is pulled in the consumer's thread only (an iterator over a database cursor or anything else tied to
    its thread stays there), up to ``concurrency`` requests ahead of the engine: ``concurrency`` worker threads
    that take their next request from that queue themselves (each in a cancel ``scope`` when given: the REST
    client), or, given ``start`` (the gRPC client), requests started without blocking whose completions start the
    next ones. The consumer is woken only when it matters:
    the queue is down to half, ``concurrency`` answers are waiting, a request failed, or nothing is left running.
    Handing each request over and each answer back one at a time (a thread pool's futures) costs two or three
    thread switches per request more, under the GIL the largest part of a small request's client time at high
    concurrency (``benchmarks/batch_bench.py --part profile``).
    """
    sched = _Scheduler(concurrency, ordered, None, queue_ahead=concurrency)
    bar = make_progress_bar(progress, total)
    source = iter(requests)
    lock = threading.Lock()
    shared = _Shared(concurrency)
    engine: _Engine = (
        _ThreadEngine(infer, shared, lock, concurrency, scope)
        if start is None
        else _StartEngine(start, shared, lock, concurrency)
    )
    with _until_done(bar, engine.stop):
        while True:
            with lock:
                answers, shared.finished = shared.finished, []
            for answer in answers:
                sched.complete(*answer)
            del answers
            sched.raise_failure(return_exceptions)
            new: list[tuple[int, Any]] = []
            while sched.can_pull():
                try:
                    request = next(source)
                except StopIteration:
                    sched.exhausted = True
                    break
                new.append((sched.add(request), request))
            request = None
            if new or sched.exhausted:
                with lock:
                    shared.pending.extend(new)
                    shared.outstanding += len(new)
                    shared.exhausted = sched.exhausted
                    starts = engine.fed(len(new))
                del new
                if starts:
                    engine.launch(starts)
                del starts
            yield from sched.hand_out(bar, return_exceptions)
            if sched.finished:
                return
            with lock:
                while not shared.due():
                    if not shared.finished:
                        if shared.outstanding == 0:
                            break  # nothing running: the loop above made room (the reorder window); pull again
                        shared.waiting = 1
                        engine.wake.wait()
                        continue
                    # Answers are waiting but no batch is due yet: none waits longer than _LINGER to be handed out.
                    left = shared.first_at + _LINGER - time.monotonic()
                    if left <= 0:
                        break
                    shared.waiting = 2
                    engine.wake.wait(left)
                shared.waiting = 0
