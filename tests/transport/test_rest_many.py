"""The sync REST client's ``infer_many``: worker threads share the client's own pooled connections (HTTP, HTTPS,
and the session path alike), each request sent exactly as ``client.infer`` sends it.

Against the reference server over 127.0.0.1 (the retry rules run through it in test_rest_retries, the fault
matrix and hostile replies in tests/reliability), and against the raw-socket server of tests/reliability for reply
framings the reference server never sends (chunked, read-until-close, interim replies, garbage). What is checked:
the same results and typed errors as ``client.infer``, the pool shared with blocking calls (never exceeded, every
connection given back in blocking mode), leaving early, large and compressed bodies, TLS and mutual TLS.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import requests

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy, Timeout, errors
from inferkit.rest_client import InferenceRESTClient
from inferkit.testing import Fault, ReferenceServer
from inferkit.testing.models import identity_model
from tests.reliability.rawserver import RawHTTPServer
from tests.transport._batch_support import BatchServer, batch_threads, probe_request, value_of
from tests.transport.cases import MALFORMED_REPLY_FAULTS

FAST = RetryPolicy(max_retries=2, backoff_initial=0.01, backoff_max=0.02, jitter=0.0)


def client_for(bs: BatchServer, **config: Any) -> InferenceRESTClient:
    return InferenceRESTClient(bs.server.http_url, RESTConfig(**{"retry": FAST, "timeout": 10, **config}))


def pool_of(c: InferenceRESTClient) -> Any:
    pool = c._transport._pool
    assert pool is not None
    return pool


def assert_pool_whole(c: InferenceRESTClient) -> None:
    """Every connection is back in the pool, and the open ones are in blocking mode (what blocking calls expect)."""
    pool = pool_of(c)
    assert pool.pool.qsize() == pool.pool.maxsize
    for conn in list(pool.pool.queue):
        if conn is not None and conn.sock is not None:
            assert conn.sock.gettimeout() is None or conn.sock.gettimeout() > 0


# -- the path ------------------------------------------------------------------------------------------------------
def test_infer_many_runs_on_worker_threads_sharing_the_pool(bs: BatchServer) -> None:
    seen: list[int] = []

    def source() -> Iterator[InferRequest]:
        for i in range(200):
            seen.append(len([t for t in batch_threads() if "infer-many" in t.name]))
            yield probe_request(i, jitter=0.001)

    with client_for(bs) as c:
        results = list(c.infer_many(source(), concurrency=16))
        assert [value_of(r) for r in results] == [2 * i for i in range(200)]
        assert max(seen) <= 16  # at most one worker per request in flight
        assert 2 <= bs.probe.max_seen <= 16
        assert_pool_whole(c)
        assert value_of(c.infer(probe_request(5))) == 10  # blocking calls reuse the connections it gave back
    assert batch_threads() == []


def test_session_path_and_proxied_clients_run_too(bs: BatchServer) -> None:
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: r)
    with InferenceRESTClient(bs.server.http_url, RESTConfig(timeout=10), session=session) as c:
        assert not c._transport.direct
        got = c.infer_many([probe_request(i) for i in range(6)], concurrency=3)
        assert [value_of(r) for r in got] == [0, 2, 4, 6, 8, 10]
    assert batch_threads() == []


# -- the pool --------------------------------------------------------------------------------------------------
def test_concurrency_above_the_pool_size_waits_for_connections(bs: BatchServer) -> None:
    with client_for(bs, pool_maxsize=2) as c:
        got = list(c.infer_many([probe_request(i, delay=0.01) for i in range(24)], concurrency=8))
        assert [value_of(r) for r in got] == [2 * i for i in range(24)]
        assert bs.probe.max_seen <= 2  # pool_block: never more connections than pool_maxsize
        assert_pool_whole(c)
    assert batch_threads() == []


def test_infer_many_shares_the_pool_with_blocking_calls_from_other_threads(bs: BatchServer) -> None:
    errors_seen: list[BaseException] = []
    with client_for(bs, pool_maxsize=4) as c:

        def blocking(offset: int) -> None:
            try:
                for i in range(30):
                    assert value_of(c.infer(probe_request(offset + i))) == 2 * (offset + i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors_seen.append(exc)

        threads = [threading.Thread(target=blocking, args=(1000 * k,)) for k in range(1, 4)]
        for t in threads:
            t.start()
        got = list(c.infer_many([probe_request(i, jitter=0.001) for i in range(120)], concurrency=4))
        for t in threads:
            t.join(30)
        assert errors_seen == []
        assert [value_of(r) for r in got] == [2 * i for i in range(120)]
        assert bs.probe.max_seen <= 4
        assert_pool_whole(c)


def test_leaving_early_cancels_the_requests_in_flight(bs: BatchServer) -> None:
    requests_ = [probe_request(0)] + [probe_request(i, delay=5.0) for i in range(1, 8)]
    with client_for(bs) as c:
        with c.infer_many(requests_, concurrency=8, ordered=False) as results:
            index, first = next(results)
            assert index == 0 and value_of(first) == 0
        # Closed without waiting for the slow ones: their connections were closed and given back to the pool.
        assert batch_threads() == []
        assert_pool_whole(c)
        assert value_of(c.infer(probe_request(3))) == 6


def test_a_failure_stops_the_run_and_is_raised_with_its_index(bs: BatchServer) -> None:
    requests_ = [probe_request(i) for i in range(5)] + [probe_request(-1)] + [probe_request(i) for i in range(50)]
    with client_for(bs) as c:
        with pytest.raises(errors.InvalidInputError) as info:
            list(c.infer_many(requests_, concurrency=4))
        assert info.value.index == 5  # type: ignore[attr-defined]
        assert_pool_whole(c)
    assert batch_threads() == []


def test_a_client_closed_meanwhile_reports_every_item(bs: BatchServer) -> None:
    c = client_for(bs)
    c.infer(probe_request(1))
    c.close()
    got = list(c.infer_many([probe_request(i) for i in range(4)], concurrency=2, return_exceptions=True))
    assert [item.index for item in got] == [0, 1, 2, 3]
    assert all(isinstance(item.exception, errors.ConnectError) for item in got)
    assert batch_threads() == []


# -- what the reply can be -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_server() -> Iterator[ReferenceServer]:
    models = [identity_model("identity_fp32", "FP32"), identity_model("identity_uint8", "UINT8")]
    with ReferenceServer(models, grpc=False) as srv:
        yield srv


def test_large_tensors_both_ways(big_server: ReferenceServer) -> None:
    arrays = [np.random.default_rng(i).random(1 << 20, dtype=np.float32) for i in range(4)]  # 4 MiB each

    def requests_() -> Iterator[InferRequest]:
        for a in arrays:
            yield InferRequest("identity_fp32", [InferInput("INPUT0", [a.size], "FP32").set_data_from_numpy(a)])

    with InferenceRESTClient(big_server.http_url, RESTConfig(binary_data=True, timeout=30)) as c:
        for a, r in zip(arrays, c.infer_many(requests_(), concurrency=2)):
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_requests_and_replies(big_server: ReferenceServer, encoding: str) -> None:
    data = (np.arange(100_000) % 7).astype(np.uint8)
    x = InferInput("INPUT0", [data.size], "UINT8").set_data_from_numpy(data)
    config = RESTConfig(compression=encoding, compression_threshold=100, accept_compression=True, binary_data=True)
    with InferenceRESTClient(big_server.http_url, config) as c:
        for r in c.infer_many([InferRequest("identity_uint8", [x])] * 3, concurrency=3):
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), data)


def test_reply_size_limits(big_server: ReferenceServer) -> None:
    n = 8 << 20
    zeros = InferInput("INPUT0", [n], "UINT8").set_data_from_numpy(np.zeros(n, dtype=np.uint8))
    small = InferInput("INPUT0", [4], "UINT8").set_data_from_numpy(np.zeros(4, dtype=np.uint8))
    requests_ = [InferRequest("identity_uint8", [zeros]), InferRequest("identity_uint8", [small])]
    for accept in (False, True):  # a plain body past the limit, and a gzip bomb
        config = RESTConfig(max_response_size=1 << 20, accept_compression=accept, binary_data=True, timeout=30)
        with InferenceRESTClient(big_server.http_url, config) as c:
            first, second = c.infer_many(requests_, concurrency=2, return_exceptions=True)
            assert isinstance(first.exception, errors.ResponseTooLargeError)
            assert second.as_numpy("OUTPUT0").tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(("fault", "error"), MALFORMED_REPLY_FAULTS)
def test_malformed_replies_are_decode_errors(bs: BatchServer, fault: Fault, error: type) -> None:
    bs.server.inject(Fault(route=fault.route, model="probe", action=fault.action))
    with client_for(bs, binary_data=True) as c:
        got = list(c.infer_many([probe_request(i) for i in range(3)], concurrency=1, return_exceptions=True))
        assert isinstance(got[0].exception, error)
        assert [value_of(r) for r in got[1:]] == [2, 4]


def test_verbose_client_logs_every_attempt(bs: BatchServer, caplog: pytest.LogCaptureFixture) -> None:
    bs.server.inject(Fault(route="infer", model="probe", action="status", status=503, times=1))
    with caplog.at_level(logging.INFO, logger="inferkit"), client_for(bs, verbose=True) as c:
        assert [value_of(r) for r in c.infer_many([probe_request(i) for i in range(3)], concurrency=1)] == [0, 2, 4]
    lines = [r.getMessage() for r in caplog.records if "/v2/models/probe/infer" in r.getMessage()]
    assert len(lines) == 4 and sum("-> 503" in line for line in lines) == 1


def test_per_call_timeout_and_headers(bs: BatchServer) -> None:
    bs.server.inject(Fault(route="infer", model="probe", action="delay", seconds=0.5, times=1))
    with client_for(bs, retry=RetryPolicy.none()) as c:
        got = list(
            c.infer_many(
                [probe_request(1), probe_request(2)],
                concurrency=1,
                return_exceptions=True,
                timeout=Timeout(connect=2, read=0.2),
                headers={"X-Trace": "abc"},
            )
        )
        assert isinstance(got[0].exception, errors.ReadTimeout)
        assert value_of(got[1]) == 4
        assert_pool_whole(c)


# -- framings only a raw server sends -----------------------------------------------------------------------------
REPLY_JSON = json.dumps(
    {"model_name": "m", "outputs": [{"name": "OUTPUT0", "datatype": "INT32", "shape": [1], "data": [7]}]}
).encode()


def _chunked(body: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 10]), body[i : i + 10]) for i in range(0, len(body), 10))


FRAMINGS: dict[str, tuple[Callable[[], bytes], bool]] = {
    # name: (the reply's bytes, whether the server closes the connection after it)
    "content-length": (lambda: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(REPLY_JSON) + REPLY_JSON, False),
    "chunked": (
        lambda: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(REPLY_JSON) + b"0\r\n\r\n",
        False,
    ),
    "until-close": (lambda: b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + REPLY_JSON, True),
    "interim-100": (
        lambda: (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(REPLY_JSON) + REPLY_JSON
        ),
        False,
    ),
    "connection-close": (
        lambda: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(REPLY_JSON) + REPLY_JSON,
        True,
    ),
    "garbage": (lambda: b"SSH-2.0-OpenSSH_9.6\r\n\r\n", True),
}


def raw_request(i: int) -> InferRequest:
    x = InferInput("INPUT0", [1], "INT32").set_data_from_numpy(np.array([i], dtype=np.int32))
    return InferRequest("m", [x])


@pytest.mark.parametrize("framing", [k for k in FRAMINGS if k != "garbage"])
def test_every_reply_framing(framing: str) -> None:
    build, closes = FRAMINGS[framing]
    reply = build()
    with RawHTTPServer(lambda *_: reply, close_after_reply=closes) as server:
        config = RESTConfig(binary_data=False, retry=RetryPolicy.none(), timeout=5)
        with InferenceRESTClient(server.url, config) as c:
            got = list(c.infer_many([raw_request(i) for i in range(12)], concurrency=3))
            assert [r.as_numpy("OUTPUT0").tolist() for r in got] == [[7]] * 12
            assert_pool_whole(c)
        assert server.requests == 12
        if closes:
            assert server.connections == 12  # a connection the reply ends is never reused
        else:
            assert server.connections <= 3
    assert batch_threads() == []


def test_a_reply_that_is_not_http_is_a_connection_error() -> None:
    build, closes = FRAMINGS["garbage"]
    reply = build()
    with RawHTTPServer(lambda *_: reply, close_after_reply=closes) as server:
        with InferenceRESTClient(server.url, RESTConfig(binary_data=False, retry=FAST, timeout=5)) as c:
            [item] = list(c.infer_many([raw_request(0)], concurrency=1, return_exceptions=True))
            assert isinstance(item.exception, errors.ConnectError)
            assert "not HTTP" in str(item.exception.__cause__)
            with pytest.raises(errors.ConnectError):
                c.infer(raw_request(0))  # the blocking call says the same
        assert server.requests == 6  # three attempts each


# -- TLS -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(tls_material: Any) -> Iterator[ReferenceServer]:
    models = [identity_model("identity_fp32", "FP32"), BatchServer().probe.model()]
    with ReferenceServer(models, grpc=False, tls=tls_material.server, max_workers=16) as srv:
        yield srv


def test_https(tls_server: ReferenceServer, tls_material: Any) -> None:
    with InferenceRESTClient(tls_server.http_url, RESTConfig(verify=tls_material.ca_file, timeout=10)) as c:
        assert tls_server.http_url.startswith("https://")
        got = c.infer_many([probe_request(i, jitter=0.001) for i in range(150)], concurrency=8)
        assert [value_of(r) for r in got] == [2 * i for i in range(150)]
        assert_pool_whole(c)
        assert value_of(c.infer(probe_request(4))) == 8  # the TLS connections it gave back still work
    assert batch_threads() == []


def test_https_large_tensors_span_many_tls_records(tls_server: ReferenceServer, tls_material: Any) -> None:
    # 2 MiB each way: over a hundred 16 KiB records per reply, read back through the SSL object's own buffer.
    arrays = [np.random.default_rng(i).random(1 << 19, dtype=np.float32) for i in range(6)]
    requests_ = [
        InferRequest("identity_fp32", [InferInput("INPUT0", [a.size], "FP32").set_data_from_numpy(a)]) for a in arrays
    ]
    config = RESTConfig(verify=tls_material.ca_file, binary_data=True, timeout=30)
    with InferenceRESTClient(tls_server.http_url, config) as c:
        for a, r in zip(arrays, c.infer_many(requests_, concurrency=3)):
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a)
        assert_pool_whole(c)


def test_https_broken_connections_are_retried(tls_server: ReferenceServer, tls_material: Any) -> None:
    tls_server.reset()
    for action in ("drop_before", "drop_during", "truncate"):
        tls_server.inject(Fault(route="infer", model="probe", action=action, times=1))
    config = RESTConfig(verify=tls_material.ca_file, retry=FAST, timeout=10)
    with InferenceRESTClient(tls_server.http_url, config) as c:
        got = list(c.infer_many([probe_request(i) for i in range(6)], concurrency=1))
        assert [value_of(r) for r in got] == [0, 2, 4, 6, 8, 10]
        assert tls_server.count(route="infer", model="probe") == 6 + 3
        assert_pool_whole(c)
    tls_server.reset()


def test_mutual_tls(tls_material: Any) -> None:
    with ReferenceServer([BatchServer().probe.model()], grpc=False, tls=tls_material.server_mutual) as srv:
        cert = (tls_material.client_cert_file, tls_material.client_key_file)
        with InferenceRESTClient(srv.http_url, RESTConfig(verify=tls_material.ca_file, cert=cert)) as c:
            assert [value_of(r) for r in c.infer_many([probe_request(i) for i in range(10)], concurrency=4)] == [
                2 * i for i in range(10)
            ]
        no_cert = RESTConfig(verify=tls_material.ca_file, retry=FAST, timeout=10)
        with InferenceRESTClient(srv.http_url, no_cert) as c:
            got = list(c.infer_many([probe_request(i) for i in range(3)], concurrency=2, return_exceptions=True))
            # TLSError or a reset, depending on when the server's alert lands: a ConnectError either way.
            assert all(isinstance(item.exception, errors.ConnectError) for item in got)
    assert batch_threads() == []
