"""REST transport against the reference server: TLS and mTLS, auth, compression, response size limits,
timeouts, the pool under threads, and the requests-session path (custom sessions, adapters, hooks, AuthBase)."""

from __future__ import annotations

import gc
import os
import ssl
import threading
import warnings
from typing import Any, Iterator

import numpy as np
import pytest
import requests

from inferkit import InferInput, InferRequest, RESTConfig, RetryPolicy, Timeout, errors
from inferkit.config import APIKey, BasicAuth, BearerToken
from inferkit.rest_client import InferenceRESTClient
from inferkit.testing import Fault, ReferenceServer, ServerTLS
from inferkit.testing.models import add_sub_model, identity_model, slow_model

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    models = [add_sub_model(), identity_model("identity_uint8", "UINT8"), slow_model()]
    with ReferenceServer(models, grpc=False, max_workers=16) as srv:
        yield srv


@pytest.fixture
def srv(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()
    yield server
    server.reset()


def add_sub() -> InferRequest:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(a)
    return InferRequest("add_sub", [x0, x1])


def uint8_request(n: int) -> tuple[InferRequest, np.ndarray]:
    data = (np.arange(n) % 7).astype(np.uint8)  # compresses well
    x = InferInput("INPUT0", [n], "UINT8").set_data_from_numpy(data)
    return InferRequest("identity_uint8", [x]), data


# -- TLS -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca = trustme.CA()
    client_ca = trustme.CA()
    client_cert = client_ca.issue_cert("client@inferkit.test")
    tmp = tmp_path_factory.mktemp("tls")
    ca_path = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path = tmp / "client.pem"
    key_path = tmp / "client.key"
    client_cert.cert_chain_pems[0].write_to_path(str(cert_path))
    client_cert.private_key_pem.write_to_path(str(key_path))
    return {"ca": ca, "client_ca": client_ca, "ca_path": str(ca_path), "cert": str(cert_path), "key": str(key_path)}


def test_tls_verified_with_ca_bundle(tls_material: dict[str, Any]) -> None:
    tls = ServerTLS.from_trustme(tls_material["ca"])
    with ReferenceServer([add_sub_model()], grpc=False, tls=tls) as server:
        assert server.http_url.startswith("https://")
        with InferenceRESTClient(server.http_url, RESTConfig(verify=tls_material["ca_path"])) as c:
            assert c.is_server_ready()
            c.infer(add_sub())
        # Default verification (system CAs) rejects the test CA: TLSError, not retried.
        with InferenceRESTClient(server.http_url, RESTConfig(retry=RetryPolicy(max_retries=3))) as c:
            with pytest.raises(errors.TLSError) as info:
                c.is_server_live()
            assert info.value.attempts == 1 and isinstance(info.value, ConnectionError)
        with InferenceRESTClient(server.http_url, RESTConfig(verify=False)) as c:
            assert c.is_server_live()


def test_tls_with_ssl_context(tls_material: dict[str, Any]) -> None:
    tls = ServerTLS.from_trustme(tls_material["ca"])
    ctx = ssl.create_default_context()
    tls_material["ca"].configure_trust(ctx)
    with ReferenceServer([add_sub_model()], grpc=False, tls=tls) as server:
        with InferenceRESTClient(server.http_url, RESTConfig(verify=ctx)) as c:
            c.infer(add_sub())
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname  # untouched


def test_mtls(tls_material: dict[str, Any]) -> None:
    tls = ServerTLS.from_trustme(tls_material["ca"], client_ca=tls_material["client_ca"])
    with ReferenceServer([add_sub_model()], grpc=False, tls=tls) as server:
        config = RESTConfig(verify=tls_material["ca_path"], cert=(tls_material["cert"], tls_material["key"]))
        with InferenceRESTClient(server.http_url, config) as c:
            c.infer(add_sub())
            assert c.get_model_metadata("add_sub")["name"] == "add_sub"
        no_cert = RESTConfig(verify=tls_material["ca_path"], retry=RetryPolicy(max_retries=2, backoff_initial=0.01))
        with InferenceRESTClient(server.http_url, no_cert) as c:
            with pytest.raises(errors.ConnectError):  # TLSError or a reset, depending on when the alert lands
                c.is_server_live()


# -- auth ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("auth", "header"),
    [
        (BearerToken("tok"), ("Authorization", "Bearer tok")),
        (APIKey("k1", header="triton-access-token"), ("triton-access-token", "k1")),
        (BasicAuth("u", "p"), ("Authorization", "Basic dTpw")),
        (("u", "p"), ("Authorization", "Basic dTpw")),
    ],
)
def test_static_auth(auth: Any, header: tuple[str, str]) -> None:
    with ReferenceServer([add_sub_model()], grpc=False, auth=header) as server:
        with InferenceRESTClient(server.http_url, RESTConfig(auth=auth, binary_data=True)) as c:
            assert c._transport.direct  # static credentials stay on the fast path
            c.infer(add_sub())
        with InferenceRESTClient(server.http_url, RESTConfig(binary_data=True)) as c:
            with pytest.raises(errors.UnauthenticatedError) as info:
                c.infer(add_sub())
            assert info.value.attempts == 1
            with pytest.raises(errors.UnauthenticatedError):
                c.is_model_ready("add_sub")  # a readiness probe does not hide bad credentials


def test_requests_authbase_goes_through_the_session() -> None:
    class Signer(requests.auth.AuthBase):
        calls = 0

        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            Signer.calls += 1
            r.headers["X-Signature"] = "signed"
            return r

    with ReferenceServer([add_sub_model()], grpc=False, auth=("X-Signature", "signed")) as server:
        with InferenceRESTClient(server.http_url, RESTConfig(auth=Signer(), binary_data=True)) as c:
            assert not c._transport.direct
            c.infer(add_sub())
            assert c.is_server_ready()
    assert Signer.calls == 2


# -- custom sessions -----------------------------------------------------------------------------------------------
def test_user_session_headers_and_adapter_pool_are_used(srv: ReferenceServer) -> None:
    session = requests.Session()
    session.headers["X-Corp"] = "1"
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=3, pool_block=True)
    session.mount("http://", adapter)
    with InferenceRESTClient(srv.http_url, session=session) as c:
        assert c._transport.direct
        assert ("X-Corp", "1") in c._transport._const_headers
        assert all(k.lower() != "user-agent" or v.startswith("inferkit/") for k, v in c._transport._const_headers)
        c.infer(add_sub())
        assert c._transport._pool.pool.maxsize == 3
        prepared = requests.Request("GET", srv.http_url + "/").prepare()
        verify = session.merge_environment_settings(prepared.url, {}, None, None, None)["verify"]
        assert c._transport._pool is adapter.get_connection_with_tls_context(prepared, verify)  # requests' own pool
    assert session.adapters  # not closed by the client
    session.get(srv.http_url + "/v2/health/live").raise_for_status()
    session.close()


def test_user_session_hooks_and_custom_adapter_use_requests(srv: ReferenceServer) -> None:
    seen: list[int] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    with InferenceRESTClient(srv.http_url, session=session) as c:
        assert not c._transport.direct
        c.infer(add_sub())
        with pytest.raises(errors.NotFoundError):
            c.get_model_metadata("nope")
    assert 200 in seen and 404 in seen

    class CountingAdapter(requests.adapters.HTTPAdapter):
        sent = 0

        def send(self, request: Any, **kwargs: Any) -> Any:
            CountingAdapter.sent += 1
            return super().send(request, **kwargs)

    with InferenceRESTClient(srv.http_url, RESTConfig(transport=CountingAdapter())) as c:
        assert not c._transport.direct
        c.infer(add_sub())
    assert CountingAdapter.sent >= 2  # server metadata (binary detection) + infer


def test_session_path_maps_errors_and_retries(srv: ReferenceServer) -> None:
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: None)
    policy = RetryPolicy(max_retries=2, backoff_initial=0.01, jitter=0)
    with InferenceRESTClient(srv.http_url, RESTConfig(retry=policy, binary_data=True), session=session) as c:
        srv.inject(Fault(route="infer", action="status", status=503, times=2))
        c.infer(add_sub())
        assert srv.count(route="infer") == 3
        srv.inject(Fault(route="infer", action="drop_before", times=1))
        c.infer(add_sub())
        srv.inject(Fault(route="infer", action="delay", seconds=1.0, times=3))
        with pytest.raises(errors.ReadTimeout):
            c.infer(add_sub(), timeout=Timeout(connect=2, read=0.2))


def test_proxy_uses_the_session_path_and_keeps_pooling(srv: ReferenceServer) -> None:
    from tests.transport.test_rest_client import _PrefixProxy

    # A forwarding proxy receives absolute URLs; _PrefixProxy with the prefix "http://<upstream>" strips it.
    upstream = srv.http_url
    proxy = _PrefixProxy(upstream, upstream)
    try:
        proxy_url = proxy.url[: -len(upstream)]
        config = RESTConfig(proxies={"http": proxy_url}, binary_data=True)
        with InferenceRESTClient(upstream, config) as c:
            assert not c._transport.direct and "proxy" in c._transport.path_reason
            for _ in range(3):
                c.infer(add_sub())
        assert len(proxy.paths) == 3 and all(p.startswith(upstream + "/v2/") for p in proxy.paths)
    finally:
        proxy.close()


# -- compression and size limits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_request_compression_and_compressed_replies(srv: ReferenceServer, encoding: str) -> None:
    config = RESTConfig(compression=encoding, compression_threshold=100, accept_compression=True, binary_data=True)
    request, data = uint8_request(100_000)
    with InferenceRESTClient(srv.http_url, config) as c:
        assert ("Accept-Encoding", "gzip, deflate") in c._transport._const_headers
        np.testing.assert_array_equal(c.infer(request).as_numpy("OUTPUT0"), data)
        assert c.get_server_metadata()["name"]


def test_replies_not_compressed_by_default(srv: ReferenceServer) -> None:
    with InferenceRESTClient(srv.http_url) as c:
        assert ("Accept-Encoding", "identity") in c._transport._const_headers


def test_max_response_size_plain(srv: ReferenceServer) -> None:
    request, _ = uint8_request(50_000)
    with InferenceRESTClient(srv.http_url, RESTConfig(max_response_size=20_000, binary_data=True)) as c:
        with pytest.raises(errors.ResponseTooLargeError) as info:
            c.infer(request)
        assert isinstance(info.value, errors.DecodeError)
        c.infer(add_sub())  # pool fine afterwards


def test_gzip_bomb_stops_at_the_limit(srv: ReferenceServer) -> None:
    # 8 MiB of zeros compress to ~8 KiB: the limit must apply to the decompressed size, while decompressing.
    n = 8 << 20
    x = InferInput("INPUT0", [n], "UINT8").set_data_from_numpy(np.zeros(n, dtype=np.uint8))
    config = RESTConfig(max_response_size=1 << 20, accept_compression=True, binary_data=True, timeout=30)
    with InferenceRESTClient(srv.http_url, config) as c:
        with pytest.raises(errors.ResponseTooLargeError, match="decompression"):
            c.infer(InferRequest("identity_uint8", [x]))


# -- timeouts and the pool -------------------------------------------------------------------------------------------
def test_per_call_timeout_overrides_config(srv: ReferenceServer) -> None:
    x = InferInput("INPUT0", [1], "FP32").set_data_from_numpy(np.ones(1, dtype=np.float32))
    request = InferRequest("slow", [x], parameters={"sleep": 0.5})
    config = RESTConfig(retry=RetryPolicy.none(), binary_data=True, timeout=Timeout(connect=2, read=0.1))
    with InferenceRESTClient(srv.http_url, config) as c:
        with pytest.raises(errors.ReadTimeout):
            c.infer(request)
        c.infer(request, timeout=Timeout(connect=2, read=5))
        c.infer(request, timeout=5)


def _pooled_sockets(c: InferenceRESTClient) -> list[Any]:
    return [conn.sock for conn in c._transport._pool.pool.queue if conn is not None and conn.sock is not None]


def test_calls_beside_others_use_a_blocking_socket_with_kernel_timeouts(srv: ReferenceServer) -> None:
    import socket
    import struct

    from inferkit._transport import wire as _http

    if not _http.KERNEL_TIMEOUTS:
        pytest.skip("SO_RCVTIMEO / SO_SNDTIMEO are only used on Linux and macOS")

    def timeouts(sock: Any) -> tuple[tuple[int, int], tuple[int, int]]:
        size = struct.calcsize("@ll")
        return (
            struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, size)),
            struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, size)),
        )

    config = RESTConfig(
        binary_data=True, retry=RetryPolicy.none(), pool_maxsize=2, timeout=Timeout(connect=2, read=0.3, write=4)
    )
    with InferenceRESTClient(srv.http_url, config) as c:
        c.infer(add_sub())
        (alone,) = _pooled_sockets(c)
        assert alone.gettimeout() is not None  # a thread alone: Python's timeout mode
        pool = c._transport._pool
        busy = pool._get_conn()  # another thread's call in flight, as far as the pool can tell
        try:
            c.infer(add_sub())
            (sock,) = _pooled_sockets(c)
            assert sock.gettimeout() is None  # blocking: one system call per send and per receive
            assert timeouts(sock) == ((4, 0), (0, 300_000))
            # A stalled reply still times out, as a ReadTimeout, and that connection is not used again.
            srv.inject(Fault(route="infer", action="delay", seconds=1.0, times=1))
            with pytest.raises(errors.ReadTimeout):
                c.infer(add_sub())
            assert _pooled_sockets(c) == []
            c.infer(add_sub())
            (sock,) = _pooled_sockets(c)
            # Another per-call timeout is applied to the same connection.
            c.infer(add_sub(), timeout=Timeout(connect=2, read=7, write=5))
            assert _pooled_sockets(c) == [sock] and timeouts(sock) == ((5, 0), (7, 0))
        finally:
            pool._put_conn(busy)
        c.infer(add_sub())  # alone again


def test_connect_timeout() -> None:
    # 10.255.255.1 is unroutable on most networks; skip where it answers or fails fast instead.
    config = RESTConfig(retry=RetryPolicy.none(), timeout=Timeout(connect=0.2, read=1))
    with InferenceRESTClient("http://10.255.255.1:81", config) as c:
        try:
            c.is_server_live()
        except errors.ConnectTimeout as exc:
            assert isinstance(exc, TimeoutError)
        except errors.ConnectError:
            pytest.skip("this network refuses unroutable addresses instead of dropping them")
        else:
            pytest.skip("unexpected answer from an unroutable address")


def test_pool_timeout_when_every_connection_is_busy(srv: ReferenceServer) -> None:
    x = InferInput("INPUT0", [1], "FP32").set_data_from_numpy(np.ones(1, dtype=np.float32))
    slow = InferRequest("slow", [x], parameters={"sleep": 1.0})
    config = RESTConfig(pool_maxsize=1, binary_data=True, retry=RetryPolicy.none(), timeout=Timeout(5, pool=0.1))
    with InferenceRESTClient(srv.http_url, config) as c:
        t = threading.Thread(target=c.infer, args=(slow,))
        t.start()
        try:
            for _ in range(100):  # wait (bounded) until the slow call holds the only connection
                if srv.count(route="infer", model="slow"):
                    break
                threading.Event().wait(0.02)
            with pytest.raises(errors.PoolTimeout) as info:
                c.infer(add_sub())
            assert isinstance(info.value, TimeoutError) and "pool_maxsize" in str(info.value)
        finally:
            t.join(10)
        c.infer(add_sub())


def _open_sockets() -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd") if _is_socket(fd))


def _settled_sockets(limit: int) -> int:
    """Open sockets once the in-process server has closed its ends too (bounded wait)."""
    count = _open_sockets()
    for _ in range(100):
        if count <= limit:
            break
        threading.Event().wait(0.05)
        gc.collect()
        count = _open_sockets()
    return count


def _is_socket(fd: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    except OSError:
        return False


def _hammer(srv: ReferenceServer, threads: int, per_thread: int) -> None:
    before = _open_sockets()
    failures: list[BaseException] = []
    config = RESTConfig(binary_data=True, pool_maxsize=threads, timeout=Timeout(30))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import logging

        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("urllib3").addHandler(handler)
        try:
            with InferenceRESTClient(srv.http_url, config) as c:
                request = add_sub()
                expected = request.inputs[0].as_numpy() * 2

                def work() -> None:
                    try:
                        for _ in range(per_thread):
                            np.testing.assert_array_equal(c.infer(request).as_numpy("OUTPUT0"), expected)
                    except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                        failures.append(exc)

                pool = [threading.Thread(target=work) for _ in range(threads)]
                for t in pool:
                    t.start()
                for t in pool:
                    t.join(600)
                assert not any(t.is_alive() for t in pool)
                assert c._transport._pool.num_connections <= threads
        finally:
            logging.getLogger("urllib3").removeHandler(handler)
    assert not failures, failures[:3]
    assert not [w for w in caught if "pool is full" in str(w.message).lower()]
    assert not [r for r in records if "pool is full" in r.getMessage().lower()]
    assert _settled_sockets(before) <= before
    assert srv.count(route="infer") == threads * per_thread


def test_shared_client_16_threads(srv: ReferenceServer) -> None:
    _hammer(srv, 16, 500)


@pytest.mark.slow
def test_shared_client_64_threads_20000_infers(srv: ReferenceServer, request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long load test: run with -m slow")
    _hammer(srv, 64, 313)  # 20,032 infers


def test_close_releases_sockets(srv: ReferenceServer) -> None:
    gc.collect()
    before = _open_sockets()
    for _ in range(5):
        with InferenceRESTClient(srv.http_url, RESTConfig(binary_data=True)) as c:
            c.infer(add_sub())
    assert _settled_sockets(before) <= before
