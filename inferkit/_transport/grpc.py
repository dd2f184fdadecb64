"""The sync gRPC transport under :class:`inferkit.grpc_client.InferenceGRPCClient` (grpcio).

Owns: the grpcio channels (``channels=N``: calls take them in turn) and their stubs, made again in a forked child
(a child cannot use its parent's channels), and one attempt of a unary RPC for the sync driver
(:func:`inferkit._transport.driver.drive`): the stub called with the attempt's deadline and metadata, its
``grpc.RpcError`` caught and handed to the retry loop (:func:`inferkit._grpc_common.grpc_exchange`), which maps it
(:func:`inferkit._grpc_common.map_rpc_error`), told by :meth:`GRPCTransport.channel_state` whether a deadline ran
out while a channel was still connecting.
Must not import: requests, urllib3, aiohttp, inferkit.aio, inferkit.rest_client; nor grpc at module level.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Callable, Generator, Iterator, NamedTuple

from inferkit._grpc_common import GRPCSettings, Headers, grpc_exchange, make_stubs
from inferkit._transport.driver import clock, drive, retry
from inferkit.codec.grpc_calls import GRPCCall
from inferkit.errors import ConnectError, client_closed_error

__all__ = ["GRPCTransport", "GRPCRun", "once"]

# Bumped in a child process after fork(): transports compare it on every call (cheaper than os.getpid()).
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def once(build: Callable[[], bytes]) -> Iterator[bytes]:
    """The request iterator of a request built per attempt (the large-request path): nothing here holds its bytes
    once gRPC has written them."""
    yield build()


class GRPCRun(NamedTuple):
    """One RPC ready to run: its call, stub, first payload, deadline across attempts, metadata and start time."""

    call: GRPCCall
    stub: Any
    payload: Any
    total: float | None
    metadata: Any
    start: float


class GRPCTransport:
    """One server's channels, shared by every thread; the sync driver's interface for unary RPCs."""

    def __init__(self, settings: GRPCSettings, grpc: Any) -> None:
        self._s = settings
        self._grpc = grpc
        self._rpc_error = grpc.RpcError
        self._default_total = settings.deadline(None)  # the deadline of a call without its own timeout
        self._lock = threading.Lock()
        self._closed = False
        self._channels: list[Any] = []
        self._stubs: list[dict[str, Any]] = []
        self._turn = itertools.count()  # next() is atomic under the GIL: the channels are taken round-robin
        self._pid = -1
        self._generation = -1
        self._connect()

    # -- the channel --------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        self._channels = [self._s.channel(self._grpc) for _ in range(self._s.channels)]
        self._stubs = [make_stubs(channel) for channel in self._channels]
        self._pid, self._generation = os.getpid(), _fork_generation

    def stub(self, name: str) -> Any:
        """The callable of RPC ``name`` (on the next channel in turn); ConnectError once closed."""
        if self._generation != _fork_generation or self._closed:
            with self._lock:
                if self._closed:
                    raise closed_error(self._s.target)
                if self._generation != _fork_generation or self._pid != os.getpid():
                    # A forked child cannot use the parent's channels (their threads and sockets are the parent's);
                    # build new ones and leave the inherited objects alone.
                    self._connect()
        stubs = self._stubs
        return stubs[next(self._turn) % len(stubs) if len(stubs) > 1 else 0][name]

    @property
    def channel(self) -> Any:
        """The first channel."""
        self.stub("ServerLive")
        return self._channels[0]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, []
        if self._pid == os.getpid():
            for channel in channels:
                channel.close()

    # -- one call -------------------------------------------------------------------------------------------------
    def call(self, call: GRPCCall, headers: Headers, timeout: float | None) -> Any:
        """Run one RPC with deadline, metadata and retries; its parsed result or its typed error."""
        return drive(self, self.prepare(call, headers, timeout))

    def prepare(self, call: GRPCCall, headers: Headers, timeout: float | None) -> GRPCRun:
        s = self._s
        request = call.request
        total = self._default_total if timeout is None else s.deadline(timeout)
        metadata = s.metadata_for(headers)
        payload = once(request) if callable(request) else request
        return GRPCRun(call, self.stub(call.rpc), payload, total, metadata, clock())

    def retry(self, run: GRPCRun, outcome: tuple[bool, Any]) -> Any:
        """The rest of a call whose first attempt (``outcome``) was made elsewhere (a future of ``infer_many``)."""
        return retry(self, run, outcome)

    # The driver's interface (inferkit._transport.driver).
    def attempt(self, run: GRPCRun, todo: Any) -> tuple[bool, Any]:
        """Call the stub once: ``(True, reply)``, or ``(False, rpc_error)``."""
        if todo is None:
            payload, deadline = run.payload, run.total
        else:
            request = run.call.request
            payload, deadline = (once(request) if callable(request) else request), todo.timeout
        try:
            return True, run.stub(payload, timeout=deadline, metadata=run.metadata)
        except self._rpc_error as exc:
            return False, exc

    def settled(self, run: GRPCRun, outcome: tuple[bool, Any]) -> bool:
        return outcome[0] and not self._s.verbose

    def result(self, run: GRPCRun, outcome: tuple[bool, Any]) -> Any:
        return run.call.parse(outcome[1])

    def retries(self, run: GRPCRun, first: tuple[bool, Any]) -> Generator[Any, Any, Any]:
        return grpc_exchange(run, first, self._s, clock=clock, channel_state=self.channel_state)

    def channel_state(self) -> str | None:
        """The channels' connectivity (``"READY"``, ``"CONNECTING"``...: the first not READY), None when unknown: it
        tells a deadline that ran out while connecting from one that ran out waiting for the reply
        (:func:`map_rpc_error`)."""
        state = None
        for channel in self._channels:
            try:
                # grpcio's sync Channel has no public getter (only subscribe(), which starts a polling thread per
                # channel); its core channel's check_connectivity_state is what subscribe() itself polls.
                value = channel._channel.check_connectivity_state(False)
            except Exception:  # noqa: BLE001 - closed meanwhile, or another grpcio: unknown, the call stays ReadTimeout
                return None
            state = next((str(s.name) for s in self._grpc.ChannelConnectivity if s.value[0] == value), None)
            if state != "READY":
                return state
        return state


def closed_error(target: str) -> ConnectError:
    return client_closed_error(target)
