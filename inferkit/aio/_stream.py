"""Server-sent event streams on the async HTTP transport: ``generate_stream`` of the aio REST client.

Owns: one attempt of a streamed request for the async driver (:func:`inferkit.aio._driver.drive`): it sends the
request and, on a 2xx event stream, reads until the first event is complete, so that everything before the first
event is retried under the client's retry policy by the shared retry loop and nothing after it is; and
:class:`AsyncEventStream`, handed to the caller without awaiting: an async iterator and an async context manager
that opens the stream on first use. aiohttp's ``sock_read`` timeout bounds each wait for bytes (the time per event)
and the call's deadline the whole stream; leaving early (``aclose``, ``async with``, cancelling the task) closes
the connection, never giving it back to the pool half-read.
Must not import: requests, urllib3, grpc, inferkit._transport, inferkit.rest_client, inferkit.grpc_client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Generator, Mapping

from inferkit import errors
from inferkit._retry import Attempt, AttemptFailed, Budget
from inferkit.aio._driver import drive
from inferkit.aio._transport import AsyncTransport, _classify, _Prepared
from inferkit.codec.event_stream import EventStreamBase
from inferkit.codec.generate import is_event_stream
from inferkit.codec.http_wire import READ_CHUNK, BodyReader, BodyTooLarge
from inferkit.codec.rest_calls import Opened, Reply, RestCall

__all__ = ["AsyncEventStream"]


class _Runner:
    """The async driver's interface for one streamed request."""

    def __init__(self, transport: AsyncTransport) -> None:
        self.t = transport

    async def attempt(self, prep: _Prepared, todo: Attempt | None) -> Any:
        budget = prep.budget if todo is None else todo.budget
        try:
            return await _open(self.t, prep, budget)
        except (AttemptFailed, BodyTooLarge) as failure:
            return failure

    def settled(self, prep: _Prepared, outcome: Any) -> bool:
        return type(outcome) is Opened and not self.t.config.verbose

    def result(self, prep: _Prepared, outcome: Any) -> Any:
        return outcome

    def retries(self, prep: _Prepared, first: Any) -> Generator[Attempt | float, Any, Any]:
        steps: Generator[Attempt | float, Any, Any] = self.t.retries(prep, first)
        return steps


async def _open(t: AsyncTransport, prep: _Prepared, budget: Budget) -> Any:
    aiohttp = t.aiohttp
    slots = prep.loop.slots
    if slots.locked():  # as the transport's own attempts: wait_for (a task) only when the pool is full
        try:
            await asyncio.wait_for(slots.acquire(), budget.pool)
        except asyncio.TimeoutError as exc:
            raise AttemptFailed("pool", exc, timeout=budget.pool) from None
    else:
        await slots.acquire()
    resp = None
    handed = got_status = False
    try:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=budget.connect, sock_read=budget.read, connect=None)
        resp = await prep.loop.session.request(
            prep.call.method,
            prep.url,
            data=prep.body,
            headers=prep.items,
            timeout=timeout,
            proxy=t._proxy,
            allow_redirects=False,
        )
        got_status = True
        if resp.status >= 300 or not is_event_stream(resp.headers.get("Content-Type")):
            reader = BodyReader.for_reply(resp.status, resp.headers.get("Content-Encoding"), t.config.max_response_size)
            while True:
                chunk = await resp.content.read(READ_CHUNK)
                if not chunk or not reader.feed(chunk):
                    break
            data = reader.finish()
            if reader.complete:
                resp.release()
            else:
                resp.close()
            return Reply(resp.status, resp.headers, data)
        opened = Opened(resp.status, resp.headers, b"", source=_Source(resp, slots))
        while not opened.feed(await resp.content.readany()):
            pass
        handed = True
        return opened
    except BaseException as exc:
        if resp is not None:
            resp.close()  # an unfinished reply never goes back to the pool (also on cancellation)
        if not isinstance(exc, Exception) or isinstance(exc, (BodyTooLarge, errors.InferkitError, AttemptFailed)):
            raise
        raise _classify(aiohttp, exc, budget, got_status, False, t._tls_no_cert) from None
    finally:
        if not handed:
            slots.release()


class _Source:
    """The open response of a stream and the pool slot it holds."""

    def __init__(self, resp: Any, slots: asyncio.Semaphore) -> None:
        self.resp, self._slots, self._done = resp, slots, False

    def release(self) -> None:
        """Read to its end: aiohttp pools the connection if the server keeps it."""
        if not self._done:
            self._done = True
            self.resp.release()
            self._slots.release()

    def close(self) -> None:
        """Left early: the connection is closed."""
        if not self._done:
            self._done = True
            self.resp.close()
            self._slots.release()


class AsyncEventStream(EventStreamBase):
    """The events of one ``generate_stream`` call, as dicts: an async iterator and an async context manager.

    Nothing is sent until it is first used (``async for`` or ``async with``). Leaving the ``async with`` block,
    :meth:`aclose`, or cancelling the task reading it closes the connection (the server stops generating).
    Errors are those of the sync :class:`inferkit._transport.stream.EventStream`.
    """

    def __init__(
        self,
        transport: AsyncTransport,
        call: RestCall,
        headers: Mapping[str, str] | None,
        timeout: Any,
    ) -> None:
        super().__init__(call.model_name or "")
        self._start: tuple[AsyncTransport, RestCall, Any, Any] | None = (transport, call, headers, timeout)

    async def _open(self) -> None:
        assert self._start is not None
        transport, call, headers, timeout = self._start
        self._start = None
        prep = transport.prepare_call(call, headers, timeout)
        state = prep.state
        # The retry state's clock is time.monotonic (the aio transport passes no clock of its own).
        deadline = None if state.deadline is None else state.start + state.deadline
        self._begin(await drive(_Runner(transport), prep), prep.timeout.read, deadline, state.policy_deadline)

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._start is not None:
            await self._open()
        while not self._pending:
            source = self._source
            if source is None:
                raise StopAsyncIteration
            timeout, by_deadline = self._read_timeout(time.monotonic()) if self._deadline is not None else (None, False)
            read = source.resp.content.readany()
            try:
                # aiohttp's sock_read timeout bounds each read; a deadline needs wait_for (a task) on top.
                chunk = await (read if timeout is None else asyncio.wait_for(read, timeout))
            except asyncio.TimeoutError as exc:  # also aiohttp's sock_read timeout (a subclass)
                raise self._timed_out(by_deadline) from exc
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    self._close()
                    raise  # cancellation: the connection is closed, the task goes on being cancelled
                raise self._broken(exc) from exc
            self._received(chunk)
        return self._next_event()

    def _close(self) -> None:
        self._start = None
        super()._close()

    async def close(self) -> None:
        """End the stream now: its connection is closed (the server stops generating). Safe to call twice."""
        self._close()

    aclose = close  # the name async generators use

    async def __aenter__(self) -> AsyncEventStream:
        if self._start is not None:
            await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._close()
