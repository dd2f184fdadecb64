"""InferenceGRPCClient against the embedded reference server over real sockets (127.0.0.1)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")
GRPC_VERSION = tuple(int(part) for part in grpc.__version__.split(".")[:2])
# grpcio < 1.80 cannot open a new channel in a forked child whose parent had used gRPC (the child's channel never
# connects); inferkit's client re-creates its channel there, which needs grpcio 1.80 (docs/compatibility.md).
needs_fork_support = pytest.mark.skipif(
    GRPC_VERSION < (1, 80), reason=f"grpcio {grpc.__version__} < 1.80 cannot open a channel in a forked child"
)

from inferkit import InferInput, InferRequest, InferRequestedOutput  # noqa: E402
from inferkit.config import BearerToken, RetryPolicy  # noqa: E402
from inferkit.errors import (  # noqa: E402
    ConnectError,
    DeadlineExceeded,
    InferTimeoutError,
    InternalServerError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ReadTimeout,
    ServiceUnavailableError,
    TransportError,
    UnauthenticatedError,
)
from inferkit.grpc_client import InferenceGRPCClient  # noqa: E402
from inferkit.testing import Fault, ReferenceServer  # noqa: E402
from inferkit.testing.models import (  # noqa: E402
    add_sub_model,
    failing_model,
    failing_stream_model,
    identity_model,
    repeat_model,
    sequence_model,
    slow_model,
)
from tests.transport.cases import GRPC_IDENTITY_CASES, GRPC_RETRIES_VALUES, GRPC_RETRYABLE_CODES  # noqa: E402

FAST = RetryPolicy(max_retries=3, backoff_initial=0.01, backoff_max=0.05)


def _models():
    return [
        add_sub_model(),
        identity_model("id_fp32", "FP32"),
        identity_model("id_bytes", "BYTES"),
        identity_model("id_bf16", "BF16"),
        identity_model("id_fp16", "FP16"),
        identity_model("id_versions", "INT64", versions=("1", "2")),
        repeat_model(),
        failing_stream_model(),
        failing_model(),
        slow_model(),
        sequence_model(),
    ]


@pytest.fixture(scope="module")
def server():
    with ReferenceServer(_models(), grpc=True) as srv:
        yield srv


@pytest.fixture
def client(server):
    server.reset()
    with InferenceGRPCClient(server.grpc_url, timeout=10, retry=FAST) as c:
        yield c
    server.reset()


def _add_sub_request(request_id: str | None = None, **kwargs) -> tuple[InferRequest, np.ndarray, np.ndarray]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [
        InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a),
        InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b),
    ]
    return InferRequest("add_sub", inputs, request_id=request_id, **kwargs), a, b


def _fp32_request(n: int, model: str = "id_fp32", **kwargs) -> tuple[InferRequest, np.ndarray]:
    arr = np.arange(n, dtype=np.float32)
    return InferRequest(model, [InferInput("INPUT0", [n], "FP32").set_data_from_numpy(arr)], **kwargs), arr


# -- health and metadata ----------------------------------------------------------------------------------------


def test_health(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("add_sub") is True
    assert client.is_model_ready("id_versions", "2") is True
    assert client.is_model_ready("no_such_model") is False


def test_probes_answer_false_on_a_server_error_without_retrying(client, server):
    server.inject(Fault(route="ready", action="grpc_status", code="UNAVAILABLE", times=1))
    assert client.is_server_ready() is False
    assert server.count(route="ready") == 1
    assert client.is_server_ready() is True
    server.inject(Fault(route="model_ready", action="grpc_status", code="INTERNAL", times=1))
    assert client.is_model_ready("add_sub") is False


def test_server_metadata(client):
    meta = client.get_server_metadata()
    assert set(meta) == {"name", "version", "extensions"}
    assert {"model_configuration", "statistics", "model_repository"} <= set(meta["extensions"])
    assert client.get_server_metadata(as_message=True).name == meta["name"]


def test_model_metadata_matches_rest(client, server):
    meta = client.get_model_metadata("add_sub")
    assert meta["name"] == "add_sub"
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}
    rest = pytest.importorskip("inferkit.rest_client")
    with rest.InferenceRESTClient(server.http_url) as rc:
        expected = rc.get_model_metadata("add_sub")
    assert meta["inputs"] == expected["inputs"] and meta["outputs"] == expected["outputs"]
    assert client.get_model_metadata("id_versions", "2")["name"] == "id_versions"
    assert client.get_model_metadata("add_sub", as_message=True).platform == meta["platform"]


def test_model_config_and_statistics(client):
    config = client.get_model_config("add_sub")
    assert config["name"] == "add_sub"
    assert [i["name"] for i in config["input"]] == ["INPUT0", "INPUT1"]
    assert all(isinstance(d, int) for d in config["input"][0]["dims"])
    assert client.get_model_config("add_sub", as_message=True).config.name == "add_sub"
    req, _, _ = _add_sub_request()
    client.infer(req)
    stats = client.get_model_statistics("add_sub")
    entry = stats["model_stats"][0]
    assert entry["name"] == "add_sub" and entry["inference_count"] >= 1
    assert isinstance(entry["inference_count"], int)
    assert len(client.get_model_statistics()["model_stats"]) >= 2


def test_repository_load_unload(client):
    index = client.get_model_repository_index()
    assert "add_sub" in {m["name"] for m in index}
    req, _, _ = _add_sub_request()
    client.unload_model("add_sub")
    try:
        assert client.is_model_ready("add_sub") is False
        with pytest.raises(NotFoundError) as info:
            client.infer(req)
        assert info.value.model_name == "add_sub"
    finally:
        client.load_model("add_sub")
    assert client.is_model_ready("add_sub") is True
    client.infer(req)


def test_unknown_model_metadata_is_not_found(client):
    with pytest.raises(NotFoundError) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.model_name == "no_such_model" and info.value.grpc_code == "NOT_FOUND"


# -- inference --------------------------------------------------------------------------------------------------


def test_infer_add_sub(client):
    req, a, b = _add_sub_request("req-1")
    resp = client.infer(req)
    assert resp.id == "req-1" and resp.model_name == "add_sub"
    np.testing.assert_array_equal(resp.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(resp.as_numpy("OUTPUT1"), a - b)


def test_requested_output_subset(client):
    req, a, b = _add_sub_request(outputs=[InferRequestedOutput("OUTPUT1")])
    resp = client.infer(req)
    assert [o.name for o in resp.outputs] == ["OUTPUT1"]


@pytest.mark.parametrize(("model", "datatype", "array"), GRPC_IDENTITY_CASES)
def test_identity_datatypes(client, model, datatype, array):
    x = InferInput("INPUT0", list(array.shape), datatype).set_data_from_numpy(array)
    resp = client.infer(InferRequest(model, [x]))
    got = resp.as_numpy("OUTPUT0")
    if datatype == "BYTES":
        assert got.tolist() == array.tolist()
    else:
        np.testing.assert_array_equal(got, array)


def test_bf16(client):
    x = InferInput("INPUT0", [3], "BF16").set_data_from_numpy(np.array([1.0, -2.5, 0.15625], np.float32))
    resp = client.infer(InferRequest("id_bf16", [x]))
    np.testing.assert_array_equal(resp.as_numpy("OUTPUT0", np.float32), [1.0, -2.5, 0.15625])


def test_large_tensor_beyond_default_grpc_limit(client):
    req, arr = _fp32_request(3 << 20)  # 12 MiB each way: gRPC's default 4 MiB receive limit would fail
    resp = client.infer(req)
    out = resp.as_numpy("OUTPUT0")
    np.testing.assert_array_equal(out, arr)
    assert not out.flags.writeable  # a zero-copy view of the received bytes


def test_channel_args_merge_over_defaults(server):
    with InferenceGRPCClient(server.grpc_url, channel_args=[("grpc.keepalive_time_ms", 400_000)]) as c:
        options = dict(c._s.options)
        assert options["grpc.keepalive_time_ms"] == 400_000
        assert options["grpc.max_receive_message_length"] == -1  # kept, not dropped
        req, arr = _fp32_request(2 << 20)
        np.testing.assert_array_equal(c.infer(req).as_numpy("OUTPUT0"), arr)


def test_max_message_size_is_enforced_and_never_retried(server):
    server.reset()
    with InferenceGRPCClient(server.grpc_url, max_message_size=1 << 20, retries=3) as c:
        req, _ = _fp32_request(1 << 19)  # 2 MiB: above our own send limit
        with pytest.raises(PayloadTooLargeError, match="larger than") as info:
            c.infer(req)
        assert info.value.attempts == 1
        assert server.count(route="infer") == 0


def test_reply_larger_than_the_limit(server):
    from inferkit.errors import ResponseTooLargeError

    server.reset()
    # Sending is unlimited, receiving is capped at 1 MiB: the 2 MiB reply is refused (and not retried).
    with InferenceGRPCClient(
        server.grpc_url, retries=3, channel_args={"grpc.max_receive_message_length": 1 << 20}
    ) as c:
        with pytest.raises(ResponseTooLargeError) as info:
            c.infer(_fp32_request(1 << 19)[0])
    assert info.value.attempts == 1
    assert server.count(route="infer", model="id_fp32") == 1
    server.reset()


def test_gzip_compression(server):
    with InferenceGRPCClient(server.grpc_url, compression="gzip") as c:
        req, arr = _fp32_request(1000)
        np.testing.assert_array_equal(c.infer(req).as_numpy("OUTPUT0"), arr)


def test_parameters_reach_the_model(client):
    seq = 4242
    for value, start, end, expected in ((3, True, False, 3), (4, False, True, 7)):
        x = InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([value], np.int32))
        resp = client.infer(InferRequest("sequence", [x], sequence_id=seq, sequence_start=start, sequence_end=end))
        assert resp.as_numpy("OUTPUT").reshape(-1)[0] == expected


# -- errors ----------------------------------------------------------------------------------------------------


def test_invalid_input_is_typed(client):
    x = InferInput("INPUT0", [1, 3], "INT32").set_data_from_numpy(np.zeros((1, 3), np.int32))
    y = InferInput("INPUT1", [1, 3], "INT32").set_data_from_numpy(np.zeros((1, 3), np.int32))
    with pytest.raises(InvalidInputError) as info:
        client.infer(InferRequest("add_sub", [x, y], request_id="bad-1"))
    err = info.value
    assert (err.model_name, err.request_id, err.grpc_code, err.status_code) == (
        "add_sub",
        "bad-1",
        "INVALID_ARGUMENT",
        400,
    )


def test_model_failure_is_internal(client, server):
    req, _ = _fp32_request(4, "fail")
    with pytest.raises(InternalServerError, match="planned failure"):
        client.infer(req)
    assert server.count(route="infer", model="fail") == 1  # INTERNAL is not retried


def test_connection_refused_is_connect_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with InferenceGRPCClient(
        f"127.0.0.1:{port}", timeout=5, retry=RetryPolicy(max_retries=1, backoff_initial=0.01)
    ) as c:
        with pytest.raises(ConnectError) as info:
            c.is_server_live()
    assert isinstance(info.value, ConnectionError)
    assert info.value.attempts == 2


def test_closed_client_raises(server):
    c = InferenceGRPCClient(server.grpc_url)
    c.close()
    c.close()
    with pytest.raises(TransportError, match="closed"):
        c.is_server_live()


def test_http_url_is_rejected():
    with pytest.raises(ValueError, match="InferenceRESTClient"):
        InferenceGRPCClient("http://127.0.0.1:8000")


# -- retries ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", GRPC_RETRYABLE_CODES)
@pytest.mark.parametrize("times", [1, 2])
def test_retryable_codes_are_retried_and_counted(client, server, code, times):
    server.inject(Fault(route="infer", model="add_sub", action="grpc_status", code=code, times=times))
    req, a, b = _add_sub_request()
    np.testing.assert_array_equal(client.infer(req).as_numpy("OUTPUT0"), a + b)
    assert server.count(route="infer", model="add_sub") == times + 1


@pytest.mark.parametrize("retries", GRPC_RETRIES_VALUES)
def test_every_retries_value_gives_exactly_that_many_retries(server, retries):
    server.reset()
    server.inject(Fault(route="infer", model="add_sub", action="grpc_status", code="UNAVAILABLE", times=None))
    policy = RetryPolicy(max_retries=retries, backoff_initial=0.001, backoff_max=0.005)
    with InferenceGRPCClient(server.grpc_url, retry=policy, timeout=10) as c:
        req, _, _ = _add_sub_request("r")
        with pytest.raises(ServiceUnavailableError) as info:
            c.infer(req)
    assert info.value.attempts == retries + 1
    assert server.count(route="infer", model="add_sub") == retries + 1
    server.reset()


def test_retries_shorthand_builds_the_policy(server):
    with InferenceGRPCClient(server.grpc_url, retries=5) as c:
        assert c.retry_policy.max_retries == 5
    with pytest.raises(ValueError):
        InferenceGRPCClient(server.grpc_url, retries=-1)


def test_large_request_is_retried_by_the_client(client, server):
    # Above gRPC's 256 KiB retry buffer, which gRPC itself would never retry.
    server.inject(Fault(route="infer", model="id_fp32", action="grpc_status", code="UNAVAILABLE", times=2))
    req, arr = _fp32_request(1 << 18)  # 1 MiB
    np.testing.assert_array_equal(client.infer(req).as_numpy("OUTPUT0"), arr)
    assert server.count(route="infer", model="id_fp32") == 3


def test_large_request_path_retries_and_rebuilds(client, server, monkeypatch):
    import inferkit.codec.grpc_calls as common

    monkeypatch.setattr(common, "LARGE_REQUEST_BYTES", 1024)  # send from an iterator; rebuild the bytes per attempt
    server.inject(Fault(route="infer", model="id_fp32", action="grpc_status", code="UNAVAILABLE", times=2))
    req, arr = _fp32_request(1 << 16)
    np.testing.assert_array_equal(client.infer(req).as_numpy("OUTPUT0"), arr)
    assert server.count(route="infer", model="id_fp32") == 3
    with pytest.raises(NotFoundError):
        client.infer(_fp32_request(1 << 16, "no_such_model")[0])


def test_sequence_request_is_never_retried(client, server):
    server.inject(Fault(route="infer", model="sequence", action="grpc_status", code="UNAVAILABLE", times=1))
    x = InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([1], np.int32))
    req = InferRequest("sequence", [x], sequence_id=99, sequence_start=True)
    with pytest.raises(ServiceUnavailableError) as info:
        client.infer(req)
    assert info.value.attempts == 1
    assert server.count(route="infer", model="sequence") == 1


def test_invalid_argument_is_not_retried(client, server):
    server.inject(Fault(route="infer", model="add_sub", action="grpc_status", code="INVALID_ARGUMENT", times=3))
    req, _, _ = _add_sub_request()
    with pytest.raises(InvalidInputError):
        client.infer(req)
    assert server.count(route="infer", model="add_sub") == 1


def record_backoff(monkeypatch, waits: list[float]) -> None:
    """Backoff sleeps of the sync driver are recorded instead of slept."""
    import types

    import inferkit._transport.driver as driver

    monkeypatch.setattr(driver, "time", types.SimpleNamespace(sleep=waits.append, monotonic=time.monotonic))


def test_retry_after_from_the_server_is_honoured(client, server, monkeypatch):
    waits: list[float] = []
    record_backoff(monkeypatch, waits)
    server.inject(Fault(route="infer", model="add_sub", action="status", status=429, retry_after=0.3, times=1))
    req, _, _ = _add_sub_request()
    client.infer(req)
    assert waits == [pytest.approx(0.3)]  # the server's pushback, not the policy's 0.01 s backoff
    assert server.count(route="infer", model="add_sub") == 2


def test_backoff_follows_the_policy(server, monkeypatch):
    waits: list[float] = []
    record_backoff(monkeypatch, waits)
    server.reset()
    server.inject(Fault(route="infer", model="add_sub", action="grpc_status", code="UNAVAILABLE", times=3))
    policy = RetryPolicy(max_retries=3, backoff_initial=0.1, backoff_multiplier=2, jitter=0)
    with InferenceGRPCClient(server.grpc_url, retry=policy) as c:
        c.infer(_add_sub_request()[0])
    assert waits == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.4)]
    server.reset()


def test_rate_limited_without_retries(server):
    server.reset()
    server.inject(Fault(route="infer", model="add_sub", action="status", status=429, retry_after=2.0, times=1))
    with InferenceGRPCClient(server.grpc_url, retries=0) as c:
        req, _, _ = _add_sub_request()
        with pytest.raises(RateLimitedError) as info:
            c.infer(req)
    assert info.value.retry_after == pytest.approx(2.0)
    server.reset()


def test_dropped_connection_is_retried(client, server):
    server.inject(Fault(route="infer", model="add_sub", action="drop_before", times=1))
    req, _, _ = _add_sub_request()
    client.infer(req)
    assert server.count(route="infer", model="add_sub") == 2


def test_metadata_calls_are_retried(client, server):
    server.inject(Fault(route="model_metadata", action="grpc_status", code="UNAVAILABLE", times=2))
    assert client.get_model_metadata("add_sub")["name"] == "add_sub"
    assert server.count(route="model_metadata") == 3


# -- deadlines -------------------------------------------------------------------------------------------------


def test_deadline_per_call(client):
    req, _ = _fp32_request(4, "slow", parameters={"sleep": 2.0})
    with pytest.raises(ReadTimeout) as info:
        client.infer(req, timeout=0.2)
    assert isinstance(info.value, TimeoutError) and info.value.grpc_code == "DEADLINE_EXCEEDED"


def test_client_default_timeout(server):
    with InferenceGRPCClient(server.grpc_url, timeout=0.2, retries=0) as c:
        req, _ = _fp32_request(4, "slow", parameters={"sleep": 2.0})
        with pytest.raises(ReadTimeout):
            c.infer(req)


def test_deadline_spans_retries(server):
    server.reset()
    server.inject(Fault(route="infer", model="add_sub", action="delay", seconds=0.3, times=None))
    policy = RetryPolicy(max_retries=10, backoff_initial=0.01)
    with InferenceGRPCClient(server.grpc_url, retry=policy, timeout=0.5) as c:
        req, _, _ = _add_sub_request()
        with pytest.raises(InferTimeoutError) as info:
            c.infer(req, timeout=0.2)
    assert isinstance(info.value, (ReadTimeout, DeadlineExceeded))
    assert server.count(route="infer", model="add_sub") <= 3
    server.reset()


# -- headers, auth, logging ---------------------------------------------------------------------------------


def test_auth_metadata():
    with ReferenceServer([add_sub_model()], auth=("Authorization", "Bearer s3cret")) as srv:
        req, _, _ = _add_sub_request()
        with InferenceGRPCClient(srv.grpc_url, retries=0) as c:
            with pytest.raises(UnauthenticatedError):
                c.infer(req)
            headers = {"Authorization": "Bearer s3cret"}
            c.infer(req, headers=headers)
            assert headers == {"Authorization": "Bearer s3cret"}  # the caller's dict is left alone
        with InferenceGRPCClient(srv.grpc_url, auth=BearerToken("s3cret")) as c:
            assert c.is_model_ready("add_sub")
            c.infer(req)
        with InferenceGRPCClient(srv.grpc_url, metadata={"authorization": "Bearer s3cret"}) as c:
            c.infer(req)


def test_verbose_logging_redacts_credentials(server, caplog):
    with InferenceGRPCClient(server.grpc_url, verbose=True, auth=BearerToken("topsecret")) as c:
        with caplog.at_level(logging.INFO, logger="inferkit"):
            c.is_server_live()
    text = caplog.text
    assert "ServerLive" in text and "OK" in text
    assert "topsecret" not in text and "***" in text


# -- TLS -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def _server_tls(ca, mtls: bool):
    from inferkit.testing import ServerTLS

    cert = ca.issue_cert("127.0.0.1", "localhost")
    return ServerTLS(
        cert_pem=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        key_pem=cert.private_key_pem.bytes(),
        client_ca_pem=ca.cert_pem.bytes() if mtls else None,
    )


def test_tls(ca, tmp_path):
    with ReferenceServer([add_sub_model()], rest=False, tls=_server_tls(ca, mtls=False)) as srv:
        assert srv.grpc_url.startswith("grpcs://")
        req, a, b = _add_sub_request()
        with InferenceGRPCClient(srv.grpc_url, root_certificates=ca.cert_pem.bytes()) as c:
            np.testing.assert_array_equal(c.infer(req).as_numpy("OUTPUT0"), a + b)
        path = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(path))
        with InferenceGRPCClient(srv.grpc_address, use_ssl=True, root_certificates=str(path)) as c:
            assert c.is_server_live()
        with InferenceGRPCClient(srv.grpc_url, timeout=5, retries=0) as c:  # system roots: not trusted
            with pytest.raises(ConnectError):
                c.is_server_live()


def test_mtls(ca):
    client_cert = ca.issue_cert("client@example")
    with ReferenceServer([add_sub_model()], rest=False, tls=_server_tls(ca, mtls=True)) as srv:
        with InferenceGRPCClient(
            srv.grpc_url,
            root_certificates=ca.cert_pem.bytes(),
            private_key=client_cert.private_key_pem.bytes(),
            certificate_chain=client_cert.cert_chain_pems[0].bytes(),
        ) as c:
            assert c.is_server_live()
        with InferenceGRPCClient(srv.grpc_url, root_certificates=ca.cert_pem.bytes(), timeout=5, retries=0) as c:
            with pytest.raises(ConnectError):  # no client certificate: the handshake is refused
                c.is_server_live()
        import grpc

        creds = grpc.ssl_channel_credentials(
            ca.cert_pem.bytes(), client_cert.private_key_pem.bytes(), client_cert.cert_chain_pems[0].bytes()
        )
        with InferenceGRPCClient(srv.grpc_url, creds=creds) as c:
            assert c.is_server_ready()


class _FakeCall:
    def __init__(self, code: str, details: str, debug: str = "") -> None:
        self._code, self._details, self._debug = code, details, debug

    def code(self):
        import grpc

        return getattr(grpc.StatusCode, self._code)

    def details(self):
        return self._details

    def debug_error_string(self):
        return self._debug

    def trailing_metadata(self):
        return (("retry-after", "1.5"),)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (_FakeCall("UNAVAILABLE", "failed to connect to all addresses; last error: Ssl handshake failed"), "TLSError"),
        (_FakeCall("UNAVAILABLE", "failed to connect to all addresses; Connection refused"), "ConnectError"),
        (_FakeCall("UNAVAILABLE", "Socket closed"), "ConnectError"),
        (_FakeCall("UNAVAILABLE", "model is loading"), "ServiceUnavailableError"),
        (_FakeCall("RESOURCE_EXHAUSTED", "Sent message larger than max (9 vs. 1)"), "PayloadTooLargeError"),
        (
            _FakeCall(
                "RESOURCE_EXHAUSTED",
                "Received message larger than max (9 vs. 1)",
                "UNKNOWN:Error received from peer ipv4:127.0.0.1:1 {grpc_status:8}",
            ),
            "PayloadTooLargeError",
        ),
        (
            _FakeCall("RESOURCE_EXHAUSTED", "Received message larger than max (9 vs. 1)", "CLIENT: Received"),
            "ResponseTooLargeError",
        ),
        (_FakeCall("RESOURCE_EXHAUSTED", "quota"), "RateLimitedError"),
        (_FakeCall("DEADLINE_EXCEEDED", "Deadline Exceeded"), "ReadTimeout"),
        (_FakeCall("UNIMPLEMENTED", "no such method"), "UnimplementedError"),
        (_FakeCall("CANCELLED", "cancelled"), "CancelledError"),
    ],
)
def test_rpc_error_mapping(call, expected):
    from inferkit.grpc_client import map_rpc_error

    err = map_rpc_error(call, model_name="m", request_id="r", attempts=2)
    assert type(err).__name__ == expected
    assert (err.model_name, err.request_id, err.attempts) == ("m", "r", 2)
    if expected == "RateLimitedError":
        assert err.retry_after == 1.5


# -- streaming --------------------------------------------------------------------------------------------------


def _repeat_request(values, request_id=None, **params):
    arr = np.asarray(values, dtype=np.int32)
    x = InferInput("IN", [arr.size], "INT32").set_data_from_numpy(arr)
    return InferRequest("repeat", [x], request_id=request_id, parameters=params or None)


def test_stream_several_responses_per_request(client):
    with client.stream(timeout=10) as stream:
        stream.send(_repeat_request([10, 20, 30], "a"))
        stream.send(_repeat_request([7, 8], "b"))
        stream.close_send()
        got = [(r.id, int(r.as_numpy("OUT")[0]), int(r.as_numpy("IDX")[0])) for r in stream]
    assert sorted(x for x in got if x[0] == "a") == [("a", 10, 0), ("a", 20, 1), ("a", 30, 2)]
    assert sorted(x for x in got if x[0] == "b") == [("b", 7, 0), ("b", 8, 1)]


def test_stream_infer_iterable(client, server):
    requests = [_repeat_request([i, i + 1], f"r{i}") for i in range(5)]
    responses = list(client.stream_infer(requests, timeout=10))
    assert len(responses) == 10
    assert server.count(route="stream_infer") >= 1


def test_stream_fails_mid_stream_with_typed_error(client):
    x = InferInput("IN", [2], "INT32").set_data_from_numpy(np.array([1, 2], np.int32))
    with client.stream(timeout=10) as stream:
        stream.send(InferRequest("fail_mid_stream", [x], request_id="f1"))
        stream.close_send()
        first, second = next(stream), next(stream)
        assert first.as_numpy("OUT").tolist() == [1, 2] and second.id == "f1"
        with pytest.raises(InternalServerError, match="planned failure") as info:
            next(stream)
        assert info.value.model_name == "fail_mid_stream"
        assert list(stream) == []  # the stream ends cleanly after the error


def test_stream_results_mix_responses_and_errors(client):
    x = InferInput("IN", [1], "INT32").set_data_from_numpy(np.array([5], np.int32))
    with client.stream(timeout=10) as stream:
        stream.send(InferRequest("fail_mid_stream", [x], parameters={"fail_after": 1}))
        stream.send(_repeat_request([1, 2]))
        stream.close_send()
        items = list(stream.results())
    kinds = sorted(type(i).__name__ for i in items)
    assert kinds == ["InferResponse", "InferResponse", "InferResponse", "InternalServerError"]


def test_stream_unknown_model(client):
    x = InferInput("IN", [1], "INT32").set_data_from_numpy(np.array([5], np.int32))
    with client.stream(timeout=10) as stream:
        stream.send(InferRequest("no_such_model", [x]))
        stream.close_send()
        with pytest.raises(NotFoundError):
            list(stream)


def test_stream_deadline_never_hangs(client):
    with client.stream(timeout=0.5) as stream:
        stream.send(_repeat_request([1, 2, 3], delay=5.0))
        with pytest.raises(ReadTimeout):
            list(stream)


def test_stream_recv_timeout_and_cancel(client):
    with client.stream(timeout=10) as stream:
        stream.send(_repeat_request([1, 2, 3], delay=5.0))
        with pytest.raises(ReadTimeout):
            stream.recv(timeout=0.2)
        stream.cancel()
        assert list(stream) == []
        with pytest.raises(TransportError):
            stream.send(_repeat_request([1]))


def test_stream_early_exit_cancels(client):
    gen = client.stream_infer([_repeat_request([1] * 50, delay=0.05)], timeout=10)
    assert next(gen).as_numpy("OUT")[0] == 1
    gen.close()  # must not hang


def test_stream_send_from_another_thread(client):
    with client.stream(timeout=10) as stream:

        def producer() -> None:
            for i in range(5):
                stream.send(_repeat_request([i], f"t{i}"))
            stream.close_send()

        thread = threading.Thread(target=producer)
        thread.start()
        ids = sorted(r.id for r in stream)
        thread.join(10)
    assert ids == [f"t{i}" for i in range(5)]


# -- channel ---------------------------------------------------------------------------------------------------


def test_properties(server):
    with InferenceGRPCClient(server.grpc_url, metadata={"X-Team": "a"}) as c:
        assert c.host == server.grpc_address
        assert c.metadata == (("x-team", "a"),)
        assert c.channel is not None


def test_reconnects_after_server_restart():
    srv = ReferenceServer([add_sub_model()], rest=False).start()
    port = srv.grpc_port
    req, a, b = _add_sub_request()
    try:
        with InferenceGRPCClient(srv.grpc_url, retries=0, timeout=5) as c:
            c.infer(req)
            srv.stop()
            with pytest.raises(ConnectError):
                c.infer(req)
            srv = ReferenceServer([add_sub_model()], rest=False, grpc_port=port).start()
            policy = RetryPolicy(max_retries=20, backoff_initial=0.2, backoff_max=0.5)
            with InferenceGRPCClient(srv.grpc_url, retry=policy, timeout=30) as c2:
                c2.is_server_live()
            # The first client finds the server again by itself (its reconnect backoff is bounded).
            for _ in range(60):
                try:
                    np.testing.assert_array_equal(c.infer(req).as_numpy("OUTPUT0"), a + b)
                    break
                except ConnectError:
                    import time

                    time.sleep(0.25)
            else:
                pytest.fail("the client did not reconnect within 15 s")
    finally:
        srv.stop()


# -- threads and fork --------------------------------------------------------------------------------------------


def test_threads_share_one_client(client):
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(200):
                a = np.full((1, 16), seed * 1000 + i, np.int32)
                b = np.ones((1, 16), np.int32)
                req = InferRequest(
                    "add_sub",
                    [
                        InferInput("INPUT0", [1, 16], "INT32").set_data_from_numpy(a),
                        InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(b),
                    ],
                    request_id=f"{seed}-{i}",
                )
                resp = client.infer(req)
                assert resp.id == f"{seed}-{i}"
                assert int(resp.as_numpy("OUTPUT0")[0, 0]) == seed * 1000 + i + 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_channel_pool_takes_channels_in_turn_and_closes_them_all(server):
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        InferenceGRPCClient(server.grpc_url, channels=0)
    client = InferenceGRPCClient(server.grpc_url, timeout=10, retry=FAST, channels=3)
    channels = list(client._transport._channels)
    assert len({id(c) for c in channels}) == 3 and client.channel is channels[0]
    req, a, b = _add_sub_request()
    for _ in range(6):
        assert (client.infer(req).as_numpy("OUTPUT0") == a + b).all()
    # every channel carried calls, each on its own connection (READY = 2 in grpc-core)
    assert [c._channel.check_connectivity_state(False) for c in channels] == [2, 2, 2]
    assert client._transport.channel_state() == "READY"
    assert [r.as_numpy("OUTPUT0")[0, 0] for r in client.stream_infer([req] * 3)] == [(a + b)[0, 0]] * 3
    client.close()
    with pytest.raises(TransportError, match="closed"):
        client.infer(req)
    for c in channels:
        with pytest.raises(ValueError):
            c.unary_unary("/x")(b"")  # closed: grpcio refuses new calls


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@needs_fork_support
@pytest.mark.parametrize("channels", [1, 3])
def test_usable_after_fork(server, channels):
    client = InferenceGRPCClient(server.grpc_url, timeout=10, retry=FAST, channels=channels)
    req, a, b = _add_sub_request()
    client.infer(req)  # the parent's channel is connected
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 1
        try:
            resp = client.infer(req, timeout=10)
            os.write(write_fd, b"ok" if (resp.as_numpy("OUTPUT0") == a + b).all() else b"bad")
            status = 0
        except BaseException as exc:  # noqa: BLE001
            os.write(write_fd, repr(exc).encode()[:200])
        finally:
            os._exit(status)
    os.close(write_fd)
    import select

    ready, _, _ = select.select([read_fd], [], [], 30)
    message = os.read(read_fd, 256) if ready else b"timeout"
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert message == b"ok"
    client.infer(req)  # the parent still works
    client.close()


# -- packaging -------------------------------------------------------------------------------------------------


def test_import_without_grpc():
    code = (
        "import sys\n"
        "sys.modules['grpc'] = None\n"
        "import inferkit.grpc_client as m\n"
        "from inferkit import InferenceGRPCClient\n"
        "try:\n"
        "    InferenceGRPCClient('localhost:1')\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "IMPORTERROR" in out.stdout and "pip install 'inferkit[grpc]'" in out.stdout, out.stderr


@pytest.mark.slow
def test_threads_64_by_20000(client):
    req, a, b = _add_sub_request()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20_000):
                client.infer(req)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3600)
    assert errors == []
