"""gRPC deadlines, sync and aio alike: one that runs out while the channel is still connecting (a port that accepts
TCP connections and never completes the HTTP/2 handshake) is ConnectTimeout, as on REST; one that runs out waiting
for a connected server's reply stays ReadTimeout."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("grpc")

from inferkit import InferInput, InferRequest, RetryPolicy  # noqa: E402
from inferkit._grpc_errors import map_rpc_error  # noqa: E402
from inferkit.aio import InferenceGRPCClient as AsyncGRPCClient  # noqa: E402
from inferkit.errors import ConnectTimeout, ReadTimeout  # noqa: E402
from inferkit.grpc_client import InferenceGRPCClient  # noqa: E402
from inferkit.testing import ReferenceServer  # noqa: E402
from inferkit.testing.models import slow_model  # noqa: E402

KINDS = ("sync", "aio")


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """127.0.0.1: accepts TCP connections and never sends a byte (no HTTP/2 settings frame)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
    listener.close()
    for conn in accepted:
        conn.close()
    thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer([slow_model()], grpc=True) as srv:
        yield srv


def call(kind: str, target: str, method: str, *args: Any, **client_kwargs: Any) -> Any:
    """Run one method of a new sync or aio client and return what it raised (it must raise)."""
    if kind == "sync":
        with InferenceGRPCClient(target, **client_kwargs) as c:
            with pytest.raises(Exception) as info:
                getattr(c, method)(*args)
        return info.value

    async def main() -> Any:
        async with AsyncGRPCClient(target, **client_kwargs) as c:
            with pytest.raises(Exception) as info:
                await getattr(c, method)(*args)
        return info.value

    return asyncio.run(main())


def slow_request(seconds: float) -> InferRequest:
    x = InferInput("INPUT0", [1], "FP32").set_data_from_numpy(np.ones(1, dtype=np.float32))
    return InferRequest("slow", [x], parameters={"sleep": seconds})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["is_server_live", "get_server_metadata"])
def test_a_connect_that_never_completes_is_a_connect_timeout(kind: str, method: str, silent_port: int) -> None:
    err = call(kind, f"127.0.0.1:{silent_port}", method, timeout=0.3, retries=0)
    assert type(err) is ConnectTimeout, repr(err)
    assert isinstance(err, TimeoutError) and err.grpc_code == "DEADLINE_EXCEEDED" and err.attempts == 1
    assert "could not connect" in str(err) and "CONNECTING" in str(err)


@pytest.mark.parametrize("kind", KINDS)
def test_a_connect_timeout_under_a_retry_policy_stops_at_the_deadline(kind: str, silent_port: int) -> None:
    # Retryable (nothing reached the server), but the first attempt used the whole deadline: no second attempt.
    policy = RetryPolicy(max_retries=5, backoff_initial=0.01, backoff_max=0.02)
    err = call(kind, f"127.0.0.1:{silent_port}", "is_server_live", timeout=0.3, retry=policy)
    assert type(err) is ConnectTimeout and err.attempts == 1, repr(err)


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_reply_on_a_connected_channel_stays_a_read_timeout(kind: str, server: ReferenceServer) -> None:
    err = call(kind, server.grpc_url, "infer", slow_request(1.0), timeout=0.3, retries=0)
    assert type(err) is ReadTimeout, repr(err)


class _Deadline:
    def code(self) -> Any:
        import grpc

        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "Deadline Exceeded"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("CONNECTING", ConnectTimeout),
        ("TRANSIENT_FAILURE", ConnectTimeout),
        ("READY", ReadTimeout),
        ("IDLE", ReadTimeout),
        (None, ReadTimeout),
    ],
)
def test_deadline_mapping_follows_the_channel_state(state: str | None, expected: type) -> None:
    err = map_rpc_error(_Deadline(), model_name="m", attempts=2, channel_state=lambda: state)
    assert type(err) is expected
    assert (err.grpc_code, err.model_name, err.attempts) == ("DEADLINE_EXCEEDED", "m", 2)
    assert type(map_rpc_error(_Deadline())) is ReadTimeout  # no channel to ask: as before
