"""inferkit.aio.InferenceGRPCClient against the reference server (grpc.aio), driven by the shared case tables."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterator

import numpy as np
import pytest

from inferkit import InferInput, InferRequest, RetryPolicy, errors
from inferkit.testing import Fault, ReferenceServer
from inferkit.testing.models import (
    add_sub_model,
    failing_stream_model,
    identity_model,
    repeat_model,
    sequence_model,
    slow_model,
)
from tests.transport.cases import GRPC_IDENTITY_CASES, GRPC_RETRIES_VALUES, GRPC_RETRYABLE_CODES, add_sub_request

pytest.importorskip("grpc")
from inferkit.aio import InferenceGRPCClient  # noqa: E402

LIMIT = 20.0
FAST = RetryPolicy(max_retries=3, backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    models = [
        add_sub_model(),
        identity_model("id_fp32", "FP32"),
        identity_model("id_bytes", "BYTES"),
        identity_model("id_fp16", "FP16"),
        identity_model("id_versions", "INT64", versions=("1", "2")),
        repeat_model(),
        failing_stream_model(),
        slow_model(),
        sequence_model(),
    ]
    with ReferenceServer(models, grpc=True) as srv:
        yield srv


@pytest.fixture
def srv(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()
    yield server
    server.reset()


def use(client: InferenceGRPCClient, body: Callable[[InferenceGRPCClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with client:
            return await asyncio.wait_for(body(client), LIMIT)

    return asyncio.run(main())


def slow_request(seconds: float) -> InferRequest:
    x = InferInput("INPUT0", [1], "FP32").set_data_from_numpy(np.ones(1, dtype=np.float32))
    return InferRequest("slow", [x], parameters={"sleep": seconds})


@pytest.mark.parametrize(("model", "datatype", "array"), GRPC_IDENTITY_CASES)
def test_identity_datatypes(srv: ReferenceServer, model: str, datatype: str, array: np.ndarray) -> None:
    async def body(c: InferenceGRPCClient) -> None:
        x = InferInput("INPUT0", list(array.shape), datatype).set_data_from_numpy(array)
        got = (await c.infer(InferRequest(model, [x]))).as_numpy("OUTPUT0")
        assert got.tolist() == array.tolist()

    use(InferenceGRPCClient(srv.grpc_url, retry=FAST), body)


@pytest.mark.parametrize("code", GRPC_RETRYABLE_CODES)
def test_retryable_codes_are_retried(srv: ReferenceServer, code: str) -> None:
    srv.inject(Fault(route="infer", model="add_sub", action="grpc_status", code=code, times=2))
    use(InferenceGRPCClient(srv.grpc_url, retry=FAST), lambda c: c.infer(add_sub_request()[0]))
    assert srv.count(route="infer", model="add_sub") == 3


@pytest.mark.parametrize("retries", GRPC_RETRIES_VALUES)
def test_every_retries_value_gives_exactly_that_many_retries(srv: ReferenceServer, retries: int) -> None:
    srv.inject(Fault(route="infer", model="add_sub", action="grpc_status", code="UNAVAILABLE", times=None))
    policy = RetryPolicy(max_retries=retries, backoff_initial=0.001, backoff_max=0.005)

    async def body(c: InferenceGRPCClient) -> None:
        with pytest.raises(errors.ServiceUnavailableError) as info:
            await c.infer(add_sub_request()[0])
        assert info.value.attempts == retries + 1

    use(InferenceGRPCClient(srv.grpc_url, retry=policy), body)
    assert srv.count(route="infer", model="add_sub") == retries + 1


def test_health_metadata_and_typed_errors(srv: ReferenceServer) -> None:
    async def body(c: InferenceGRPCClient) -> None:
        assert await c.is_server_live() and await c.is_server_ready()
        assert await c.is_model_ready("id_versions", "2") and not await c.is_model_ready("no_such_model")
        assert (await c.get_model_metadata("add_sub"))["name"] == "add_sub"
        assert (await c.get_model_config("add_sub"))["name"] == "add_sub"
        assert any(m["name"] == "add_sub" for m in await c.get_model_repository_index())
        with pytest.raises(errors.NotFoundError):
            await c.get_model_metadata("no_such_model")
        srv.inject(Fault(route="ready", action="grpc_status", code="UNAVAILABLE", times=1))
        assert await c.is_server_ready() is False  # the status is the answer, not retried
        with pytest.raises(errors.InvalidInputError):
            x = InferInput("INPUT0", [1, 3], "INT32").set_data_from_numpy(np.zeros((1, 3), np.int32))
            y = InferInput("INPUT1", [1, 3], "INT32").set_data_from_numpy(np.zeros((1, 3), np.int32))
            await c.infer(InferRequest("add_sub", [x, y]))

    use(InferenceGRPCClient(srv.grpc_url, retry=FAST), body)


def test_sequence_requests_are_not_retried_and_deadline(srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", model="add_sub", action="grpc_status", code="UNAVAILABLE", times=None))

    async def body(c: InferenceGRPCClient) -> None:
        with pytest.raises(errors.ServiceUnavailableError):
            await c.infer(add_sub_request(sequence_id=3)[0])
        with pytest.raises(TimeoutError):
            await c.infer(slow_request(2.0), timeout=0.3)

    use(InferenceGRPCClient(srv.grpc_url, retry=FAST), body)
    assert srv.count(route="infer", model="add_sub") == 1


def test_connection_refused_is_a_connection_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def body(c: InferenceGRPCClient) -> None:
        with pytest.raises(ConnectionError):
            await c.is_server_live()

    use(InferenceGRPCClient(f"127.0.0.1:{port}", retries=0, timeout=5), body)


def test_cancelled_infer_leaves_the_client_usable(srv: ReferenceServer) -> None:
    async def body(c: InferenceGRPCClient) -> None:
        task = asyncio.ensure_future(c.infer(slow_request(2.0)))
        for _ in range(100):
            if srv.count(route="infer", model="slow"):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await c.infer(add_sub_request()[0])).model_name == "add_sub"

    use(InferenceGRPCClient(srv.grpc_url, retry=FAST), body)


@pytest.mark.parametrize("channels", [1, 3])
def test_1000_concurrent_infers_and_loops(srv: ReferenceServer, channels: int) -> None:
    client = InferenceGRPCClient(srv.grpc_url, retry=FAST, channels=channels)  # made outside any loop

    async def body() -> None:
        request, a, b = add_sub_request()
        responses = await asyncio.gather(*(client.infer(request) for _ in range(1000)))
        assert all(np.array_equal(r.as_numpy("OUTPUT0"), a + b) for r in responses)

    asyncio.run(asyncio.wait_for(body(), LIMIT))
    assert asyncio.run(client.is_server_ready())  # another loop: a new channel
    asyncio.run(client.close())
    with pytest.raises(errors.TransportError):
        asyncio.run(client.is_server_live())
    assert srv.count(route="infer", model="add_sub") == 1000


def test_stream(srv: ReferenceServer) -> None:
    def repeat(values: list[int]) -> InferRequest:
        x = InferInput("IN", [len(values)], "INT32").set_data_from_numpy(np.array(values, np.int32))
        return InferRequest("repeat", [x])

    async def body(c: InferenceGRPCClient) -> None:
        got = [int(r.as_numpy("OUT")[0]) async for r in c.stream_infer([repeat([1, 2, 3]), repeat([4])])]
        assert got == [1, 2, 3, 4]
        async with c.stream(timeout=10) as stream:
            await stream.send(repeat([7, 8]))
            await stream.close_send()
            assert [int(r.as_numpy("OUT")[0]) async for r in stream] == [7, 8]
        x = InferInput("IN", [4], "INT32").set_data_from_numpy(np.arange(4, dtype=np.int32))
        async with c.stream(timeout=10) as stream:
            await stream.send(InferRequest("fail_mid_stream", [x]))
            await stream.close_send()
            items = [item async for item in stream.results()]
            assert any(isinstance(i, errors.InferkitError) for i in items)

    use(InferenceGRPCClient(srv.grpc_url, retry=FAST), body)
