"""Streams in ``inferkit bench --stream``: one ``generate_stream`` request of a step, timed event by event.

Owns: the senders of a stream step (:func:`stream_sender` for the sync clients on threads,
:func:`async_stream_sender` for ``inferkit.aio``) and :func:`stream_figures`, the stream columns of a step's result.
A request is one whole stream, read to its end. Time to first event (TTFE) runs from the ``generate_stream(...)``
call (in rate mode: from the request's due time) to the first event out of the iterator, the same on every client
whatever the call does before returning (sync REST reads the first event inside the call, sync gRPC sends at the
call, the aio streams send on first use). Time between events (TBE) runs from one event out of the iterator to
the next. Both are of successful streams only, like the latencies; events/s counts their events.

Must not import: grpc, aiohttp, tqdm, matplotlib, ``inferkit.aio`` and the clients (the client is given), the
other ``inferkit.bench`` modules but options.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from inferkit.bench.options import DEFAULT_PAYLOAD, BenchOptions

__all__ = ["async_stream_sender", "stream_figures", "stream_sender"]

#: ``send(recorder, measured, start)``: one request; raises what the request raised.
Sender = Callable[[Any, bool, float], Any]


def _keep(rec: Any, measured: bool, start: float, stamps: list[float]) -> None:
    """Record a finished stream's timings (``stamps``: when each event came out of the iterator)."""
    if not measured or not stamps:
        return
    rec.ttfe.append(stamps[0] - start)
    rec.gaps.extend(b - a for a, b in zip(stamps, stamps[1:]))
    rec.events += len(stamps)


def stream_sender(options: BenchOptions, client: Any) -> Sender:
    """One ``generate_stream`` request on a sync client, read to its end (closed early on an error)."""
    payload = options.payload if options.payload is not None else DEFAULT_PAYLOAD
    model, version, timeout = options.model, options.model_version, options.timeout
    clock = time.perf_counter

    def send(rec: Any, measured: bool, start: float) -> None:
        stamps: list[float] = []
        stream = client.generate_stream(model, payload, version, timeout=timeout)
        try:
            for _ in stream:
                stamps.append(clock())
        finally:
            stream.close()
        _keep(rec, measured, start, stamps)

    return send


def async_stream_sender(options: BenchOptions, client: Any) -> Callable[[Any, bool, float], Awaitable[None]]:
    """The aio :func:`stream_sender` (the stream is not awaited: it opens on first use)."""
    payload = options.payload if options.payload is not None else DEFAULT_PAYLOAD
    model, version, timeout = options.model, options.model_version, options.timeout
    clock = time.perf_counter

    async def send(rec: Any, measured: bool, start: float) -> None:
        stamps: list[float] = []
        stream = client.generate_stream(model, payload, version, timeout=timeout)
        try:
            async for _ in stream:
                stamps.append(clock())
        finally:
            await stream.aclose()
        _keep(rec, measured, start, stamps)

    return send


def _percentiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    p50, p95, p99 = (float(v) for v in np.percentile(np.array(values, dtype=np.float64) * 1e3, [50, 95, 99]))
    return p50, p95, p99


def stream_figures(recorders: Sequence[Any], seconds: float) -> dict[str, Any]:
    """The stream fields of a :class:`~inferkit.bench.step.StepResult` from a step's recorders."""
    ttfe = [x for r in recorders for x in r.ttfe]
    gaps = [x for r in recorders for x in r.gaps]
    events = sum(r.events for r in recorders)
    t50, t95, t99 = _percentiles(ttfe)
    g50, g95, g99 = _percentiles(gaps)
    return {
        "events": events,
        "events_per_s": events / seconds if seconds else 0.0,
        "ttfe_p50_ms": t50,
        "ttfe_p95_ms": t95,
        "ttfe_p99_ms": t99,
        "tbe_p50_ms": g50,
        "tbe_p95_ms": g95,
        "tbe_p99_ms": g99,
    }
