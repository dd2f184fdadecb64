"""One step of ``inferkit bench``: a concurrency level (closed loop) or a request rate (open loop), and its figures.

Owns: the request slots of a step (``_Tickets``: warm-up, then measured, then stop), each worker's results
(``_Recorder``), :class:`StepResult` and the step's summary, and the two ways of driving a step: worker threads
with the sync clients (``_run_step_threads``) or tasks on one asyncio loop with ``inferkit.aio``
(``_run_step_async``), each request being what the run's sender does (``infer``, or a whole ``generate_stream``:
see :mod:`~inferkit.bench.stream`). In rate mode a request's latency counts from its due time (no coordinated
omission).

Must not import: grpc, aiohttp, tqdm, matplotlib, ``inferkit.aio`` (the client is given), the run or the
command line modules.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Sequence

import numpy as np

from inferkit.bench.options import BenchOptions
from inferkit.bench.stream import stream_figures

__all__ = ["StepResult"]

_STOP, _WARMUP, _MEASURE = -1, 0, 1


class _Tickets:
    """Hands out request slots for one step: warm-up ones first, then measured ones, then stop.

    ``take(now)`` is called before each request (``now`` is the due time in rate mode); thread-safe.
    """

    def __init__(self, options: BenchOptions, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._warm_left = options.warmup_requests
        self._warm_until = clock() + options.warmup_seconds if options.warmup_seconds else None
        self._measure_left = options.requests
        self._duration = options.duration
        self.requests = options.requests  # the step's bounds, for the progress display
        self.duration = options.duration
        self.measure_start: float | None = None
        self.measure_end: float | None = None
        self.issued = 0  # measured requests handed out
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def take(self, now: float | None = None) -> int:
        with self._lock:
            if self.stopped:
                return _STOP
            t = self._clock() if now is None else now
            if self._warm_left > 0:
                self._warm_left -= 1
                return _WARMUP
            if self._warm_until is not None and t < self._warm_until:
                return _WARMUP
            if self.measure_start is None:
                self.measure_start = t
                if self._duration is not None:
                    self.measure_end = t + self._duration
            if self.measure_end is not None and t >= self.measure_end:
                self.stopped = True
                return _STOP
            if self._measure_left is not None:
                if self._measure_left <= 0:
                    self.stopped = True
                    return _STOP
                self._measure_left -= 1
            self.issued += 1
            return _MEASURE

    def fraction_done(self, now: float) -> float:
        """0..1 progress of the measured phase (the larger of count and time fractions)."""
        if self.measure_start is None:
            return 0.0
        done = 0.0
        if self.measure_end is not None and self._duration:
            done = (now - self.measure_start) / self._duration
        if self._measure_left is not None:
            total = self.issued + self._measure_left
            done = max(done, self.issued / total if total else 1.0)
        return min(1.0, max(0.0, done))


class _Recorder:
    """Results of one worker (no lock: each worker has its own; merged after the step)."""

    __slots__ = ("latencies", "errors", "messages", "last_end", "lags", "ttfe", "gaps", "events")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.messages: dict[str, str] = {}  # error class -> its first message (what to fix is in it)
        self.last_end = 0.0
        self.lags: list[float] = []
        self.ttfe: list[float] = []  # streams: seconds to the first event, then between events, and their count
        self.gaps: list[float] = []
        self.events = 0

    def done(self, kind: int, start: float, end: float, error: BaseException | None) -> None:
        if kind != _MEASURE:
            return
        self.last_end = max(self.last_end, end)
        if error is None:
            self.latencies.append(end - start)
        else:
            name = type(error).__name__
            self.errors[name] += 1
            if name not in self.messages:
                self.messages[name] = _one_line(error)


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An error's message on one line, at most ``limit`` characters (the class name when it has none)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class StepResult:
    """One step's figures. Latencies are of successful requests, in milliseconds.

    Attributes:
        mode: ``"concurrency"`` or ``"rate"``.
        level: The concurrency (closed loop) or the target request rate (open loop).
        requests: Measured requests completed (successes and errors).
        ok: Successful requests.
        errors: Error class name -> count.
        error_messages: Error class name -> the first message of that class in the step (one line).
        seconds: Measured wall time, from the first measured request's start to the last one's end.
        throughput: Successful requests per second.
        p50_ms, p90_ms, p99_ms, max_ms, mean_ms: Latency percentiles.
        error_rate: errors / requests.
        send_lag_p99_ms: Rate mode: 99th percentile of how late requests were sent after their due time.
        events, events_per_s: Streams (``--stream``): events of the successful streams, and per second.
        ttfe_p50_ms, ttfe_p95_ms, ttfe_p99_ms: Streams: time to first event (from the call, or the due time).
        tbe_p50_ms, tbe_p95_ms, tbe_p99_ms: Streams: time between consecutive events of a stream.
    """

    mode: str
    level: float
    requests: int
    ok: int
    errors: dict[str, int]
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    error_rate: float
    send_lag_p99_ms: Optional[float] = None
    error_messages: dict[str, str] = field(default_factory=dict)
    events: Optional[int] = None
    events_per_s: Optional[float] = None
    ttfe_p50_ms: Optional[float] = None
    ttfe_p95_ms: Optional[float] = None
    ttfe_p99_ms: Optional[float] = None
    tbe_p50_ms: Optional[float] = None
    tbe_p95_ms: Optional[float] = None
    tbe_p99_ms: Optional[float] = None

    @property
    def label(self) -> str:
        if self.mode == "rate":
            return f"{self.level:g}/s"
        return f"{int(self.level)}"


def _summarize(options: BenchOptions, level: float, tickets: _Tickets, recorders: Sequence[_Recorder]) -> StepResult:
    lat = np.array([x for r in recorders for x in r.latencies], dtype=np.float64) * 1e3
    errors: Counter[str] = Counter()
    messages: dict[str, str] = {}
    for r in recorders:
        errors.update(r.errors)
        for name, message in r.messages.items():
            messages.setdefault(name, message)
    n_err = sum(errors.values())
    ok = int(lat.size)
    total = ok + n_err
    start = tickets.measure_start or 0.0
    end = max((r.last_end for r in recorders), default=start)
    seconds = max(end - start, 1e-9) if total else 0.0
    if ok:
        p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
        mx, mean = float(lat.max()), float(lat.mean())
    else:
        p50 = p90 = p99 = mx = mean = float("nan")
    lags = [x for r in recorders for x in r.lags]
    lag = float(np.percentile(np.array(lags) * 1e3, 99)) if lags else None
    streams = stream_figures(recorders, seconds) if options.stream else {}
    return StepResult(
        mode=options.mode,
        level=level,
        requests=total,
        ok=ok,
        errors=dict(sorted(errors.items())),
        seconds=seconds,
        throughput=ok / seconds if seconds else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        max_ms=mx,
        mean_ms=mean,
        error_rate=n_err / total if total else 0.0,
        send_lag_p99_ms=lag,
        error_messages=dict(sorted(messages.items())),
        **streams,
    )


def _interval(rate: float) -> float:
    return 1.0 / rate


def infer_sender(options: BenchOptions, client: Any, request: Any) -> Callable[[_Recorder, bool, float], Any]:
    """``send(recorder, measured, start)``: one ``infer`` of ``request``."""
    timeout = options.timeout

    def send(rec: _Recorder, measured: bool, start: float) -> Any:
        return client.infer(request, timeout=timeout)

    return send


def _run_step_threads(
    options: BenchOptions,
    send: Callable[[_Recorder, bool, float], Any],
    level: float,
    tickets: _Tickets,
    recorders: list[_Recorder],
) -> None:
    clock = time.perf_counter

    def call(rec: _Recorder, kind: int, start: float) -> None:
        error: BaseException | None = None
        try:
            send(rec, kind == _MEASURE, start)
        except Exception as exc:  # every failure is a figure of the step, by class
            error = exc
        rec.done(kind, start, clock(), error)

    if options.mode == "concurrency":

        def worker(rec: _Recorder) -> None:
            while True:
                kind = tickets.take()
                if kind == _STOP:
                    return
                call(rec, kind, clock())

        recorders.extend(_Recorder() for _ in range(int(level)))
        threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in recorders]
        for t in threads:
            t.start()
        _join_all(threads, tickets)
        return

    # Open loop: the scheduler (this thread) hands each due request to a pool; latency counts from the due time.
    local = threading.local()
    interval = _interval(level)

    def job(kind: int, due: float) -> None:
        rec = getattr(local, "rec", None)
        if rec is None:
            rec = local.rec = _Recorder()
            with lock:
                recorders.append(rec)
        if kind == _MEASURE:
            rec.lags.append(max(0.0, clock() - due))
        call(rec, kind, due)

    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=options.max_inflight, thread_name_prefix="inferkit-bench")
    try:
        base = clock()
        k = 0
        while True:
            due = base + k * interval
            kind = tickets.take(due)
            if kind == _STOP:
                break
            delay = due - clock()
            if delay > 0:
                time.sleep(delay)
            pool.submit(job, kind, due)
            k += 1
    except BaseException:
        tickets.stop()
        raise
    finally:
        pool.shutdown(wait=True)


def _join_all(threads: Sequence[threading.Thread], tickets: _Tickets) -> None:
    try:
        for t in threads:
            while t.is_alive():  # short joins keep Ctrl-C responsive; requests are bounded by their timeout
                t.join(0.2)
    except BaseException:
        tickets.stop()
        for t in threads:
            t.join(1.0)
        raise


def async_infer_sender(
    options: BenchOptions, client: Any, request: Any
) -> Callable[[_Recorder, bool, float], Awaitable[Any]]:
    """The aio :func:`infer_sender`."""
    timeout = options.timeout

    async def send(rec: _Recorder, measured: bool, start: float) -> Any:
        return await client.infer(request, timeout=timeout)

    return send


async def _run_step_async(
    options: BenchOptions,
    send: Callable[[_Recorder, bool, float], Awaitable[Any]],
    level: float,
    tickets: _Tickets,
    recorders: list[_Recorder],
) -> None:
    clock = time.perf_counter

    async def call(rec: _Recorder, kind: int, start: float) -> None:
        error: BaseException | None = None
        try:
            await send(rec, kind == _MEASURE, start)
        except Exception as exc:  # every failure is a figure of the step, by class
            error = exc
        rec.done(kind, start, clock(), error)

    if options.mode == "concurrency":

        async def worker(rec: _Recorder) -> None:
            while True:
                kind = tickets.take()
                if kind == _STOP:
                    return
                await call(rec, kind, clock())

        recorders.extend(_Recorder() for _ in range(int(level)))
        try:
            await asyncio.gather(*(worker(r) for r in recorders))
        finally:
            tickets.stop()
        return

    rec = _Recorder()
    recorders.append(rec)
    limit = asyncio.Semaphore(options.max_inflight)
    pending: set[asyncio.Task[None]] = set()
    interval = _interval(level)

    async def job(kind: int, due: float) -> None:
        async with limit:
            if kind == _MEASURE:
                rec.lags.append(max(0.0, clock() - due))
            await call(rec, kind, due)

    try:
        base = clock()
        k = 0
        while True:
            due = base + k * interval
            kind = tickets.take(due)
            if kind == _STOP:
                break
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(job(kind, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += 1
        if pending:
            await asyncio.gather(*pending)
    finally:
        tickets.stop()
        for task in pending:
            task.cancel()
