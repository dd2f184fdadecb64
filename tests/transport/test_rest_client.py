"""InferenceRESTClient against the reference server: every method, both protocols, versions, base paths,
binary auto-detection, headers, caller dicts untouched, typed errors, logging, the factory."""

from __future__ import annotations

import copy
import http.server
import logging
import threading
import urllib.request
from typing import Any, Iterator

import numpy as np
import pytest

from inferkit import InferInput, InferRequest, InferRequestedOutput, RESTConfig, errors
from inferkit.factory import InferenceClientFactory
from inferkit.rest_client import InferenceRESTClient
from inferkit.testing import Fault, ReferenceServer
from inferkit.testing.models import add_sub_model, identity_model, iris_model, sequence_model, standard_models
from tests.transport.cases import MALFORMED_REPLY_FAULTS, REST_CALLS, Call, add_sub_request


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


@pytest.fixture
def client(srv: ReferenceServer) -> Iterator[InferenceRESTClient]:
    with InferenceRESTClient(srv.http_url) as c:
        yield c


# -- health, metadata, management ------------------------------------------------------------------------------
def test_health_and_readiness(client: InferenceRESTClient, srv: ReferenceServer) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("add_sub") is True
    assert client.is_model_ready("multi", "2") is True
    assert client.is_model_ready("no_such_model") is False
    assert client.is_model_ready("multi", "7") is False
    assert srv.count(route="live") == 1 and srv.count(route="ready") == 1


@pytest.mark.parametrize("call", REST_CALLS, ids=lambda c: c.id)
def test_call_table(client: InferenceRESTClient, call: Call) -> None:
    method = getattr(client, call.method)
    if isinstance(call.check, type):
        with pytest.raises(call.check):
            method(*call.args)
    else:
        assert call.check(method(*call.args))


def test_readiness_status_is_the_answer_and_is_not_retried(client: InferenceRESTClient, srv: ReferenceServer) -> None:
    srv.inject(Fault(route="ready", action="status", status=503, times=1))
    assert client.is_server_ready() is False
    assert srv.count(route="ready") == 1


def test_metadata_calls(client: InferenceRESTClient) -> None:
    meta = client.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("add_sub")
    assert model["name"] == "add_sub" and [i["name"] for i in model["inputs"]] == ["INPUT0", "INPUT1"]
    assert client.get_model_metadata("multi", "2")["name"] == "multi"
    config = client.get_model_config("add_sub")
    assert config["name"] == "add_sub" and config["input"][0]["data_type"] == "TYPE_INT32"
    assert client.get_model_config("multi", model_version="1")["name"] == "multi"
    client.infer(add_sub_request()[0])
    stats = client.get_model_statistics("add_sub")
    assert stats["model_stats"][0]["inference_count"] >= 1
    everything = client.get_model_statistics()
    assert {s["name"] for s in everything["model_stats"]} >= {"add_sub", "multi"}
    assert client.get_model_statistics("multi", "2")["model_stats"][0]["version"] == "2"


def test_repository_index_load_unload(client: InferenceRESTClient, srv: ReferenceServer) -> None:
    index = client.get_model_repository_index()
    assert any(entry["name"] == "add_sub" for entry in index)
    client.unload_model("add_sub")
    try:
        assert client.is_model_ready("add_sub") is False
        with pytest.raises(errors.NotFoundError):
            client.infer(add_sub_request()[0])
    finally:
        client.load_model("add_sub")
    assert client.is_model_ready("add_sub") is True
    assert srv.count(route="repository_unload") == 1 and srv.count(route="repository_load") == 1


# -- inference ---------------------------------------------------------------------------------------------------
def test_infer_binary_autodetected_once(srv: ReferenceServer) -> None:
    with InferenceRESTClient(srv.http_url) as c:
        for _ in range(3):
            request, a, b = add_sub_request()
            response = c.infer(request)
            np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
            np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
    assert srv.count(route="server_metadata") == 1
    assert srv.count(route="infer", model="add_sub") == 3


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_or_json_forced(srv: ReferenceServer, binary: bool) -> None:
    with InferenceRESTClient(srv.http_url, RESTConfig(binary_data=binary)) as c:
        request, a, b = add_sub_request(request_id="r-1", outputs=[InferRequestedOutput("OUTPUT1")])
        response = c.infer(request)
        assert response.id == "r-1"
        assert [o.name for o in response.outputs] == ["OUTPUT1"]
        np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
    assert srv.count(route="server_metadata") == 0


def test_binary_detection_falls_back_to_json_when_metadata_fails(srv: ReferenceServer) -> None:
    srv.inject(Fault(route="server_metadata", action="status", status=404, times=1))
    with InferenceRESTClient(srv.http_url) as c:
        request, a, b = add_sub_request()
        np.testing.assert_array_equal(c.infer(request).as_numpy("OUTPUT0"), a + b)
        assert c._calls.binary is False  # decided (JSON works everywhere) and not asked again
        c.infer(request)
    assert srv.count(route="server_metadata") == 1


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_binary_detection_is_retried_when_server_unreachable_at_first() -> None:
    c = InferenceRESTClient(f"http://127.0.0.1:{closed_port()}", RESTConfig(retries=0, timeout=2))
    with pytest.raises(errors.ConnectError):
        c.infer(add_sub_request()[0])
    assert c._calls.binary is None
    c.close()


def test_infer_model_version_and_many_datatypes(client: InferenceRESTClient, srv: ReferenceServer) -> None:
    x = InferInput("INPUT0", [3], "INT32").set_data_from_numpy(np.array([1, 2, 3], dtype=np.int32))
    response = client.infer(InferRequest("multi", [x], model_version="2"))
    assert response.model_version == "2"
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), [1, 2, 3])
    strings = np.array([b"a", "ünï".encode(), b""], dtype=object)
    xb = InferInput("INPUT0", [3], "BYTES").set_data_from_numpy(strings)
    np.testing.assert_array_equal(client.infer(InferRequest("identity_bytes", [xb])).as_numpy("OUTPUT0"), strings)
    f16 = np.array([0.5, -2.0], dtype=np.float16)
    xf = InferInput("INPUT0", [2], "FP16").set_data_from_numpy(f16)
    np.testing.assert_array_equal(client.infer(InferRequest("identity_fp16", [xf])).as_numpy("OUTPUT0"), f16)


def test_sequence_requests_work(client: InferenceRESTClient) -> None:
    def step(value: int, **params: Any) -> int:
        x = InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([value], dtype=np.int32))
        response = client.infer(InferRequest("sequence", [x], sequence_id=42, **params))
        return int(response.as_numpy("OUTPUT")[0])

    assert step(5, sequence_start=True) == 5
    assert step(7) == 12
    assert step(1, sequence_end=True) == 13


def test_infer_errors_are_typed(client: InferenceRESTClient) -> None:
    with pytest.raises(errors.NotFoundError) as info:
        client.infer(add_sub_request("no_such_model")[0])
    assert info.value.status_code == 404 and info.value.model_name == "no_such_model"
    x = InferInput("INPUT0", [1, 3], "INT32").set_data_from_numpy(np.zeros((1, 3), dtype=np.int32))
    y = InferInput("INPUT1", [1, 3], "INT32").set_data_from_numpy(np.zeros((1, 3), dtype=np.int32))
    with pytest.raises(errors.InvalidInputError) as bad:
        client.infer(InferRequest("add_sub", [x, y], request_id="bad-1"))
    assert bad.value.status_code == 400 and bad.value.request_id == "bad-1" and bad.value.attempts == 1
    assert "add_sub" in str(bad.value)
    with pytest.raises(errors.InternalServerError):
        client.infer(InferRequest("fail", [InferInput("INPUT0", [1], "FP32").set_data_from_numpy(np.ones(1, "f4"))]))
    with pytest.raises(TypeError, match="takes one InferRequest"):
        client.infer({"model_name": "add_sub"})  # type: ignore[arg-type]


@pytest.mark.parametrize(("fault", "error"), MALFORMED_REPLY_FAULTS)
def test_malformed_replies_raise_decode_error(srv: ReferenceServer, fault: Fault, error: type) -> None:
    with InferenceRESTClient(srv.http_url, RESTConfig(binary_data=True)) as c:
        srv.inject(fault)
        with pytest.raises(error):
            c.infer(add_sub_request()[0])
        c.infer(add_sub_request()[0])  # the connection pool is still healthy


def test_caller_dicts_and_request_are_not_mutated(srv: ReferenceServer) -> None:
    config_headers = {"X-Team": "vision"}
    call_headers = {"X-Call": "1", "x-team": "override"}
    snapshot = copy.deepcopy(call_headers)
    with InferenceRESTClient(srv.http_url, RESTConfig(headers=config_headers)) as c:
        request, _, _ = add_sub_request(parameters={"tag": "t"}, priority=1)
        params_before = dict(request.parameters)
        c.infer(request, headers=call_headers)
        c.get_server_metadata(headers=call_headers)
        assert call_headers == snapshot
        assert config_headers == {"X-Team": "vision"}
        assert request.parameters == params_before


def test_per_call_headers_override_config(srv: ReferenceServer) -> None:
    with ReferenceServer([add_sub_model()], grpc=False, auth=("X-Token", "good")) as guarded:
        with InferenceRESTClient(guarded.http_url, RESTConfig(headers={"X-Token": "bad"}, binary_data=True)) as c:
            with pytest.raises(errors.UnauthenticatedError):
                c.infer(add_sub_request()[0])
            c.infer(add_sub_request()[0], headers={"x-token": "good"})
    with InferenceRESTClient(srv.http_url) as c:
        with pytest.raises(errors.EncodeError):
            c.get_server_metadata(headers={"X-Bad": "a\r\nInjected: 1"})


# -- v1 ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def v1_server() -> Iterator[ReferenceServer]:
    with ReferenceServer([iris_model(), add_sub_model(), sequence_model()], grpc=False) as srv:
        yield srv


def test_v1_protocol(v1_server: ReferenceServer) -> None:
    with InferenceRESTClient(v1_server.http_url, RESTConfig(protocol="v1")) as c:
        assert c.protocol_version == "v1"
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("iris") is True
        assert c.is_model_ready("nope") is False
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        prediction = c.predict("iris", instances=rows)
        assert len(prediction["predictions"]) == 2
        explanation = c.explain("iris", instances=rows)
        assert explanation is not None
        x = InferInput("input", [2, 4], "FP32").set_data_from_numpy(np.array(rows, dtype=np.float32))
        response = c.infer(InferRequest("iris", [x]))
        assert response.outputs and response.outputs[0].as_numpy().shape[0] == 2
        with pytest.raises(errors.NotFoundError):
            c.predict("nope", instances=rows)
        for call in (c.get_server_metadata, c.get_model_repository_index):
            with pytest.raises(errors.UnsupportedOperationError):
                call()
        with pytest.raises(errors.UnsupportedOperationError):
            c.get_model_config("iris")
    with InferenceRESTClient(v1_server.http_url) as v2_client:
        with pytest.raises(errors.UnsupportedOperationError):
            v2_client.explain("iris", instances=[[1, 2, 3, 4]])
        with pytest.raises(errors.UnsupportedOperationError):
            v2_client.predict("iris", instances=[[1, 2, 3, 4]])


# -- URLs, base paths, properties -----------------------------------------------------------------------------------
class _PrefixProxy:
    """A tiny reverse proxy: strips ``prefix`` from the path and forwards to the reference server."""

    def __init__(self, upstream: str, prefix: str) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                outer.paths.append(self.path)
                if not self.path.startswith(prefix + "/"):
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                req = urllib.request.Request(
                    upstream + self.path[len(prefix) :], data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        status, reply_headers, data = resp.status, resp.headers, resp.read()
                except urllib.error.HTTPError as exc:
                    status, reply_headers, data = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for key, value in reply_headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{prefix}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_base_path_in_url(srv: ReferenceServer) -> None:
    proxy = _PrefixProxy(srv.http_url, "/serving/m1")
    try:
        with InferenceRESTClient(proxy.url + "/") as c:
            assert c.host == proxy.url
            assert c.is_server_ready()
            request, a, b = add_sub_request()
            np.testing.assert_array_equal(c.infer(request).as_numpy("OUTPUT0"), a + b)
            assert c.get_model_metadata("multi", "1")["name"] == "multi"
        assert all(p.startswith("/serving/m1/v2") for p in proxy.paths)
        assert "/serving/m1/v2/models/multi/versions/1" in proxy.paths
    finally:
        proxy.close()


def test_properties_and_url_validation(srv: ReferenceServer) -> None:
    config = RESTConfig(retries=1)
    with InferenceRESTClient(srv.http_url, config) as c:
        assert c.config is config
        assert c.host == srv.http_url
        assert c.protocol_version == "v2"
        assert "InferenceRESTClient" in repr(c)
    host_port = srv.http_url.split("://", 1)[1]
    with InferenceRESTClient(host_port) as c:  # scheme-less, as tritonclient accepts it
        assert c.is_server_live()
    for bad in ("ftp://x", "http://", "", "http://h:1/?q=1"):
        with pytest.raises(ValueError):
            InferenceRESTClient(bad)
    with pytest.raises(ValueError):
        InferenceRESTClient(srv.http_url, config={"retries": 1})  # type: ignore[arg-type]


def test_verbose_logging_redacts_credentials(srv: ReferenceServer, caplog: pytest.LogCaptureFixture) -> None:
    from inferkit.config import BearerToken

    caplog.set_level(logging.INFO, logger="inferkit")
    with InferenceRESTClient(srv.http_url, RESTConfig(verbose=True, auth=BearerToken("s3cret"))) as c:
        c.is_server_live(headers={"X-API-Key": "k3y"})
    text = caplog.text
    assert "GET " in text and "/v2/health/live" in text and "200" in text
    assert "s3cret" not in text and "k3y" not in text and "***" in text


# -- factory -------------------------------------------------------------------------------------------------------
def test_factory_returns_a_client_per_url(srv: ReferenceServer) -> None:
    other = ReferenceServer([add_sub_model()], grpc=False).start()
    try:
        first = InferenceClientFactory.get_inference_client(srv.http_url)
        second = InferenceClientFactory().get_inference_client(other.http_url, config=RESTConfig(retries=0))
        assert isinstance(first, InferenceRESTClient) and isinstance(second, InferenceRESTClient)
        assert first is not second
        assert first.host == srv.http_url and second.host == other.http_url
        assert second.config.retries == 0
        first.is_server_live()
        second.is_server_live()
        assert other.count(route="live") == 1
        first.close()
        second.close()
    finally:
        other.stop()


@pytest.mark.parametrize("url", ["ftp://h:1", "htp://h:1", "", "unix:///tmp/x"])  # "h:1" means http://h:1
def test_factory_rejects_unknown_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="http|scheme|URL"):
        InferenceClientFactory.get_inference_client(url)


def test_factory_option_mixups_are_errors() -> None:
    with pytest.raises(ValueError, match="gRPC"):
        InferenceClientFactory.get_inference_client("http://h:1", timeout=3)
    with pytest.raises(ValueError, match="REST"):
        InferenceClientFactory.get_inference_client("grpc://h:1", config=RESTConfig())


def test_factory_grpc_is_lazy_and_per_url() -> None:
    pytest.importorskip("grpc")
    try:
        from inferkit.grpc_client import InferenceGRPCClient
    except ImportError:
        pytest.skip("gRPC client not available yet")
    a = InferenceClientFactory.get_inference_client("grpc://127.0.0.1:1")
    b = InferenceClientFactory.get_inference_client("grpcs://127.0.0.1:2")
    try:
        assert isinstance(a, InferenceGRPCClient) and isinstance(b, InferenceGRPCClient)
        assert a is not b
    finally:
        a.close()
        b.close()
