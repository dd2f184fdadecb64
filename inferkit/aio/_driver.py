"""THE async driver: how every call of every :mod:`inferkit.aio` client runs, from its first attempt to its result.

Owns: the same loop as the sync driver (:mod:`inferkit._transport.driver`), line for line, with ``await`` on each
attempt and ``asyncio.sleep`` for backoff: the first attempt (no retry machinery when it succeeds), then the call's
retry loop, a generator that decides while the driver does what it says. Cancelling the task cancels the attempt
in flight (each transport closes what it holds).
Must not import: requests, urllib3, grpc, inferkit._transport, inferkit.rest_client, inferkit.grpc_client.

A transport (:class:`inferkit.aio._transport.AsyncTransport`, :class:`inferkit.aio._grpc.AsyncGRPCTransport`)
provides ``async attempt(run, todo)`` and the plain ``settled``, ``result`` and ``retries`` of the sync interface.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["drive", "retry", "AsyncCallRunner"]


class AsyncCallRunner(Protocol):
    """What :func:`drive` needs of a transport (module docstring)."""

    async def attempt(self, run: Any, todo: Any) -> Any: ...

    def settled(self, run: Any, outcome: Any) -> bool: ...

    def result(self, run: Any, outcome: Any) -> Any: ...

    def retries(self, run: Any, outcome: Any) -> Any: ...


async def drive(transport: AsyncCallRunner, run: Any) -> Any:
    """Run one prepared call to its result (or its typed error) in this task."""
    outcome = await transport.attempt(run, None)
    if transport.settled(run, outcome):
        return transport.result(run, outcome)
    return await retry(transport, run, outcome)


async def retry(transport: AsyncCallRunner, run: Any, first: Any) -> Any:
    """The rest of a call after its first attempt failed (or must be decided by the retry loop): ``first``."""
    steps = transport.retries(run, first)
    first = outcome = None  # a failed attempt's reply or error is not held during backoff
    try:
        todo = next(steps)
        while True:
            if type(todo) is float:
                await asyncio.sleep(todo)
                outcome = None
            else:
                outcome = await transport.attempt(run, todo)
            todo = steps.send(outcome)
    except StopIteration as end:
        return end.value
