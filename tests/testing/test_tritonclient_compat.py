"""Cross-check: tritonclient's HTTP and gRPC clients against the reference server. Where the wire format is
right, they work."""

from __future__ import annotations

import queue

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 2, dtype=np.int32)


@pytest.fixture(params=["http", "grpc"])
def triton(request, reference_server):
    if request.param == "http":
        client = httpclient.InferenceServerClient(reference_server.http_url.split("://", 1)[1])
    else:
        client = grpcclient.InferenceServerClient(reference_server.grpc_address)
    client.module = httpclient if request.param == "http" else grpcclient
    yield client
    client.close()


def test_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("add_sub")
    assert not triton.is_model_ready("nope")
    meta = triton.get_server_metadata()
    name = meta["name"] if isinstance(meta, dict) else meta.name
    assert name == "inferkit-reference"
    model = triton.get_model_metadata("versioned")
    versions = model["versions"] if isinstance(model, dict) else list(model.versions)
    assert versions == ["1", "2", "3"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_json_and_binary(triton, binary):
    mod = triton.module
    inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
    if mod is httpclient:
        inputs[0].set_data_from_numpy(A, binary_data=binary)
        inputs[1].set_data_from_numpy(B, binary_data=binary)
        outputs = [
            mod.InferRequestedOutput("OUTPUT0", binary_data=binary),
            mod.InferRequestedOutput("OUTPUT1", binary_data=binary),
        ]
    else:
        inputs[0].set_data_from_numpy(A)
        inputs[1].set_data_from_numpy(B)
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
    result = triton.infer("add_sub", inputs, outputs=outputs, request_id="t1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_bytes_and_classification(triton):
    mod = triton.module
    words = np.array([b"one", b"", "три".encode()], dtype=object)
    x = mod.InferInput("INPUT0", [3], "BYTES")
    x.set_data_from_numpy(words)
    np.testing.assert_array_equal(triton.infer("identity_bytes", [x]).as_numpy("OUTPUT0"), words)
    iris = mod.InferInput("input", [1, 4], "FP32")
    iris.set_data_from_numpy(np.array([[6.7, 3.0, 5.2, 2.3]], np.float32))
    top = triton.infer("iris", [iris], outputs=[mod.InferRequestedOutput("probabilities", class_count=2)])
    assert top.as_numpy("probabilities")[0][0].decode().endswith(":2:virginica")


def test_config_statistics_and_errors(triton):
    config = triton.get_model_config("add_sub")
    config = config if isinstance(config, dict) else grpc_config_dict(config)
    assert config["name"] == "add_sub"
    stats = triton.get_inference_statistics("add_sub")
    assert (
        stats["model_stats"][0]["name"] == "add_sub"
        if isinstance(stats, dict)
        else stats.model_stats[0].name == "add_sub"
    )
    x = triton.module.InferInput("INPUT0", [1, 16], "INT32")
    x.set_data_from_numpy(A)
    with pytest.raises(InferenceServerException) as info:
        triton.infer("add_sub", [x])
    assert "missing required input" in info.value.message()
    with pytest.raises(InferenceServerException):
        triton.infer("nope", [x])


def grpc_config_dict(reply):
    return {"name": reply.config.name}


def test_grpc_stream_with_tritonclient(reference_server):
    client = grpcclient.InferenceServerClient(reference_server.grpc_address)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        x = grpcclient.InferInput("IN", [3], "INT32")
        x.set_data_from_numpy(np.array([4, 5, 6], np.int32))
        client.async_stream_infer("repeat", [x], request_id="s1")
        got = [results.get(timeout=10) for _ in range(3)]
        assert [int(r.as_numpy("OUT")[0]) for r, e in got] == [4, 5, 6] and all(e is None for _, e in got)
        client.async_stream_infer("fail_mid_stream", [x], request_id="s2")
        got = [results.get(timeout=10) for _ in range(3)]
        assert got[2][0] is None and "planned failure" in str(got[2][1])
    finally:
        client.stop_stream()
        client.close()
