"""The async gRPC transport under :class:`inferkit.aio.InferenceGRPCClient` (grpc.aio), the twin of
:mod:`inferkit._transport.grpc`.

Owns: the grpc.aio channels (``channels=N``: calls take them in turn) and their stubs, made lazily in the running
event loop and again when the client is used from another loop, and one attempt of a unary RPC for the async
driver (:func:`inferkit.aio._driver.drive`): the stub awaited with the attempt's deadline and metadata, its
``grpc.RpcError`` handed to the retry loop (:func:`inferkit._grpc_common.grpc_exchange`). Cancelling the task
cancels the call.
Must not import: requests, urllib3, aiohttp, inferkit._transport, inferkit.rest_client, inferkit.grpc_client; nor
grpc at module level.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, AsyncIterator, Callable, Generator, NamedTuple

from inferkit._grpc_common import GRPCSettings, Headers, grpc_exchange, make_stubs
from inferkit.aio._driver import drive
from inferkit.codec.grpc_calls import GRPCCall
from inferkit.errors import client_closed_error

__all__ = ["AsyncGRPCTransport"]


async def once(build: Callable[[], bytes]) -> AsyncIterator[bytes]:
    """The request iterator of a request built per attempt (the large-request path)."""
    yield build()


class _Run(NamedTuple):
    call: GRPCCall
    stub: Any
    total: float | None
    metadata: Any
    start: float


class AsyncGRPCTransport:
    """One server's grpc.aio channels (per event loop); the async driver's interface for unary RPCs."""

    def __init__(self, settings: GRPCSettings, grpc: Any) -> None:
        self._s = settings
        self._grpc = grpc
        self._rpc_error = grpc.RpcError
        self._default_total = settings.deadline(None)
        self._closed = False
        self._channels: list[Any] = []
        self._stubs: list[dict[str, Any]] = []
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the channel --------------------------------------------------------------------------------------------
    def stub(self, name: str) -> Any:
        """The callable of RPC ``name`` on the running loop's channels (the next in turn); ConnectError once closed."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._closed:
                raise client_closed_error(self._s.target)
            old, old_loop = self._channels, self._loop
            self._channels = [self._s.channel(self._grpc.aio) for _ in range(self._s.channels)]
            self._stubs = [make_stubs(channel) for channel in self._channels]
            self._loop = loop
            if old_loop is not None and not old_loop.is_closed() and old_loop.is_running():
                for channel in old:
                    asyncio.run_coroutine_threadsafe(channel.close(), old_loop)
        stubs = self._stubs
        return stubs[next(self._turn) % len(stubs) if len(stubs) > 1 else 0][name]

    @property
    def channel(self) -> Any:
        """The first channel of the running loop."""
        self.stub("ServerLive")
        return self._channels[0]

    async def close(self) -> None:
        self._closed = True
        channels, loop, self._channels, self._loop = self._channels, self._loop, [], None
        if not channels or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for channel in channels:
            if loop is running:
                await channel.close()
            elif not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(channel.close(), loop)

    # -- one call -------------------------------------------------------------------------------------------------
    async def call(self, call: GRPCCall, headers: Headers, timeout: float | None) -> Any:
        """Run one RPC with deadline, metadata and retries; its parsed result or its typed error."""
        s = self._s
        total = self._default_total if timeout is None else s.deadline(timeout)
        metadata = s.metadata_for(headers)
        return await drive(self, _Run(call, self.stub(call.rpc), total, metadata, time.monotonic()))

    # The driver's interface (inferkit.aio._driver).
    async def attempt(self, run: _Run, todo: Any) -> tuple[bool, Any]:
        """Await the stub once: ``(True, reply)``, or ``(False, rpc_error)``."""
        request = run.call.request
        try:
            reply = await run.stub(
                once(request) if callable(request) else request,
                timeout=run.total if todo is None else todo.timeout,
                metadata=run.metadata,
            )
        except self._rpc_error as exc:
            return False, exc
        return True, reply

    def settled(self, run: _Run, outcome: tuple[bool, Any]) -> bool:
        return outcome[0] and not self._s.verbose

    def result(self, run: _Run, outcome: tuple[bool, Any]) -> Any:
        return run.call.parse(outcome[1])

    def retries(self, run: _Run, first: tuple[bool, Any]) -> Generator[Any, Any, Any]:
        return grpc_exchange(run, first, self._s, clock=time.monotonic, channel_state=self.channel_state)

    def channel_state(self) -> str | None:
        """The channels' connectivity (``"READY"``, ``"CONNECTING"``...: the first not READY), None when unknown: it
        tells a deadline that ran out while connecting from one that ran out waiting for the reply
        (:func:`map_rpc_error`)."""
        state = None
        for channel in self._channels:
            try:
                state = str(channel.get_state(try_to_connect=False).name)
            except Exception:  # noqa: BLE001 - closed meanwhile: unknown, the call stays ReadTimeout
                return None
            if state != "READY":
                return state
        return state
