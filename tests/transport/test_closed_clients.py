"""A call on a closed client raises one class on all four clients (sync and aio, REST and gRPC): ConnectError (a
TransportError and a ConnectionError), whose message says the client is closed and to create a new one; nothing is
sent and nothing is retried."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("grpc")

from inferkit import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, aio  # noqa: E402
from inferkit.errors import ConnectError, TransportError  # noqa: E402
from inferkit.testing import ReferenceServer  # noqa: E402
from inferkit.testing.models import standard_models  # noqa: E402

KINDS = ("rest", "aio_rest", "grpc", "aio_grpc")


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(standard_models(), grpc=True) as srv:
        yield srv


def add_sub() -> InferRequest:
    a = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(np.zeros((1, 16), np.int32))
    b = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(np.ones((1, 16), np.int32))
    return InferRequest("add_sub", [a, b])


def make(kind: str, srv: ReferenceServer) -> Any:
    return {
        "rest": lambda: InferenceRESTClient(srv.http_url),
        "aio_rest": lambda: aio.InferenceRESTClient(srv.http_url),
        "grpc": lambda: InferenceGRPCClient(srv.grpc_url),
        "aio_grpc": lambda: aio.InferenceGRPCClient(srv.grpc_url),
    }[kind]()


def run(client: Any, method: str, *args: Any) -> Any:
    """``client.method(*args)``, awaited in a new loop for an aio client."""
    result = getattr(client, method)(*args)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("used", [True, False], ids=["used", "unused"])
@pytest.mark.parametrize(
    ("method", "args"), [("infer", (add_sub(),)), ("is_server_live", ()), ("get_model_metadata", ("add_sub",))]
)
def test_a_closed_client_raises_connect_error_saying_so(
    server: ReferenceServer, kind: str, used: bool, method: str, args: tuple[Any, ...]
) -> None:
    client = make(kind, server)
    if used:
        assert run(client, "is_server_live") is True
    run(client, "close")
    server.reset()
    start = time.monotonic()
    with pytest.raises(ConnectError) as info:
        run(client, method, *args)
    assert time.monotonic() - start < 0.4  # not retried with backoff: nothing can be sent
    err = info.value
    assert type(err) is ConnectError and isinstance(err, TransportError) and isinstance(err, ConnectionError)
    assert "is closed; create a new client" in str(err)
    assert server.count() == 0
    run(client, "close")  # closing twice is fine
