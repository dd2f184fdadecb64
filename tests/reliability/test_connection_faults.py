"""Connection-level faults that the reference server's fault actions cannot express, for every client kind:
nothing listening (connection refused), and a keep-alive connection that the server closed while it sat idle in
the pool (a restarted server on the same port; a server that closes a connection when its second request arrives).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from inferkit import RetryPolicy, errors
from inferkit.testing import ReferenceServer
from inferkit.testing.models import add_sub_model

from .drivers import FAST, KINDS, Driver, add_sub_request, check_add_sub, record_sleeps
from .rawserver import RawHTTPServer, http_reply

pytestmark = pytest.mark.timeout(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_is_retried_then_a_connect_error(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    port = free_port()
    url = f"http://127.0.0.1:{port}" if driver.protocol == "rest" else f"127.0.0.1:{port}"
    recorder = record_sleeps(monkeypatch, kind)
    policy = RetryPolicy(max_retries=2, **FAST)
    with pytest.raises(errors.ConnectError) as info:
        driver.run(url, lambda c: c.infer(add_sub_request()), policy=policy, timeout=2.0)
    err = info.value
    assert type(err) is errors.ConnectError and isinstance(err, ConnectionError)
    assert err.attempts == 3
    assert str(port) in str(err) or driver.protocol == "grpc"
    if recorder is not None:
        assert recorder.waits == pytest.approx([0.01, 0.02])


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_without_retries(kind: str) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    port = free_port()
    url = f"http://127.0.0.1:{port}" if driver.protocol == "rest" else f"127.0.0.1:{port}"
    with pytest.raises(errors.ConnectError) as info:
        driver.run(url, lambda c: c.infer(add_sub_request()), policy=RetryPolicy.none(), timeout=2.0)
    assert info.value.attempts == 1


def _restart_between_calls(driver: Driver, server: ReferenceServer, replacement: list[ReferenceServer]) -> Any:
    """An op: infer, restart the server on the same ports (the pooled connection is now dead), infer again."""
    request = add_sub_request()

    def restart() -> None:
        http_port, grpc_port = server.http_port, server.grpc_port
        server.stop()
        new = ReferenceServer([add_sub_model()], http_port=http_port or 0, grpc_port=grpc_port or 0)
        replacement.append(new.start())

    if not driver.is_async:

        def op(client: Any) -> Any:
            client.infer(request)
            restart()
            return client.infer(request)

        return op

    def aop(client: Any) -> Any:
        async def go() -> Any:
            await client.infer(request)
            await asyncio.to_thread(restart)
            return await client.infer(request)

        return go()

    return aop


@pytest.mark.parametrize("kind", KINDS)
def test_server_restart_between_calls_needs_no_retry(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pooled connection (REST keep-alive, gRPC HTTP/2) died with the old server: the next call still
    succeeds, with max_retries=0, reaching the new server once."""
    driver = Driver(kind)
    driver.skip_if_missing()
    server = ReferenceServer([add_sub_model()]).start()
    replacement: list[ReferenceServer] = []
    try:
        op = _restart_between_calls(driver, server, replacement)
        response = driver.run(driver.target(server), op, policy=RetryPolicy.none(), timeout=5.0)
        check_add_sub(response)
        assert replacement[0].count(route="infer") == 1
    finally:
        server.stop()
        for srv in replacement:
            srv.stop()


_OK_BODY = json.dumps(
    {
        "model_name": "add_sub",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(0, 32, 2))},
            {"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16], "data": [0] * 16},
        ],
    }
).encode()


def _close_on_reuse(conn_index: int, request_index: int, request: bytes) -> bytes | None:
    # Answer the first request of a connection and keep it open; when a second request arrives on it, close the
    # connection without answering: the race of a server's idle timeout firing just as the client reuses it.
    if request_index == 0:
        return http_reply(_OK_BODY, headers={"Content-Type": "application/json"}, close=False)
    return None


@pytest.mark.parametrize(
    "kind",
    ["sync_rest", "aio_rest"],
)
def test_stale_keepalive_connection_is_resent_once_without_a_retry(kind: str) -> None:
    driver = Driver(kind)
    driver.skip_if_missing()
    request = add_sub_request()

    def op(client: Any) -> Any:
        if not driver.is_async:
            client.infer(request)
            return client.infer(request)

        async def go() -> Any:
            await client.infer(request)
            return await client.infer(request)

        return go()

    with RawHTTPServer(_close_on_reuse) as raw:
        response = driver.run(raw.url, op, policy=RetryPolicy.none(), timeout=3.0, binary_data=False)
        check_add_sub(response)
        # First call, the second call on the stale connection, and its resend on a new one.
        assert raw.requests == 3 and raw.connections == 2
