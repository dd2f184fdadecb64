"""Prove the harness: each real server answers health, metadata and infer through tritonclient or raw http.client.

No inferkit client here on purpose: if these fail, the harness or the server is broken, not our clients.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.interop import harness

pytestmark = pytest.mark.interop

ADD_A = np.arange(16, dtype=np.int32).reshape(1, 16)
ADD_B = np.full((1, 16), 3, dtype=np.int32)


def _add_sub_json() -> bytes:
    return json.dumps(
        {
            "id": "smoke-1",
            "inputs": [
                {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": ADD_A.ravel().tolist()},
                {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": ADD_B.ravel().tolist()},
            ],
        }
    ).encode()


def _check_add_sub_json(body: bytes) -> None:
    reply = json.loads(body)
    outputs = {o["name"]: np.asarray(o["data"], dtype=np.int32).reshape(o["shape"]) for o in reply["outputs"]}
    np.testing.assert_array_equal(outputs["OUTPUT0"], ADD_A + ADD_B)
    np.testing.assert_array_equal(outputs["OUTPUT1"], ADD_A - ADD_B)
    assert reply["id"] == "smoke-1"


# ---------------------------------------------------------------------------------------------------------------------
# raw HTTP, every server
# ---------------------------------------------------------------------------------------------------------------------


def test_raw_http_health_metadata_infer(server: harness.Server) -> None:
    assert harness.http_get(server.http_url, "/v2/health/live")[0] == 200
    assert harness.http_get(server.http_url, "/v2/health/ready")[0] == 200
    status, body = harness.http_get(server.http_url, "/v2")
    assert status == 200
    assert json.loads(body)["name"]
    status, body = harness.http_get(server.http_url, "/v2/models/add_sub")
    assert status == 200, body
    assert json.loads(body)["name"] == "add_sub"
    status, _, body = harness.http_post(server.http_url, "/v2/models/add_sub/infer", _add_sub_json())
    assert status == 200, body
    _check_add_sub_json(body)


def test_raw_http_unknown_model_is_404(server: harness.Server) -> None:
    status, _, body = harness.http_post(server.http_url, "/v2/models/no_such_model/infer", _add_sub_json())
    assert status == 404, body


def test_raw_http_bad_input_is_400(server: harness.Server) -> None:
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
    ).encode()
    status, _, reply = harness.http_post(server.http_url, "/v2/models/add_sub/infer", body)
    assert status == 400, reply


def test_servers_bind_loopback_only(server: harness.Server) -> None:
    listening = server.process.listening()
    assert listening, "found no listening socket for the server's process group"
    assert all(harness._is_loopback(a) for a in listening), listening


# ---------------------------------------------------------------------------------------------------------------------
# KServe v1 (raw HTTP)
# ---------------------------------------------------------------------------------------------------------------------


def test_kserve_v1_ready_predict_explain(kserve: harness.Server) -> None:
    status, body = harness.http_get(kserve.http_url, "/v1/models/add_sub")
    assert status == 200 and json.loads(body)["ready"] is True
    instance = {"INPUT0": ADD_A[0].tolist(), "INPUT1": ADD_B[0].tolist()}
    status, _, body = harness.http_post(
        kserve.http_url, "/v1/models/add_sub:predict", json.dumps({"instances": [instance]}).encode()
    )
    assert status == 200, body
    prediction = json.loads(body)["predictions"][0]
    assert prediction["OUTPUT0"] == (ADD_A + ADD_B)[0].tolist()
    status, _, body = harness.http_post(kserve.http_url, "/v1/models/identity:explain", b'{"instances": [[1, 2]]}')
    assert status == 200 and json.loads(body)["explanations"] == [[1, 2]]


# ---------------------------------------------------------------------------------------------------------------------
# tritonclient (Triton, KServe v2, MLServer gRPC)
# ---------------------------------------------------------------------------------------------------------------------


def _tritonclient_add_sub(module: object, client: object) -> None:
    a = module.InferInput("INPUT0", [1, 16], "INT32")  # type: ignore[attr-defined]
    a.set_data_from_numpy(ADD_A)
    b = module.InferInput("INPUT1", [1, 16], "INT32")  # type: ignore[attr-defined]
    b.set_data_from_numpy(ADD_B)
    result = client.infer("add_sub", [a, b], request_id="smoke-2")  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ADD_A + ADD_B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), ADD_A - ADD_B)


@pytest.mark.parametrize("server", ["triton", "kserve"], indirect=True)
def test_tritonclient_http(server: harness.Server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url.split("://", 1)[1])
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("add_sub")
        assert client.get_server_metadata()["name"]
        assert client.get_model_metadata("add_sub")["name"] == "add_sub"
        _tritonclient_add_sub(httpclient, client)
    finally:
        client.close()


@pytest.mark.parametrize("server", ["triton", "kserve", "mlserver"], indirect=True)
def test_tritonclient_grpc(server: harness.Server) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("add_sub")
        assert client.get_server_metadata().name
        assert client.get_model_metadata("add_sub").name == "add_sub"
        _tritonclient_add_sub(grpcclient, client)
    finally:
        client.close()


def test_triton_all_datatypes_roundtrip_http_binary(triton: harness.Server) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton.http_url.split("://", 1)[1])
    try:
        for datatype in harness.NUMPY_DATATYPES:
            if datatype == "BYTES":
                array = np.array([[b"a\x00b", b"\xff\xfe"], [b"", b"plain"]], dtype=np.object_)
            elif datatype == "BOOL":
                array = np.array([[True, False], [False, True]])
            else:
                array = np.arange(4).reshape(2, 2).astype(httpclient.triton_to_np_dtype(datatype))
            model, in_name, out_name = triton.identity(datatype)
            tensor = httpclient.InferInput(in_name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)
            result = client.infer(model, [tensor])
            np.testing.assert_array_equal(result.as_numpy(out_name), array, err_msg=datatype)
    finally:
        client.close()


def test_triton_bf16_roundtrip_grpc(triton: harness.Server) -> None:
    import tritonclient.grpc as grpcclient

    values = np.array([[1.0, -2.5], [0.15625, 3e38]], dtype=np.float32)
    # BF16 is the upper half of the float32 bit pattern (little-endian: bytes 2 and 3).
    raw = (values.view(np.uint32) >> 16).astype(np.uint16)
    client = grpcclient.InferenceServerClient(triton.grpc_address)
    try:
        model, in_name, _ = triton.identity("BF16")
        tensor = grpcclient.InferInput(in_name, [2, 2], "BF16")
        tensor._raw_content = raw.tobytes()
        result = client.infer(model, [tensor])
        out = result.get_response().raw_output_contents[0]
        assert out == raw.tobytes()
    finally:
        client.close()


def test_triton_stream_decoupled(triton: harness.Server) -> None:
    import queue

    import tritonclient.grpc as grpcclient

    replies: queue.Queue[object] = queue.Queue()
    client = grpcclient.InferenceServerClient(triton.grpc_address)
    try:
        client.start_stream(callback=lambda result, error: replies.put(error or result))
        tensor = grpcclient.InferInput("IN", [3], "INT32")
        tensor.set_data_from_numpy(np.array([7, 8, 9], dtype=np.int32))
        client.async_stream_infer(triton.info["decoupled_model"], [tensor], request_id="s1")
        got = [replies.get(timeout=20) for _ in range(3)]
        client.stop_stream()
    finally:
        client.close()
    values = [int(r.as_numpy("OUT")[0]) for r in got]  # type: ignore[attr-defined]
    assert values == [7, 8, 9]


def test_triton_repository_load_unload(triton: harness.Server) -> None:
    import tritonclient.http as httpclient

    name = triton.info["loadable_model"]
    client = httpclient.InferenceServerClient(triton.http_url.split("://", 1)[1])
    try:
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert name in index and "add_sub" in index
        assert not client.is_model_ready(name)
        client.load_model(name)
        assert client.is_model_ready(name)
        client.unload_model(name)
        assert not client.is_model_ready(name)
    finally:
        client.close()


def test_triton_statistics_need_the_access_token(triton: harness.Server) -> None:
    key, value = triton.info["access_header"]
    status, body = harness.http_get(triton.http_url, "/v2/models/add_sub/stats")
    assert status == 403, body
    status, body = harness.http_get(triton.http_url, "/v2/models/add_sub/stats", headers={key: value})
    assert status == 200 and json.loads(body)["model_stats"][0]["name"] == "add_sub"


def test_triton_fail_model_reports_its_error(triton: harness.Server) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}).encode()
    status, _, reply = harness.http_post(triton.http_url, "/v2/models/fail/infer", body)
    assert status >= 400 and b"always fails" in reply
