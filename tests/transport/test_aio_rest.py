"""inferkit.aio.InferenceRESTClient against the reference server over 127.0.0.1.

Driven by the same case tables as the sync tests (``tests/transport/cases.py``); every test body runs in
``asyncio.run`` under ``asyncio.wait_for`` (bounded), and checks the connector has no connection left acquired.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Awaitable, Callable, Iterator

import numpy as np
import pytest

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy, Timeout, errors
from inferkit.testing import Fault, ReferenceServer
from inferkit.testing.models import identity_model, standard_models
from tests.transport.cases import (
    BROKEN_CONNECTION_ACTIONS,
    MALFORMED_REPLY_FAULTS,
    NEVER_RETRIED,
    REST_CALLS,
    RETRYABLE_STATUSES,
    Call,
    add_sub_request,
)

pytest.importorskip("aiohttp")
from inferkit.aio import InferenceRESTClient  # noqa: E402

LIMIT = 20.0
FAST = dict(backoff_initial=0.01, backoff_max=0.02, jitter=0.0)


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    models = standard_models() + [identity_model("multi", "INT32", versions=("1", "2"))]
    with ReferenceServer(models, grpc=False) as srv:
        yield srv


@pytest.fixture
def srv(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()
    yield server
    server.reset()


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``body()`` in a fresh loop, bounded by LIMIT."""

    async def main() -> Any:
        return await asyncio.wait_for(body(), LIMIT)

    return asyncio.run(main())


def use(client: InferenceRESTClient, body: Callable[[InferenceRESTClient], Awaitable[Any]]) -> Any:
    """``await body(client)`` then close the client; asserts no pooled connection stayed acquired."""

    async def main() -> Any:
        async with client:
            result = await body(client)
            for _ in range(100):  # aiohttp 3.10.x may give a TLS connection back a few loop turns after the reply
                if client._transport.connector_stats()["acquired"] == 0:
                    break
                await asyncio.sleep(0.01)
            assert client._transport.connector_stats()["acquired"] == 0
            return result

    return run(main)


def fast_client(srv: ReferenceServer, **policy: Any) -> InferenceRESTClient:
    retry = RetryPolicy(**{**FAST, **policy})
    return InferenceRESTClient(srv.http_url, RESTConfig(retry=retry, binary_data=True, timeout=Timeout(5)))


def slow_request(seconds: float) -> InferRequest:
    x = InferInput("INPUT0", [1], "FP32").set_data_from_numpy(np.ones(1, dtype=np.float32))
    return InferRequest("slow", [x], parameters={"sleep": seconds})


# -- the shared tables ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", REST_CALLS, ids=lambda c: c.id)
def test_call_table(srv: ReferenceServer, call: Call) -> None:
    async def body(c: InferenceRESTClient) -> None:
        method = getattr(c, call.method)
        if isinstance(call.check, type):
            with pytest.raises(call.check):
                await method(*call.args)
        else:
            assert call.check(await method(*call.args))

    use(InferenceRESTClient(srv.http_url), body)


@pytest.mark.parametrize("status", RETRYABLE_STATUSES)
def test_retryable_statuses_are_retried_then_succeed(srv: ReferenceServer, status: int) -> None:
    srv.inject(Fault(route="infer", model="add_sub", action="status", status=status, times=2))
    use(fast_client(srv, max_retries=3), lambda c: c.infer(add_sub_request()[0]))
    assert srv.count(route="infer", model="add_sub") == 3


@pytest.mark.parametrize(("status", "error"), NEVER_RETRIED)
def test_client_errors_are_never_retried(srv: ReferenceServer, status: int, error: type) -> None:
    srv.inject(Fault(route="infer", model="add_sub", action="status", status=status, times=None))

    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(error) as info:
            await c.infer(add_sub_request()[0])
        assert info.value.attempts == 1 and info.value.status_code == status

    use(fast_client(srv, max_retries=5), body)
    assert srv.count(route="infer", model="add_sub") == 1


@pytest.mark.parametrize("action", BROKEN_CONNECTION_ACTIONS)
def test_broken_connections_without_retries_are_connect_errors(srv: ReferenceServer, action: str) -> None:
    srv.inject(Fault(route="infer", action=action, times=1))

    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(ConnectionError) as info:
            await c.infer(add_sub_request()[0])
        assert isinstance(info.value, errors.ConnectError)
        await c.infer(add_sub_request()[0])  # the pool recovered

    use(fast_client(srv, max_retries=0), body)


@pytest.mark.parametrize(("fault", "error"), MALFORMED_REPLY_FAULTS)
def test_malformed_replies_raise_decode_error(srv: ReferenceServer, fault: Fault, error: type) -> None:
    srv.inject(fault)

    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(error):
            await c.infer(add_sub_request()[0])

    use(InferenceRESTClient(srv.http_url, RESTConfig(binary_data=True)), body)


# -- inference -----------------------------------------------------------------------------------------------------
def test_infer_binary_autodetected_once_even_under_gather(srv: ReferenceServer) -> None:
    async def body(c: InferenceRESTClient) -> None:
        responses = await asyncio.gather(*(c.infer(add_sub_request()[0]) for _ in range(20)))
        _, a, b = add_sub_request()
        for r in responses:
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)

    use(InferenceRESTClient(srv.http_url), body)
    assert srv.count(route="server_metadata") == 1


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_or_json_forced_and_typed_errors(srv: ReferenceServer, binary: bool) -> None:
    async def body(c: InferenceRESTClient) -> None:
        request, a, b = add_sub_request(request_id="r-1")
        response = await c.infer(request)
        assert response.id == "r-1"
        np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
        with pytest.raises(errors.NotFoundError) as info:
            await c.infer(add_sub_request("no_such_model")[0])
        assert info.value.model_name == "no_such_model"
        with pytest.raises(TypeError, match="takes one InferRequest"):
            await c.infer({"model_name": "add_sub"})  # type: ignore[arg-type]

    use(InferenceRESTClient(srv.http_url, RESTConfig(binary_data=binary)), body)
    assert srv.count(route="server_metadata") == 0


def test_v1_protocol() -> None:
    from inferkit.testing.models import iris_model

    with ReferenceServer([iris_model()], grpc=False) as server:

        async def body(c: InferenceRESTClient) -> None:
            assert await c.is_server_live() and await c.is_model_ready("iris")
            reply = await c.predict("iris", instances=[[6.8, 2.8, 4.8, 1.4]])
            assert len(reply["predictions"]) == 1
            with pytest.raises(errors.UnsupportedOperationError):
                await c.get_server_metadata()

        use(InferenceRESTClient(server.http_url, RESTConfig(protocol="v1")), body)


# -- retries, timeouts, deadline --------------------------------------------------------------------------------
def test_retry_after_is_honoured_and_reported(srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=429, retry_after=0.2, times=None))

    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(errors.RateLimitedError) as info:
            await c.infer(add_sub_request()[0])
        assert info.value.retry_after == pytest.approx(0.2) and info.value.attempts == 2

    use(fast_client(srv, max_retries=1), body)


def test_sequence_requests_are_not_retried(srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=503, times=None))

    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(errors.ServiceUnavailableError):
            await c.infer(add_sub_request(sequence_id=7)[0])

    use(fast_client(srv, max_retries=3), body)
    assert srv.count(route="infer") == 1


def test_read_timeout_retry_and_deadline(srv: ReferenceServer) -> None:
    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(TimeoutError) as info:
            await c.infer(slow_request(1.0), timeout=Timeout(connect=2, read=0.2))
        assert isinstance(info.value, errors.ReadTimeout) and info.value.attempts == 2
        await c.infer(slow_request(0.0))

    use(fast_client(srv, max_retries=1), body)

    deadline = RESTConfig(retry=RetryPolicy(max_retries=5, deadline=0.4, **FAST), binary_data=True)

    async def capped(c: InferenceRESTClient) -> None:
        with pytest.raises(errors.DeadlineExceeded):
            await c.infer(slow_request(2.0))

    use(InferenceRESTClient(srv.http_url, deadline), capped)


def test_connection_refused_is_a_connection_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(ConnectionError) as info:
            await c.is_server_live()
        assert info.value.attempts == 3 and isinstance(info.value, errors.ConnectError)
        with pytest.raises(errors.ConnectError):
            await c.infer(add_sub_request()[0])
        assert c._calls.binary is None  # unknown yet: asked again next time

    use(InferenceRESTClient(f"http://127.0.0.1:{port}", RESTConfig(retry=RetryPolicy(max_retries=2, **FAST))), body)


def test_pool_timeout_when_every_connection_is_busy(srv: ReferenceServer) -> None:
    config = RESTConfig(pool_maxsize=1, binary_data=True, retry=RetryPolicy.none(), timeout=Timeout(5, pool=0.1))

    async def body(c: InferenceRESTClient) -> None:
        slow = asyncio.ensure_future(c.infer(slow_request(0.6)))
        for _ in range(100):  # bounded wait until the slow call holds the only connection
            if srv.count(route="infer", model="slow"):
                break
            await asyncio.sleep(0.02)
        with pytest.raises(errors.PoolTimeout) as info:
            await c.infer(add_sub_request()[0])
        assert isinstance(info.value, TimeoutError) and "pool_maxsize" in str(info.value)
        await slow
        await c.infer(add_sub_request()[0])

    use(InferenceRESTClient(srv.http_url, config), body)


# -- cancellation, loops, concurrency ----------------------------------------------------------------------------
def test_cancelled_infer_releases_its_connection(srv: ReferenceServer) -> None:
    async def body(c: InferenceRESTClient) -> None:
        await c.infer(add_sub_request()[0])
        task = asyncio.ensure_future(c.infer(slow_request(2.0)))
        for _ in range(100):
            if srv.count(route="infer", model="slow"):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = c._transport.connector_stats()
        assert stats["acquired"] == 0
        assert c._transport._state.slots._value == c.config.pool_maxsize  # every slot back
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.infer(slow_request(2.0)), 0.2)
        assert c._transport.connector_stats()["acquired"] == 0
        response = await c.infer(add_sub_request()[0])
        assert response.as_numpy("OUTPUT0") is not None

    use(InferenceRESTClient(srv.http_url, RESTConfig(binary_data=True)), body)


def test_client_made_outside_a_loop_works_across_asyncio_runs(srv: ReferenceServer) -> None:
    client = InferenceRESTClient(srv.http_url)  # no loop is running here
    for _ in range(3):
        assert run(client.is_server_ready) is True
        assert run(lambda: client.infer(add_sub_request()[0])).model_name == "add_sub"
    run(client.close)
    with pytest.raises(errors.ConnectError):
        run(client.is_server_live)


def test_1000_concurrent_infers_through_one_client(srv: ReferenceServer) -> None:
    async def body(c: InferenceRESTClient) -> None:
        request, a, b = add_sub_request()
        responses = await asyncio.gather(*(c.infer(request) for _ in range(1000)))
        assert all(np.array_equal(r.as_numpy("OUTPUT0"), a + b) for r in responses)
        stats = c._transport.connector_stats()
        assert stats["acquired"] == 0 and stats["idle"] <= c.config.pool_maxsize

    use(InferenceRESTClient(srv.http_url, RESTConfig(pool_maxsize=64)), body)
    assert srv.count(route="infer", model="add_sub") == 1000


# -- configuration ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compression_both_ways(srv: ReferenceServer, encoding: str) -> None:
    n = 100_000
    data = (np.arange(n) % 7).astype(np.uint8)
    request = InferRequest("identity_uint8", [InferInput("INPUT0", [n], "UINT8").set_data_from_numpy(data)])
    config = RESTConfig(compression=encoding, compression_threshold=100, accept_compression=True, binary_data=True)

    async def body(c: InferenceRESTClient) -> None:
        np.testing.assert_array_equal((await c.infer(request)).as_numpy("OUTPUT0"), data)

    use(InferenceRESTClient(srv.http_url, config), body)


def test_max_response_size_and_gzip_bomb(srv: ReferenceServer) -> None:
    n = 4 << 20
    zeros = InferRequest("identity_uint8", [InferInput("INPUT0", [n], "UINT8").set_data_from_numpy(np.zeros(n, "u1"))])

    async def body(c: InferenceRESTClient) -> None:
        with pytest.raises(errors.ResponseTooLargeError, match="decompression"):
            await c.infer(zeros)
        await c.infer(add_sub_request()[0])

    bomb = RESTConfig(max_response_size=1 << 20, accept_compression=True, binary_data=True, timeout=30)
    use(InferenceRESTClient(srv.http_url, bomb), body)

    async def plain(c: InferenceRESTClient) -> None:
        with pytest.raises(errors.ResponseTooLargeError):
            await c.infer(zeros)

    use(InferenceRESTClient(srv.http_url, RESTConfig(max_response_size=1 << 20, binary_data=True)), plain)


@pytest.mark.parametrize("auth", [("user", "pw"), None])
def test_static_auth_and_authbase_is_sync_only(auth: Any) -> None:
    from inferkit.config import BasicAuth

    header = BasicAuth("user", "pw").headers()["Authorization"]
    with ReferenceServer([identity_model("m", "INT32")], grpc=False, auth=("Authorization", header)) as server:

        async def body(c: InferenceRESTClient) -> None:
            if auth is None:
                with pytest.raises(errors.UnauthenticatedError):
                    await c.is_server_ready()
            else:
                assert await c.is_model_ready("m")

        use(InferenceRESTClient(server.http_url, RESTConfig(auth=auth)), body)
    requests = pytest.importorskip("requests")
    with pytest.raises(ValueError, match="sync client"):
        InferenceRESTClient("http://127.0.0.1:1", RESTConfig(auth=requests.auth.HTTPDigestAuth("u", "p")))


def test_tls_and_mtls(tls_material: Any) -> None:
    with ReferenceServer([identity_model("m", "INT32")], grpc=False, tls=tls_material.server_mutual) as server:
        good = RESTConfig(
            verify=tls_material.ca_file, cert=(tls_material.client_cert_file, tls_material.client_key_file)
        )
        use(InferenceRESTClient(server.http_url, good), lambda c: c.is_model_ready("m"))

        async def no_cert(c: InferenceRESTClient) -> None:
            with pytest.raises(errors.ConnectError):
                await c.is_server_live()

        use(InferenceRESTClient(server.http_url, RESTConfig(verify=tls_material.ca_file, retries=0)), no_cert)
    with ReferenceServer([identity_model("m", "INT32")], grpc=False, tls=tls_material.server) as server:
        ctx = ssl.create_default_context(cadata=tls_material.ca_pem.decode())
        assert use(InferenceRESTClient(server.http_url, RESTConfig(verify=ctx)), lambda c: c.is_server_live())

        async def untrusted(c: InferenceRESTClient) -> None:
            with pytest.raises(errors.TLSError) as info:
                await c.is_server_live()
            assert info.value.attempts == 1

        use(InferenceRESTClient(server.http_url, RESTConfig(retries=3)), untrusted)


def test_verbose_logging_redacts_credentials(srv: ReferenceServer, caplog: pytest.LogCaptureFixture) -> None:
    config = RESTConfig(verbose=True, headers={"Authorization": "Bearer s3cret"})
    with caplog.at_level(logging.INFO, logger="inferkit"):
        use(InferenceRESTClient(srv.http_url, config), lambda c: c.is_server_live())
    assert "/v2/health/live -> 200" in caplog.text and "s3cret" not in caplog.text


def test_properties_and_validation(srv: ReferenceServer) -> None:
    c = InferenceRESTClient(srv.http_url + "/")
    assert c.host == srv.http_url and c.protocol_version == "v2" and "aio" in repr(c)
    with pytest.raises(ValueError):
        InferenceRESTClient("ftp://x:1")
    with pytest.raises(ValueError):
        InferenceRESTClient(srv.http_url, session=object())
