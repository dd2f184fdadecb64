"""THE sync driver: how every blocking call of every sync client runs, from its first attempt to its result.

Owns: the loop that runs one call through a transport: the first attempt (with no retry machinery when it
succeeds, which is nearly always), then the call's retry loop (a generator from :mod:`inferkit._retry` or
:mod:`inferkit._grpc_common`: it decides, the driver only does what it says), blocking attempts and
``time.sleep`` for backoff. The async twin is :mod:`inferkit.aio._driver`: the same lines with ``await``.
Must not import: requests, urllib3, aiohttp, grpc, inferkit.aio.

A transport (:class:`inferkit._transport.http.SyncTransport`, :class:`inferkit._transport.grpc.SyncGRPCTransport`)
provides four methods, each taking the call it prepared (``run``):

* ``attempt(run, todo)``: send once and return the outcome, never raising for a transport failure (the outcome
  says what happened); ``todo`` is None for the first attempt, else what the retry loop yielded;
* ``settled(run, outcome)``: whether the first attempt's outcome is final and needs no retry loop;
* ``result(run, outcome)``: the call's result from that outcome;
* ``retries(run, outcome)``: the retry loop, fed the first attempt's outcome.

A blocking call can be cancelled from another thread when it runs inside a :class:`CancelScope` (``infer_many``
and hedging do this): the transport attaches the socket of each attempt to the scope, and ``cancel()`` shuts that
socket down, which ends the blocked read at once; the server sees the client go away.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Protocol

__all__ = ["drive", "retry", "clock", "SyncCallRunner", "CancelScope", "current_scope"]

_local = threading.local()


def clock() -> float:
    """The monotonic clock of every retry loop and deadline (one place for tests to stand a fake clock in)."""
    return time.monotonic()


class SyncCallRunner(Protocol):
    """What :func:`drive` needs of a transport (module docstring)."""

    def attempt(self, run: Any, todo: Any) -> Any: ...

    def settled(self, run: Any, outcome: Any) -> bool: ...

    def result(self, run: Any, outcome: Any) -> Any: ...

    def retries(self, run: Any, outcome: Any) -> Any: ...


def drive(transport: SyncCallRunner, run: Any) -> Any:
    """Run one prepared call to its result (or its typed error) on this thread."""
    outcome = transport.attempt(run, None)
    if transport.settled(run, outcome):
        return transport.result(run, outcome)
    return retry(transport, run, outcome)


def retry(transport: SyncCallRunner, run: Any, first: Any) -> Any:
    """The rest of a call after its first attempt failed (or must be decided by the retry loop): ``first``."""
    steps = transport.retries(run, first)
    first = outcome = None  # a failed attempt's reply or error is not held during backoff
    try:
        todo = next(steps)
        while True:
            if type(todo) is float:
                time.sleep(todo)
                outcome = None
            else:
                outcome = transport.attempt(run, todo)
            todo = steps.send(outcome)
    except StopIteration as end:
        return end.value


class CancelScope:
    """Lets another thread cancel the blocking call that runs inside ``with scope:`` on this thread.

    :meth:`cancel` marks the scope and shuts down the socket of the attempt in flight (only this connection:
    it is closed, never given back to the pool half-read); an attempt that starts after it does not send.
    The transport then raises :class:`~inferkit.errors.CancelledError` instead of retrying.
    """

    __slots__ = ("cancelled", "_sock", "_lock")

    def __init__(self) -> None:
        self.cancelled = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> CancelScope:
        _local.scope = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        _local.scope = None

    def attach(self, sock: socket.socket | None) -> bool:
        """The attempt in flight now uses ``sock`` (None: it ended); False when the scope is already cancelled."""
        with self._lock:
            self._sock = sock
            return not self.cancelled

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


def current_scope() -> CancelScope | None:
    """The :class:`CancelScope` this thread runs in, if any."""
    return getattr(_local, "scope", None)
