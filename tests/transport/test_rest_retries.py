"""Retry rules of the REST client against the reference server; attempts counted by the server itself.

Every inference test runs twice: through ``client.infer`` (a blocking call) and through ``client.infer_many``
(worker threads sharing the client), which must keep the very same rules.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np
import pytest

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy, Timeout, errors
from inferkit.rest_client import InferenceRESTClient
from inferkit.testing import Fault, ReferenceServer
from inferkit.testing.models import add_sub_model, sequence_model, slow_model
from tests.transport.cases import BROKEN_CONNECTION_ACTIONS, NEVER_RETRIED, RETRYABLE_STATUSES

FAST = dict(backoff_initial=0.01, backoff_max=0.02, jitter=0.0)


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer([add_sub_model(), sequence_model(), slow_model()], grpc=False) as srv:
        yield srv


@pytest.fixture
def srv(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()
    yield server
    server.reset()


def via_infer_many(c: InferenceRESTClient, request: InferRequest, **kwargs: Any) -> Any:
    """One request through ``infer_many`` (a failure is raised as it is, with ``.index`` set)."""
    [response] = list(c.infer_many([request], concurrency=2, **kwargs))
    return response


@pytest.fixture(params=["infer", "infer_many"])
def infer(request: pytest.FixtureRequest) -> Any:
    """``infer(client, request, **kwargs)``: the blocking call, or the same request through infer_many."""
    if request.param == "infer":
        return lambda c, req, **kwargs: c.infer(req, **kwargs)
    return via_infer_many


def make_client(srv: ReferenceServer, **policy: Any) -> InferenceRESTClient:
    retry = RetryPolicy(**{**FAST, **policy})
    return InferenceRESTClient(srv.http_url, RESTConfig(retry=retry, binary_data=True, timeout=Timeout(5)))


def add_sub(**kwargs: Any) -> InferRequest:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(a)
    return InferRequest("add_sub", [x0, x1], **kwargs)


@pytest.mark.parametrize("status", RETRYABLE_STATUSES)
def test_retryable_statuses_are_retried_then_succeed(infer: Any, srv: ReferenceServer, status: int) -> None:
    srv.inject(Fault(route="infer", model="add_sub", action="status", status=status, times=2))
    with make_client(srv, max_retries=3) as c:
        infer(c, add_sub())
    assert srv.count(route="infer", model="add_sub") == 3


@pytest.mark.parametrize(("status", "error"), NEVER_RETRIED)
def test_client_errors_are_never_retried(infer: Any, srv: ReferenceServer, status: int, error: type) -> None:
    srv.inject(Fault(route="infer", model="add_sub", action="status", status=status, times=None))
    with make_client(srv, max_retries=5) as c, pytest.raises(error) as info:
        infer(c, add_sub())
    assert info.value.attempts == 1 and info.value.status_code == status
    assert srv.count(route="infer", model="add_sub") == 1


def test_exhausted_retries_raise_the_last_error_with_attempts(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=503, times=None, message="overloaded"))
    with make_client(srv, max_retries=2) as c, pytest.raises(errors.ServiceUnavailableError) as info:
        infer(c, add_sub())
    assert info.value.attempts == 3
    assert "overloaded" in str(info.value)
    assert srv.count(route="infer") == 3


def test_metadata_calls_are_retried_too(srv: ReferenceServer) -> None:
    srv.inject(Fault(route="model_metadata", action="status", status=502, times=1))
    with make_client(srv, max_retries=1) as c:
        assert c.get_model_metadata("add_sub")["name"] == "add_sub"
    assert srv.count(route="model_metadata") == 2


def test_retry_after_is_honoured(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=429, retry_after=0.4, times=1))
    with make_client(srv, max_retries=1) as c:
        t0 = time.monotonic()
        infer(c, add_sub())
        assert time.monotonic() - t0 >= 0.35  # a lower bound only: never assert an upper wall time
    assert srv.count(route="infer") == 2


def test_retry_after_is_capped(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=503, retry_after=3600, times=1))
    with make_client(srv, max_retries=1, retry_after_max=0.05) as c:
        infer(c, add_sub())
    assert srv.count(route="infer") == 2


def test_retry_after_reported_on_final_error(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=429, retry_after=7, times=1))
    with make_client(srv, max_retries=0) as c, pytest.raises(errors.RateLimitedError) as info:
        infer(c, add_sub())
    assert info.value.retry_after == 7.0


def test_sequence_requests_are_not_retried(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", model="sequence", action="status", status=503, times=1))
    x = InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([1], dtype=np.int32))
    request = InferRequest("sequence", [x], sequence_id=9, sequence_start=True)
    with make_client(srv, max_retries=3) as c, pytest.raises(errors.ServiceUnavailableError) as info:
        infer(c, request)
    assert info.value.attempts == 1
    assert srv.count(route="infer", model="sequence") == 1


def test_retry_infer_false_disables_infer_retries_only(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=503, times=1))
    srv.inject(Fault(route="model_metadata", action="status", status=503, times=1))
    with make_client(srv, max_retries=2, retry_infer=False) as c:
        with pytest.raises(errors.ServiceUnavailableError):
            infer(c, add_sub())
        c.get_model_metadata("add_sub")
    assert srv.count(route="infer") == 1 and srv.count(route="model_metadata") == 2


def test_dropped_connection_is_retried(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="drop_before", times=1))
    with make_client(srv, max_retries=1) as c:
        infer(c, add_sub())
    assert srv.count(route="infer") == 2


@pytest.mark.parametrize("action", BROKEN_CONNECTION_ACTIONS)
def test_broken_connections_without_retries_are_connect_errors(infer: Any, srv: ReferenceServer, action: str) -> None:
    srv.inject(Fault(route="infer", action=action, times=1))
    with make_client(srv, max_retries=0) as c:
        with pytest.raises(errors.ConnectError) as info:
            infer(c, add_sub())
        assert isinstance(info.value, ConnectionError)
        infer(c, add_sub())  # the pool recovered


def test_connection_refused_is_retried_and_mapped() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = RetryPolicy(max_retries=2, **FAST)
    with InferenceRESTClient(f"http://127.0.0.1:{port}", RESTConfig(retry=policy, timeout=2)) as c:
        with pytest.raises(errors.ConnectError) as info:
            c.is_server_live()
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, BaseException)


def test_read_timeout_is_retried_per_policy(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="delay", seconds=0.6, times=1))
    policy = RetryPolicy(max_retries=1, **FAST)
    config = RESTConfig(retry=policy, binary_data=True, timeout=Timeout(connect=2, read=0.3))
    with InferenceRESTClient(srv.http_url, config) as c:
        infer(c, add_sub())
    assert srv.count(route="infer") == 2


def test_read_timeout_not_retried_when_disabled(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="delay", seconds=0.6, times=1))
    policy = RetryPolicy(max_retries=3, retry_on_timeout=False, **FAST)
    with InferenceRESTClient(srv.http_url, RESTConfig(retry=policy, binary_data=True)) as c:
        with pytest.raises(errors.ReadTimeout) as info:
            infer(c, add_sub(), timeout=Timeout(connect=2, read=0.3))
    assert isinstance(info.value, TimeoutError) and info.value.attempts == 1
    assert srv.count(route="infer") == 1


def test_deadline_bounds_all_attempts(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="status", status=503, retry_after=0.3, times=None))
    policy = RetryPolicy(max_retries=10, deadline=0.5, **FAST)
    with InferenceRESTClient(srv.http_url, RESTConfig(retry=policy, binary_data=True)) as c:
        with pytest.raises(errors.ServiceUnavailableError) as info:
            infer(c, add_sub())
    # 0.3 s sleeps: the second retry would end past the 0.5 s deadline, so it never starts.
    assert info.value.attempts == 2 and srv.count(route="infer") == 2


def test_deadline_caps_the_read_timeout(infer: Any, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="infer", action="delay", seconds=2.0, times=None))
    policy = RetryPolicy(max_retries=5, deadline=0.4, **FAST)
    with InferenceRESTClient(srv.http_url, RESTConfig(retry=policy, binary_data=True)) as c:
        with pytest.raises(errors.DeadlineExceeded) as info:
            infer(c, add_sub())
    assert isinstance(info.value, TimeoutError)


def test_stale_keepalive_connection_is_resent_without_using_a_retry(infer: Any, srv: ReferenceServer) -> None:
    with make_client(srv, max_retries=0) as c:
        infer(c, add_sub())
        pool = c._transport._pool
        conn = pool.pool.queue[-1]
        # Simulate the server closing the idle connection in a way the liveness poll cannot see.
        conn.sock.shutdown(2)
        import urllib3.connectionpool as cp

        original = cp.is_connection_dropped
        cp.is_connection_dropped = lambda _conn: False
        try:
            infer(c, add_sub())
        finally:
            cp.is_connection_dropped = original
    assert srv.count(route="infer") == 2
