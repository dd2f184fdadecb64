"""The scheduler of a batch job: what to send next and what to hand out next, with no I/O of its own.

Owns: :class:`HedgePolicy` (when a slow request gets a second copy, within a budget: a value the scheduler
applies), ``_Scheduler`` (bounded in-flight count, bounded reorder buffer, hedging decisions, the first failure)
and ``_many_options`` (an ``infer_many`` call's arguments validated into a driver's keyword arguments). Shared by
the sync drivers (:mod:`inferkit.batching.engines`, :mod:`inferkit.batching.hedging`) and the asyncio one
(:mod:`inferkit.aio.batching`): no threads, no sockets, no clock of its own.

Must not import: requests, urllib3, aiohttp, grpc, threading or asyncio code (the drivers own I/O), the drivers
(``engines``, ``hedging``, ``mixin``), nor tqdm.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import Any, Callable, Iterator, Mapping

from inferkit.batching.results import Outcome, _mark_failed, _present

__all__ = ["HedgePolicy", "generate_call"]


# -- hedging policy ----------------------------------------------------------------------------------------------
class HedgePolicy:
    """When to send a second copy of a slow request.

    After ``after`` seconds without an answer, a request gets one more copy, provided that the copies sent so far
    stay within ``budget`` of the requests sent (0.1: at most 10% extra) and a concurrency slot is free. The first
    successful answer wins; the other copy is cancelled (async clients; sync gRPC cancels its future, sync REST
    closes the copy's connection), or, for a plain function given to :func:`infer_many`, its answer is
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


def _length_hint(requests: Any) -> int | None:
    try:
        return len(requests)
    except TypeError:
        return None


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


def generate_call(generate: Callable[..., Any], model_name: str, model_version: str | None) -> Callable[..., Any]:
    """``generate`` bound to a model, with ``infer``'s call shape (``(payload, headers=, timeout=)``), so that the
    batch drivers run generate payloads exactly as they run requests (sync and aio alike)."""

    def call(payload: Mapping[str, Any], headers: Mapping[str, str] | None = None, timeout: Any = None) -> Any:
        return generate(model_name, payload, model_version, headers, timeout)

    return call
