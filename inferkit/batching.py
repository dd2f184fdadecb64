"""Batch jobs: many inference requests through one client, concurrently, in bounded memory.

Owns: :class:`BatchMixin` (``infer_many`` and ``infer_batched`` for the sync clients, written only in terms of
``self.infer``), and the transport-free pieces that :mod:`inferkit.aio.batching` shares: the scheduler that decides
what to send next (bounded in-flight count, bounded reorder buffer, request hedging within a budget), splitting
aligned arrays into requests and stitching the outputs back, :class:`ItemError` records, the progress bar, and
:class:`RebuildOnUnpickle` (clients pickle as their constructor arguments).

Must not import: requests, urllib3, aiohttp, grpc (the work goes through ``self.infer``), nor tqdm at import time
(it loads when ``progress=True``; it is the ``progress`` extra).

Guarantees of ``infer_many`` (sync and async alike):

* the input iterable is pulled lazily: at most ``2 * concurrency`` requests are held at any time (in flight, or
  answered and waiting in the reorder buffer for an earlier one);
* at most ``concurrency`` requests are in flight, hedge copies included;
* ordered (default): results come in input order; unordered: ``(index, result)`` pairs as they complete;
* ``return_exceptions=False``: the first failure stops submitting, waits for (sync) or cancels (async) the
  requests in flight, and is raised with ``.index`` set to the failed request's position;
  ``return_exceptions=True``: a failed request yields an :class:`ItemError` in its place;
* retries, timeouts and deadlines stay with the client, per request.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Generic,
    Iterable,
    Iterator,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import numpy as np

from inferkit.codec.datatypes import dtype_to_datatype
from inferkit.codec.tensors import InferInput, InferRequest, InferRequestedOutput, InferResponse
from inferkit.errors import DecodeError, EncodeError

__all__ = [
    "BatchMixin",
    "ItemError",
    "InferManyIterator",
    "HedgePolicy",
    "RebuildOnUnpickle",
    "infer_many",
    "infer_batched",
    "split_batches",
    "stitch_outputs",
]

T = TypeVar("T")
Outcome = Tuple[int, bool, Any, Any]  # (index, ok, response or exception, request)
OutputSpec = Union[str, InferRequestedOutput]


# -- records ---------------------------------------------------------------------------------------------------
class ItemError:
    """The record of one failed request, yielded in its place when ``return_exceptions=True``.

    It is not an exception (so it cannot be raised by mistake while iterating); ``raise item.exception`` re-raises
    what the client raised.

    Attributes:
        index: The request's position in the input iterable (0-based).
        exception: What the client raised for it (after its own retries).
        request: The request itself, so it can be sent again.
    """

    __slots__ = ("index", "exception", "request")

    def __init__(self, index: int, exception: BaseException, request: Any = None) -> None:
        self.index = index
        self.exception = exception
        self.request = request

    def __bool__(self) -> bool:
        # ``if result:`` reads as "did it work"; responses are always truthy.
        return False

    def __repr__(self) -> str:
        return f"ItemError(index={self.index}, exception={self.exception!r})"


def _mark_failed(exc: BaseException, index: int, what: str = "request") -> BaseException:
    """Say on the exception itself which input failed (``.index`` and, on Python 3.11+, a note)."""
    try:
        exc.index = index  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # an exception type that refuses new attributes keeps its own story
        pass
    if sys.version_info >= (3, 11):
        exc.add_note(
            f"infer_many: {what} #{index} failed; the others were stopped "
            "(pass return_exceptions=True to get an ItemError per failed request instead)"
        )
    return exc


# -- hedging ---------------------------------------------------------------------------------------------------
class HedgePolicy:
    """When to send a second copy of a slow request.

    After ``after`` seconds without an answer, a request gets one more copy, provided that the copies sent so far
    stay within ``budget`` of the requests sent (0.1: at most 10% extra) and a concurrency slot is free. The first
    successful answer wins; the other copy is cancelled (async clients, and the sync ones, whose requests run on an
    I/O loop or as gRPC futures), or, on worker threads (a sync REST client behind a proxy), its answer is
    discarded: a blocking call cannot be interrupted, so it keeps its slot until it returns. A request fails only
    when every copy failed.

    Args:
        after: Seconds to wait before hedging (> 0).
        budget: Largest ratio of hedge copies to requests (>= 0).
    """

    __slots__ = ("after", "budget")

    def __init__(self, after: float, budget: float = 0.1) -> None:
        if isinstance(after, bool) or not isinstance(after, (int, float)) or not after > 0:
            raise ValueError(f"hedge_after must be a number of seconds > 0, got {after!r}")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0:
            raise ValueError(f"hedge_budget must be a ratio >= 0 (0.1 = at most 10% extra requests), got {budget!r}")
        self.after = float(after)
        self.budget = float(budget)

    @classmethod
    def from_args(cls, hedge_after: float | None, hedge_budget: float) -> HedgePolicy | None:
        """The policy for ``infer_many``'s arguments (None when hedging is off)."""
        return None if hedge_after is None else cls(hedge_after, hedge_budget)


# -- the scheduler (shared by the sync and async drivers) -------------------------------------------------------
class _Item:
    __slots__ = ("request", "running", "error", "hedged")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.running = 1
        self.error: BaseException | None = None
        self.hedged = False


class _Scheduler:
    """What to send and what to hand out next; no I/O, no threads, no clock of its own.

    A driver (thread pool or asyncio tasks) asks ``can_pull()`` before taking the next request from the input,
    registers it with ``add()``, asks ``due_hedge(now)`` for copies to send, reports each finished attempt with
    ``complete()`` and hands out ``next_ready()`` results.
    """

    def __init__(self, concurrency: int, ordered: bool, hedge: HedgePolicy | None = None, queue_ahead: int = 0) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        # Submitted attempts may exceed `concurrency` by `queue_ahead` when the driver itself bounds how many run
        # (a pool of `concurrency` threads): the extra ones wait in its queue, so a worker that finishes starts
        # the next request at once instead of waiting for the consumer thread to hand it one.
        self.submit_limit = concurrency + queue_ahead
        self.window = 2 * concurrency
        self.ordered = ordered
        self.hedge = hedge
        self.in_flight = 0  # attempts submitted and not finished: hedge copies and discarded losers included
        self.pulled = 0
        self.handed_out = 0
        self.exhausted = False
        self.primaries = 0
        self.hedges = 0
        self.failure: Outcome | None = None  # first failed item (for fail-fast drivers)
        self._items: dict[int, _Item] = {}
        self._ready: dict[int, Outcome] = {}
        self._ready_fifo: deque[Outcome] = deque()
        self._next_out = 0
        self._hedge_due: deque[tuple[float, int]] = deque()

    def can_pull(self) -> bool:
        """Whether a new request may be taken from the input now."""
        return not self.exhausted and self.in_flight < self.submit_limit and self.pulled - self.handed_out < self.window

    def add(self, request: Any, now: float = 0.0) -> int:
        """Register a request about to be sent; returns its index."""
        index = self.pulled
        self.pulled += 1
        self._items[index] = _Item(request)
        self.in_flight += 1
        self.primaries += 1
        if self.hedge is not None:
            self._hedge_due.append((now + self.hedge.after, index))
        return index

    def _clean_hedges(self) -> None:
        due = self._hedge_due
        while due:
            item = self._items.get(due[0][1])
            if item is not None and not item.hedged:
                return
            due.popleft()

    def next_hedge_deadline(self) -> float | None:
        """When the driver should wake up to hedge (None: only a completion can change anything)."""
        if self.hedge is None or self.in_flight >= self.concurrency:
            return None
        self._clean_hedges()
        return self._hedge_due[0][0] if self._hedge_due else None

    def due_hedge(self, now: float) -> tuple[int, Any] | None:
        """A request to send a second copy of now, registered as running; None when there is none."""
        if self.hedge is None:
            return None
        due = self._hedge_due
        while True:
            self._clean_hedges()
            if not due or due[0][0] > now or self.in_flight >= self.concurrency:
                return None
            index = due.popleft()[1]
            if self.hedges + 1 > self.hedge.budget * self.primaries:
                continue  # over budget: this one is not hedged
            item = self._items[index]
            item.hedged = True
            item.running += 1
            self.in_flight += 1
            self.hedges += 1
            return index, item.request

    def is_resolved(self, index: int) -> bool:
        """Whether ``index`` has its outcome (so any copy still running is a loser)."""
        return index < self.pulled and index not in self._items

    def complete(self, index: int, ok: bool, value: Any) -> None:
        """Record one finished attempt of ``index``: its response (ok) or exception."""
        self.in_flight -= 1
        item = self._items.get(index)
        if item is None:
            return  # the losing copy of a hedged request
        item.running -= 1
        if ok:
            self._resolve(index, (index, True, value, None))
        elif item.running > 0:
            if item.error is None:
                item.error = value  # a copy is still running: it may yet succeed
        else:
            self._resolve(index, (index, False, item.error if item.error is not None else value, item.request))

    def _resolve(self, index: int, outcome: Outcome) -> None:
        del self._items[index]
        if not outcome[1] and self.failure is None:
            self.failure = outcome
        if self.ordered:
            self._ready[index] = outcome
        else:
            self._ready_fifo.append(outcome)

    def next_ready(self) -> Outcome | None:
        """The next outcome to hand out (input order when ordered), or None."""
        if self.ordered:
            outcome = self._ready.pop(self._next_out, None)
            if outcome is None:
                return None
            self._next_out += 1
        else:
            if not self._ready_fifo:
                return None
            outcome = self._ready_fifo.popleft()
        self.handed_out += 1
        return outcome

    @property
    def finished(self) -> bool:
        """Every request pulled has been handed out and the input is exhausted."""
        return self.exhausted and self.handed_out == self.pulled

    def raise_failure(self, return_exceptions: bool) -> None:
        """Fail fast: raise the first failed item (marked with its index) unless failures are returned."""
        if self.failure is not None and not return_exceptions:
            raise _mark_failed(self.failure[2], self.failure[0])

    def hand_out(self, bar: Any, return_exceptions: bool) -> Iterator[Any]:
        """Every result ready now, as the caller receives it (counted on the progress bar)."""
        while (outcome := self.next_ready()) is not None:
            bar.update()
            yield _present(outcome, self.ordered, return_exceptions)


def _present(outcome: Outcome, ordered: bool, return_exceptions: bool) -> Any:
    index, ok, value, request = outcome
    if ok:
        result = value
    elif return_exceptions:
        result = ItemError(index, value, request)
    else:
        raise _mark_failed(value, index)
    return result if ordered else (index, result)


# -- progress bar ------------------------------------------------------------------------------------------------
class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress_bar(progress: bool, total: int | None, desc: str = "infer") -> Any:
    """A tqdm bar when ``progress`` (ImportError naming the ``progress`` extra when tqdm is missing)."""
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415 - optional dependency, loaded only when asked for
    except ImportError as exc:
        raise ImportError("progress=True needs tqdm: pip install 'inferkit[progress]'") from exc
    return tqdm(total=total, unit="req", desc=desc, dynamic_ncols=True)


def _length_hint(requests: Any) -> int | None:
    try:
        return len(requests)
    except TypeError:
        return None


# -- the sync driver -------------------------------------------------------------------------------------------
class InferManyIterator(Generic[T]):
    """The iterator ``infer_many`` returns: results as they become available, in bounded memory.

    Leaving early (``break``, an exception, ``close()``, or leaving a ``with`` block) stops taking requests from
    the input, cancels the requests in flight (on worker threads, a blocking call cannot be interrupted and is
    waited for; the client's timeout bounds it) and joins every thread of the job, so none outlives the
    iteration. A ``for`` loop over the call itself
    closes it on ``break``; if you keep a reference, use ``with client.infer_many(...) as results:``.
    """

    def __init__(self, gen: Generator[T, None, None]) -> None:
        self._gen = gen

    def __iter__(self) -> InferManyIterator[T]:
        return self

    def __next__(self) -> T:
        return next(self._gen)

    def close(self) -> None:
        """Stop: nothing more is sent; returns once the requests in flight have returned."""
        self._gen.close()

    def __enter__(self) -> InferManyIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _iterate_sync(
    infer: Callable[[Any], Any],
    requests: Iterable[Any],
    *,
    hedge: HedgePolicy | None,
    start: StartFn | None = None,
    **common: Any,
) -> Generator[Any, None, None]:
    """The sync driver for :func:`_many_options`' arguments: :func:`_iterate_pooled`, or with hedging
    :func:`_iterate_hedged` (``common``: concurrency, ordered, return_exceptions, progress, total)."""
    if hedge is None:
        return _iterate_pooled(infer, requests, start=start, **common)
    return _iterate_hedged(infer, requests, hedge=hedge, start=start, **common)


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
    """One blocking ``infer`` per worker thread; a worker takes its next request from the queue itself."""

    def __init__(self, infer: Callable[[Any], Any], shared: _Shared, lock: threading.Lock, concurrency: int) -> None:
        super().__init__(shared, lock, concurrency)
        self.infer = infer
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
        if graceful:
            for thread in self.threads:
                thread.join()


#: ``start(request, done, defer) -> cancel``: begin one request without blocking; ``done(ok, value)`` once it
#: ended; ``defer(fn)`` runs ``fn`` where blocking is fine (a retry's sleeps). See ``InferenceGRPCClient`` (gRPC
#: futures) and ``InferenceRESTClient`` (one I/O loop, :mod:`inferkit._http_mux`).
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
    """Requests started without blocking (gRPC futures, the REST client's I/O loop): no thread per request in
    flight. The thread that reports an answer (gRPC's, or the loop's) starts the next queued request, so the
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
) -> Generator[Any, None, None]:
    """The driver without hedging: requests queued up to ``concurrency`` ahead, the consumer woken in batches.

    The input is pulled in the consumer's thread only (an iterator over a database cursor or anything else tied to
    its thread stays there), up to ``concurrency`` requests ahead of the engine: ``concurrency`` worker threads
    that take their next request from that queue themselves, or, given ``start`` (the gRPC client), requests
    started without blocking whose completions start the next ones. The consumer is woken only when it matters:
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
        _ThreadEngine(infer, shared, lock, concurrency)
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


class _ThreadCopies:
    """How the hedging driver runs copies on worker threads: one blocking ``infer`` each. A losing copy cannot
    be interrupted; it keeps its thread until it returns, and its answer is discarded."""

    def __init__(self, infer: Callable[[Any], Any], concurrency: int, done: queue.SimpleQueue[Any]) -> None:
        self.infer = infer
        self.done = done
        # One worker per slot: at most `concurrency` requests run; leaving early cancels the ones still queued.
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="inferkit-infer-many")

    def send(self, index: int, request: Any) -> None:
        self.pool.submit(self._attempt, index, request)

    def _attempt(self, index: int, request: Any) -> None:
        try:
            outcome = (index, True, self.infer(request))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes this item's outcome
            outcome = (index, False, exc)
        self.done.put(outcome)

    def cancel(self, index: int) -> None:
        """Nothing to do: a blocking call cannot be interrupted."""

    def stop(self, graceful: bool) -> None:
        self.pool.shutdown(wait=graceful, cancel_futures=True)


class _StartedCopies:
    """How the hedging driver runs copies started without blocking (gRPC futures, the REST client's I/O loop):
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
    engine and the consumer's thread, which also keeps the hedging clock, hands each request over: to worker
    threads, or, given ``start``, to requests started without blocking (then a losing copy is cancelled)."""
    sched = _Scheduler(concurrency, ordered, hedge)
    bar = make_progress_bar(progress, total)
    source = iter(requests)
    done: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
    clock = time.monotonic
    copies = _ThreadCopies(infer, concurrency, done) if start is None else _StartedCopies(start, concurrency, done)
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


def infer_many(
    infer: Callable[..., Any],
    requests: Iterable[Any],
    *,
    concurrency: int = 8,
    ordered: bool = True,
    return_exceptions: bool = False,
    progress: bool = False,
    timeout: Any = None,
    headers: Mapping[str, str] | None = None,
    hedge_after: float | None = None,
    hedge_budget: float = 0.1,
) -> InferManyIterator[Any]:
    """Run ``infer(request, headers=..., timeout=...)`` over many requests from a thread pool.

    The function form of :meth:`BatchMixin.infer_many`, for any callable with the client's ``infer`` signature.
    Arguments are validated here, before iteration starts.
    """
    options = _many_options(
        infer, requests, concurrency, ordered, return_exceptions, progress, timeout, headers, hedge_after, hedge_budget
    )
    return InferManyIterator(_iterate_sync(**options))


def _many_options(
    infer: Callable[..., Any],
    requests: Any,
    concurrency: int,
    ordered: bool,
    return_exceptions: bool,
    progress: bool,
    timeout: Any,
    headers: Mapping[str, str] | None,
    hedge_after: float | None,
    hedge_budget: float,
    total: int | None = -1,
) -> dict[str, Any]:
    """Validate the arguments of an ``infer_many`` call (now, before iteration starts) into a driver's keyword
    arguments (``_iterate_sync`` or the asyncio driver); ``total`` -1: the input's length hint."""
    hedge = HedgePolicy.from_args(hedge_after, hedge_budget)
    _Scheduler(concurrency, ordered)  # validates concurrency now rather than at the first next()
    return {
        "infer": functools.partial(infer, headers=headers, timeout=timeout),
        "requests": requests,
        "concurrency": concurrency,
        "ordered": ordered,
        "return_exceptions": return_exceptions,
        "progress": progress,
        "hedge": hedge,
        "total": _length_hint(requests) if total == -1 else total,
    }


# -- splitting and stitching (shared) --------------------------------------------------------------------------
class _Split:
    """Validated ``infer_batched`` arguments: how many rows and batches, and the requests (built lazily)."""

    def __init__(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        batch_size: int,
        outputs: Sequence[OutputSpec] | None = None,
        datatypes: Mapping[str, str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        model_version: str | None = None,
    ) -> None:
        if not isinstance(inputs, Mapping) or not inputs:
            raise EncodeError(
                f"model {model_name!r}: infer_batched needs inputs as a non-empty dict of input name -> numpy array"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EncodeError(f"model {model_name!r}: batch_size must be an integer >= 1, got {batch_size!r}")
        datatypes = dict(datatypes or {})
        unknown = sorted(set(datatypes) - set(inputs))
        if unknown:
            raise EncodeError(
                f"model {model_name!r}: datatypes given for {unknown}, which are not inputs ({sorted(inputs)})"
            )
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        rows: int | None = None
        first = ""
        for name, value in inputs.items():
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            if array.ndim == 0:
                raise EncodeError(
                    f"model {model_name!r}: input {name!r} is a scalar; infer_batched splits along the first axis, "
                    "so every input needs one (add a batch dimension, e.g. array[None])"
                )
            if rows is None:
                rows, first = int(array.shape[0]), name
            elif array.shape[0] != rows:
                raise EncodeError(
                    f"model {model_name!r}: inputs are not aligned along the first axis: {first!r} has {rows} rows "
                    f"but {name!r} has {array.shape[0]}; every input needs one row per example"
                )
            if name not in datatypes:
                try:
                    datatypes[name] = dtype_to_datatype(array.dtype)
                except EncodeError as exc:
                    raise EncodeError(
                        f"model {model_name!r}: input {name!r} has dtype {array.dtype}, which has no inference "
                        "datatype; convert the array or pass datatypes={name: ...}"
                    ) from exc
            arrays[name] = array
        self.model_name = model_name
        self.arrays = arrays
        self.rows = int(rows or 0)
        self.batch_size = batch_size
        self.batches = -(-self.rows // batch_size)
        self.datatypes = datatypes
        self.parameters = dict(parameters) if parameters else None
        self.model_version = model_version
        self.outputs = (
            None
            if outputs is None
            else [o if isinstance(o, InferRequestedOutput) else InferRequestedOutput(o) for o in outputs]
        )

    def bounds(self, batch: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of batch number ``batch``."""
        start = batch * self.batch_size
        return start, min(start + self.batch_size, self.rows)

    def requests(self) -> Iterator[InferRequest]:
        """One request per batch, built when pulled (slices are views: no copy before encoding)."""
        for batch in range(self.batches):
            start, stop = self.bounds(batch)
            tensors = []
            for name, array in self.arrays.items():
                part = array[start:stop]
                tensor = InferInput(name, part.shape, self.datatypes[name])
                tensor.set_data_from_numpy(part)
                tensors.append(tensor)
            yield InferRequest(
                self.model_name,
                tensors,
                parameters=self.parameters,
                outputs=self.outputs,
                model_version=self.model_version,
            )

    def annotate(self, exc: BaseException) -> BaseException:
        """Say which rows the failed batch held."""
        index = getattr(exc, "index", None)
        if isinstance(index, int) and sys.version_info >= (3, 11):
            start, stop = self.bounds(index)
            exc.add_note(f"infer_batched: batch #{index} held rows {start}:{stop} of model {self.model_name!r}")
        return exc


def split_batches(
    model_name: str,
    inputs: Mapping[str, Any],
    batch_size: int,
    outputs: Sequence[OutputSpec] | None = None,
    datatypes: Mapping[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    model_version: str | None = None,
) -> Iterator[InferRequest]:
    """Split arrays aligned along axis 0 into requests of ``batch_size`` rows (the last one may be shorter).

    Validates eagerly (EncodeError naming the model and tensor); builds each request lazily.
    """
    return _Split(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version).requests()


class _Stitcher:
    """Collects responses in order and concatenates each output along axis 0."""

    def __init__(self, model_name: str, wanted: Sequence[str] | None) -> None:
        self.model_name = model_name
        self.wanted = list(wanted) if wanted is not None else None
        self.parts: Dict[str, list[np.ndarray[Any, Any]]] = {}
        self.count = 0

    def add(self, response: InferResponse) -> None:
        names = self.wanted if self.wanted is not None else [o.name for o in response.outputs]
        if self.count == 0:
            self.parts = {name: [] for name in names}
        elif set(names) != set(self.parts):
            raise DecodeError(
                f"model {self.model_name!r}: batch #{self.count} returned outputs {sorted(names)} but earlier "
                f"batches returned {sorted(self.parts)}; cannot stitch them"
            )
        for name in names:
            try:
                self.parts[name].append(response.as_numpy(name))
            except KeyError as exc:
                raise DecodeError(f"model {self.model_name!r}: batch #{self.count} has no output {name!r}") from exc
        self.count += 1

    def result(self) -> dict[str, np.ndarray[Any, Any]]:
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name, parts in self.parts.items():
            try:
                out[name] = parts[0].copy() if len(parts) == 1 else np.concatenate(parts, axis=0)
            except ValueError as exc:
                raise DecodeError(
                    f"model {self.model_name!r}: output {name!r} cannot be concatenated along the first axis "
                    f"(shapes {[list(p.shape) for p in parts[:4]]}...): {exc}"
                ) from exc
        return out


def _output_names(outputs: Sequence[OutputSpec] | None) -> list[str] | None:
    if outputs is None:
        return None
    return [o.name if isinstance(o, InferRequestedOutput) else o for o in outputs]


def stitch_outputs(
    model_name: str, responses: Iterable[InferResponse], outputs: Sequence[OutputSpec] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """Concatenate each output of ``responses`` (in order) along the first axis into one array per output."""
    stitcher = _Stitcher(model_name, _output_names(outputs))
    for response in responses:
        stitcher.add(response)
    return stitcher.result()


def infer_batched(
    infer: Callable[..., Any],
    model_name: str,
    inputs: Mapping[str, Any],
    batch_size: int,
    outputs: Sequence[OutputSpec] | None = None,
    concurrency: int = 8,
    datatypes: Mapping[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    model_version: str | None = None,
    *,
    progress: bool = False,
    timeout: Any = None,
    headers: Mapping[str, str] | None = None,
    hedge_after: float | None = None,
    hedge_budget: float = 0.1,
) -> dict[str, np.ndarray[Any, Any]]:
    """The function form of :meth:`BatchMixin.infer_batched`, for any callable with ``infer``'s signature."""
    job = BatchedJob(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
    results = _iterate_sync(**job.options(infer, concurrency, progress, timeout, headers, hedge_after, hedge_budget))
    return job.collect(results)


class BatchedJob:
    """One ``infer_batched`` call without its I/O: validated arguments, the requests to send (via :meth:`options`,
    for a driver), and the stitching of the responses (:meth:`add`, :meth:`result`, :meth:`failed`)."""

    def __init__(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        batch_size: int,
        outputs: Sequence[OutputSpec] | None,
        datatypes: Mapping[str, str] | None,
        parameters: Mapping[str, Any] | None,
        model_version: str | None,
    ) -> None:
        self.split = _Split(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
        self.stitcher = _Stitcher(model_name, _output_names(outputs))

    def options(
        self,
        infer: Callable[..., Any],
        concurrency: int,
        progress: bool,
        timeout: Any,
        headers: Mapping[str, str] | None,
        hedge_after: float | None,
        hedge_budget: float,
    ) -> dict[str, Any]:
        """A driver's keyword arguments: the batches in order, failing fast."""
        rest = (concurrency, True, False, progress, timeout, headers, hedge_after, hedge_budget, self.split.batches)
        return _many_options(infer, self.split.requests(), *rest)

    def collect(self, results: Iterable[InferResponse]) -> dict[str, np.ndarray[Any, Any]]:
        """Stitch the responses of a sync driver; a failed batch is re-raised with a note naming its rows."""
        try:
            for response in results:
                self.add(response)
        except Exception as exc:
            raise self.failed(exc)  # noqa: B904 - the same exception, annotated with the failed batch's rows
        return self.result()

    def add(self, response: InferResponse) -> None:
        """The next batch's response, in order."""
        self.stitcher.add(response)

    def failed(self, exc: BaseException) -> BaseException:
        """``exc`` (a failed batch) with a note naming its rows, to re-raise."""
        self.split.annotate(exc)
        return exc

    def result(self) -> dict[str, np.ndarray[Any, Any]]:
        """Output name -> the batches' outputs concatenated along the first axis."""
        return self.stitcher.result()


# -- the mixin ---------------------------------------------------------------------------------------------------
class BatchMixin:
    """``infer_many`` and ``infer_batched`` for a sync client; needs only ``self.infer(request, headers, timeout)``.

    The client is shared by every worker thread (clients are thread-safe), so its connection pool should have at
    least ``concurrency`` connections (``RESTConfig.pool_maxsize``, 128 by default).
    """

    infer: Callable[..., Any]

    def infer_many(
        self,
        requests: Iterable[InferRequest],
        concurrency: int = 8,
        ordered: bool = True,
        return_exceptions: bool = False,
        progress: bool = False,
        timeout: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        hedge_after: Optional[float] = None,
        hedge_budget: float = 0.1,
    ) -> InferManyIterator[Any]:
        """Run many requests concurrently; an iterator over the results.

        Args:
            requests: Any iterable of :class:`InferRequest`, consumed lazily (a generator of millions is fine: at
                most ``2 * concurrency`` requests are held at a time).
            concurrency: Most requests in flight at once (the number of worker threads), hedge copies included.
            ordered: True: yield responses in input order (a bounded reorder buffer waits for slow ones).
                False: yield ``(index, response)`` pairs as they complete.
            return_exceptions: True: a failed request yields an :class:`ItemError` (``.index``, ``.exception``,
                ``.request``) in its place (as ``(index, ItemError)`` when unordered). False: the first failure
                stops submitting, waits for the requests in flight and is raised with ``.index`` set.
            progress: Show a tqdm progress bar (the ``progress`` extra).
            timeout: Passed to each ``infer`` call (per request; retries and deadlines are the client's).
            headers: Passed to each ``infer`` call.
            hedge_after: Seconds after which a request still unanswered gets a second copy (None: never).
                See :class:`HedgePolicy`; the losing copy is cancelled (on worker threads: run to its end and
                discarded).
            hedge_budget: Most hedge copies as a fraction of requests (0.1: 10% extra at most).

        Returns:
            An iterator (also a context manager); closing it stops the work and joins the worker threads.

        Raises:
            ValueError: Bad ``concurrency`` or hedging arguments (at the call, before any request is sent).
            ImportError: ``progress=True`` without tqdm.
        """
        options = _many_options(
            self.infer,
            requests,
            concurrency,
            ordered,
            return_exceptions,
            progress,
            timeout,
            headers,
            hedge_after,
            hedge_budget,
        )
        return InferManyIterator(_iterate_sync(**options, start=self._starter(headers, timeout, options)))

    def _starter(self, headers: Optional[Mapping[str, str]], timeout: Any, options: dict[str, Any]) -> StartFn | None:
        """The client's non-blocking start, bound to the call's headers and timeout; None: worker threads.

        ``options`` come from :func:`_many_options`. The client's ``_many_starter(headers, timeout, concurrency)``
        makes it: gRPC futures, or the REST client's I/O loop (:mod:`inferkit._http_mux`); it may return None
        (threads), and a start with a ``close(graceful)`` is closed when the driver stops.
        """
        make = getattr(self, "_many_starter", None)
        if make is None:
            return None
        start: StartFn | None = make(headers, timeout, options["concurrency"])
        return start

    def infer_batched(
        self,
        model_name: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        batch_size: int,
        outputs: Optional[Sequence[OutputSpec]] = None,
        concurrency: int = 8,
        datatypes: Optional[Mapping[str, str]] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        model_version: Optional[str] = None,
        progress: bool = False,
        timeout: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        hedge_after: Optional[float] = None,
        hedge_budget: float = 0.1,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Infer over arrays of any length: split them into requests of ``batch_size`` rows, stitch the outputs.

        Args:
            model_name: The model to run.
            inputs: Input name -> array; every array has the same length along the first axis (one row per
                example). Slices are sent without copying.
            batch_size: Rows per request (the last request may have fewer).
            outputs: Output names (or :class:`InferRequestedOutput`) to ask for and return; None: all of them.
            concurrency: Requests in flight at once.
            datatypes: Input name -> protocol datatype, where the array's dtype does not say it (e.g. ``"BF16"``).
            parameters: Request parameters sent with every batch.
            model_version: A specific model version.
            progress, timeout, headers, hedge_after, hedge_budget: As for :meth:`infer_many`.

        Returns:
            Output name -> one array: the batches' outputs concatenated along the first axis, in order.
            Zero rows give an empty dict (nothing is sent).

        Raises:
            EncodeError: Inputs not aligned along the first axis, a scalar input, an unknown dtype, a bad
                ``batch_size``: before anything is sent.
            DecodeError: Batches returned different outputs, or outputs that cannot be concatenated.
            InferkitError: The first failed batch, with ``.index`` (the batch number) and a note naming its rows.
        """
        job = BatchedJob(model_name, inputs, batch_size, outputs, datatypes, parameters, model_version)
        options = job.options(self.infer, concurrency, progress, timeout, headers, hedge_after, hedge_budget)
        results = _iterate_sync(**options, start=self._starter(headers, timeout, options))
        return job.collect(results)


# -- pickling ----------------------------------------------------------------------------------------------------
class RebuildOnUnpickle:
    """Pickle a client as its constructor arguments; unpickling builds a new client (new connections).

    A client holds sockets, pools and locks, none of which can cross a process boundary, but the arguments it
    was built from can (URL, ``RESTConfig``, gRPC options). Inherit from this class *before* the client's other
    bases: ``__new__`` records the arguments, ``__reduce__`` returns them. Arguments that cannot be pickled (a
    custom ``requests`` adapter, ``grpc.ChannelCredentials``) make pickling fail with pickle's own error naming
    the type: pass picklable settings (paths, PEM bytes) instead.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        self = super().__new__(cls)
        # Stored on the instance (not a slot) so subclasses with their own __init__ need no change.
        object.__setattr__(self, "_inferkit_init_args", (args, dict(kwargs)))
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = getattr(self, "_inferkit_init_args", ((), {}))
        return (_rebuild_client, (type(self), args, kwargs))


def _rebuild_client(cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)
