"""gRPC keep-alive: the named ``keepalive_time`` / ``keepalive_timeout`` / ``idle_timeout`` options of both clients,
and a peer that vanished silently found by pings, not by the call's deadline.

The vanished peer is a TCP proxy on 127.0.0.1 in front of a tiny grpcio server whose ModelInfer waits (a long
inference); ``blackhole()`` makes the proxy stop forwarding and stop reading in both directions without closing
anything, as a load balancer that dropped the flow or a host that lost power would. The server allows pings every
100 ms (a default server refuses pings more often than every 5 min without data: GOAWAY "too_many_pings").
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from concurrent import futures
from typing import Any, Iterator

import pytest

from inferkit import RetryPolicy, errors
from inferkit._grpc_common import DEFAULT_CHANNEL_OPTIONS
from tests.transport.cases import add_sub_request

grpc = pytest.importorskip("grpc")
from inferkit import InferenceGRPCClient  # noqa: E402
from inferkit.aio import InferenceGRPCClient as AsyncInferenceGRPCClient  # noqa: E402

pytestmark = pytest.mark.timeout(60)

DEADLINE = 30.0  # the call's own deadline: detection must come far sooner
DETECT_WITHIN = 10.0  # keepalive_time + keepalive_timeout = 2 s, plus a margin for a loaded machine


# -- the named options --------------------------------------------------------------------------------------------


def _options(client: Any) -> dict[str, Any]:
    return dict(client._s.options)


@pytest.mark.parametrize("cls", [InferenceGRPCClient, AsyncInferenceGRPCClient], ids=["sync", "aio"])
def test_defaults_map_onto_channel_options(cls: Any) -> None:
    opts = _options(cls("127.0.0.1:1"))
    assert opts["grpc.keepalive_time_ms"] == 330_000  # above the 5 min a default server accepts without data
    assert opts["grpc.keepalive_timeout_ms"] == opts["grpc.http2.ping_timeout_ms"] == 20_000
    assert opts["grpc.client_idle_timeout_ms"] == 1_800_000
    assert opts["grpc.keepalive_permit_without_calls"] == 0
    assert opts["grpc.http2.max_pings_without_data"] == 0  # pings keep flowing during a long call
    assert {k: opts[k] for k in DEFAULT_CHANNEL_OPTIONS} == dict(DEFAULT_CHANNEL_OPTIONS)


@pytest.mark.parametrize("cls", [InferenceGRPCClient, AsyncInferenceGRPCClient], ids=["sync", "aio"])
def test_named_options_and_none(cls: Any) -> None:
    opts = _options(cls("127.0.0.1:1", keepalive_time=1.5, keepalive_timeout=0.25, idle_timeout=60))
    assert (opts["grpc.keepalive_time_ms"], opts["grpc.keepalive_timeout_ms"]) == (1500, 250)
    assert opts["grpc.http2.ping_timeout_ms"] == 250  # the timeout grpc-core applies to an unanswered ping
    assert opts["grpc.client_idle_timeout_ms"] == 60_000
    off = _options(cls("127.0.0.1:1", keepalive_time=None, keepalive_timeout=None, idle_timeout=None))
    assert off["grpc.keepalive_time_ms"] == 2**31 - 1  # gRPC's "never": no pings
    assert "grpc.keepalive_timeout_ms" not in off and "grpc.http2.ping_timeout_ms" not in off  # gRPC's own
    assert off["grpc.client_idle_timeout_ms"] == 2**31 - 1  # never idle


@pytest.mark.parametrize("cls", [InferenceGRPCClient, AsyncInferenceGRPCClient], ids=["sync", "aio"])
def test_channel_args_win_key_by_key(cls: Any) -> None:
    args = {"grpc.keepalive_time_ms": 7}
    opts = _options(cls("127.0.0.1:1", keepalive_time=5, keepalive_timeout=2, channel_args=args))
    assert opts["grpc.keepalive_time_ms"] == 7
    assert opts["grpc.keepalive_timeout_ms"] == 2000


@pytest.mark.parametrize("name", ["keepalive_time", "keepalive_timeout", "idle_timeout"])
@pytest.mark.parametrize("bad", [0, -1, True, "5", float("nan"), float("inf")])
@pytest.mark.parametrize("cls", [InferenceGRPCClient, AsyncInferenceGRPCClient], ids=["sync", "aio"])
def test_invalid_values_are_rejected(cls: Any, name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=name):
        cls("127.0.0.1:1", **{name: bad})


# -- a peer that vanished -----------------------------------------------------------------------------------------


class SlowServer:
    """A grpcio server whose ModelInfer waits (up to 30 s, or until stopped) before an empty reply."""

    def __init__(self) -> None:
        from inferkit.codec.grpc_methods import GRPC_METHODS

        self.release = threading.Event()
        self.calls = 0
        reply = GRPC_METHODS["ModelInfer"].response_type(model_name="add_sub").SerializeToString()

        def model_infer(request: bytes, context: Any) -> bytes:
            self.calls += 1
            self.release.wait(DEADLINE)
            return reply

        method = GRPC_METHODS["ModelInfer"]
        service, rpc = method.path.lstrip("/").split("/")
        handler = grpc.unary_unary_rpc_method_handler(model_infer, request_deserializer=None, response_serializer=None)
        options = [
            ("grpc.http2.min_ping_interval_without_data_ms", 100),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {rpc: handler}),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def stop(self) -> None:
        self.release.set()
        self._server.stop(grace=None).wait(5)


class BlackholeProxy:
    """A TCP proxy on 127.0.0.1 to ``127.0.0.1:port``, one thread; :meth:`blackhole` freezes every flow."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._peer: dict[socket.socket, socket.socket] = {}
        self._blackholed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        """Stop forwarding and stop reading, both ways, new connections included; close nothing."""
        self._blackholed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._blackholed.is_set():
                self._stop.wait(0.05)
                continue
            readable, _, _ = select.select([self._listener, *self._peer], [], [], 0.05)
            for sock in readable:
                if self._blackholed.is_set():
                    break
                if sock is self._listener:
                    client, _ = sock.accept()
                    upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
                    self._peer[client], self._peer[upstream] = upstream, client
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        self._peer[sock].sendall(data)
                        continue
                except OSError:
                    pass
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        other = self._peer.pop(sock, None)
        self._peer.pop(other, None) if other is not None else None
        for s in (sock, other):
            if s is not None:
                s.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in list(self._peer):
            self._drop(sock)
        self._listener.close()


@pytest.fixture
def proxied() -> Iterator[tuple[SlowServer, BlackholeProxy]]:
    server = SlowServer()
    proxy = BlackholeProxy(server.port)
    yield server, proxy
    proxy.stop()
    server.stop()


def _kwargs() -> dict[str, Any]:
    return {"keepalive_time": 1, "keepalive_timeout": 1, "timeout": DEADLINE, "retry": RetryPolicy.none()}


def _wait_for_call(server: SlowServer) -> None:
    end = time.monotonic() + 10
    while server.calls == 0 and time.monotonic() < end:
        time.sleep(0.01)
    assert server.calls == 1, "the call never reached the server"


def _assert_detected(exc: BaseException, elapsed: float) -> None:
    assert isinstance(exc, errors.InferkitError), repr(exc)
    assert exc.grpc_code == "UNAVAILABLE", repr(exc)
    assert not isinstance(exc, errors.ReadTimeout), repr(exc)
    assert isinstance(exc, errors.ConnectError), repr(exc)  # the connection died, not a server's answer
    assert elapsed < DETECT_WITHIN, f"the dead peer was found after {elapsed:.1f} s"


def test_sync_vanished_peer_is_found_by_pings(proxied: tuple[SlowServer, BlackholeProxy]) -> None:
    server, proxy = proxied
    request, _, _ = add_sub_request()
    with InferenceGRPCClient(proxy.address, **_kwargs()) as client:
        pool = futures.ThreadPoolExecutor(max_workers=1)
        try:
            future = pool.submit(client.infer, request)
            _wait_for_call(server)
            time.sleep(1.5)  # a ping or two went through and came back before the peer vanished
            proxy.blackhole()
            start = time.monotonic()
            exc = future.exception(timeout=DEADLINE + 5)
            elapsed = time.monotonic() - start
        finally:
            pool.shutdown(wait=False)
    assert exc is not None
    _assert_detected(exc, elapsed)


def test_aio_vanished_peer_is_found_by_pings(proxied: tuple[SlowServer, BlackholeProxy]) -> None:
    server, proxy = proxied
    request, _, _ = add_sub_request()

    async def main() -> tuple[BaseException, float]:
        async with AsyncInferenceGRPCClient(proxy.address, **_kwargs()) as client:
            task = asyncio.ensure_future(client.infer(request))
            end = time.monotonic() + 10
            while server.calls == 0 and time.monotonic() < end:
                await asyncio.sleep(0.01)
            assert server.calls == 1, "the call never reached the server"
            await asyncio.sleep(1.5)
            proxy.blackhole()
            start = time.monotonic()
            with pytest.raises(errors.InferkitError) as info:
                await asyncio.wait_for(task, DEADLINE + 5)
            return info.value, time.monotonic() - start

    exc, elapsed = asyncio.run(main())
    _assert_detected(exc, elapsed)
