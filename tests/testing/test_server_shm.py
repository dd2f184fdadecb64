"""The reference server's system shared memory extension, through raw HTTP (http.client) and raw gRPC calls."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from inferkit.codec import rest_v2
from inferkit.codec.grpc_infer_decode import decode_infer_response
from inferkit.codec.grpc_infer_encode import encode_infer_request, serialize_infer_request
from inferkit.codec.grpc_wire import pb
from inferkit.codec.tensors import InferInput, InferRequest, InferRequestedOutput
from inferkit.shm import SharedMemoryRegion
from tests.testing.helpers import call, grpc_stub

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


@pytest.fixture
def regions():
    """An input region holding A then B (128 bytes) and an output region of 128 bytes; both unlinked after."""
    with SharedMemoryRegion(128) as inputs, SharedMemoryRegion(128) as outputs:
        inputs.set([A, B])
        yield inputs, outputs


def register(server, region, name=None, offset=0, byte_size=None):
    body = {"key": region.key, "offset": offset, "byte_size": region.byte_size if byte_size is None else byte_size}
    return call(server, "POST", f"/v2/systemsharedmemory/region/{name or region.name}/register", body)


def shm_request(inputs, outputs, *, out1_in_shm=True):
    x0 = InferInput("INPUT0", [1, 16], "INT32").set_shared_memory(inputs.name, 64)
    x1 = InferInput("INPUT1", [1, 16], "INT32").set_shared_memory(inputs.name, 64, offset=64)
    o0 = InferRequestedOutput("OUTPUT0").set_shared_memory(outputs.name, 64)
    o1 = InferRequestedOutput("OUTPUT1")
    if out1_in_shm:
        o1.set_shared_memory(outputs.name, 64, offset=64)
    return InferRequest("add_sub", [x0, x1], outputs=[o0, o1])


def rest_infer(server, request):
    encoded = rest_v2.encode_infer_request(request)
    return call(server, "POST", "/v2/models/add_sub/infer", encoded.body, dict(encoded.headers))


# -- REST ------------------------------------------------------------------------------------------------------


def test_rest_register_status_unregister(reference_server, regions):
    inputs, outputs = regions
    assert call(reference_server, "GET", "/v2/systemsharedmemory/status").json() == []
    assert register(reference_server, inputs).status == 200
    assert register(reference_server, outputs, offset=0, byte_size=64).status == 200
    status = call(reference_server, "GET", "/v2/systemsharedmemory/status").json()
    assert sorted(status, key=lambda s: s["name"]) == sorted(
        [
            {"name": inputs.name, "key": inputs.key, "offset": 0, "byte_size": 128},
            {"name": outputs.name, "key": outputs.key, "offset": 0, "byte_size": 64},
        ],
        key=lambda s: s["name"],
    )
    one = call(reference_server, "GET", f"/v2/systemsharedmemory/region/{inputs.name}/status")
    assert one.json() == [{"name": inputs.name, "key": inputs.key, "offset": 0, "byte_size": 128}]
    assert call(reference_server, "POST", f"/v2/systemsharedmemory/region/{inputs.name}/unregister").status == 200
    assert [s["name"] for s in call(reference_server, "GET", "/v2/systemsharedmemory/status").json()] == [outputs.name]
    assert call(reference_server, "POST", "/v2/systemsharedmemory/unregister").status == 200
    assert call(reference_server, "GET", "/v2/systemsharedmemory/status").json() == []
    assert reference_server.count(route="shm_status") == 5
    assert reference_server.count(route="shm_register") == 2
    assert reference_server.count(route="shm_unregister") == 2


def test_rest_register_errors(reference_server, regions):
    inputs, _ = regions
    assert register(reference_server, inputs).status == 200
    again = register(reference_server, inputs)
    assert again.status == 400 and "already in manager" in again.json()["error"]  # as Triton (gRPC: ALREADY_EXISTS)
    missing = call(
        reference_server,
        "POST",
        "/v2/systemsharedmemory/region/nokey/register",
        {"key": "/inferkit_no_such_key", "byte_size": 8},
    )
    assert missing.status == 500 and "Unable to open shared memory region" in missing.json()["error"]
    too_big = register(reference_server, inputs, name="too_big", byte_size=inputs.byte_size + 1)
    assert too_big.status == 500 and "fewer than the 129" in too_big.json()["error"]
    no_size = call(reference_server, "POST", "/v2/systemsharedmemory/region/x/register", {"key": inputs.key})
    assert no_size.status == 400
    unknown = call(reference_server, "GET", "/v2/systemsharedmemory/region/nope/status")
    assert unknown.status == 404 and "nope" in unknown.json()["error"]
    # Unregistering an unknown region is not an error (as Triton).
    assert call(reference_server, "POST", "/v2/systemsharedmemory/region/nope/unregister").status == 200


def test_rest_infer_inputs_and_outputs_in_shm(reference_server, regions):
    inputs, outputs = regions
    register(reference_server, inputs)
    register(reference_server, outputs)
    reply = rest_infer(reference_server, shm_request(inputs, outputs))
    assert reply.status == 200, reply
    header = reply.json()  # no binary part at all: the body is JSON only
    for out, offset in zip(header["outputs"], (0, 64)):
        assert "data" not in out and "binary_data_size" not in out["parameters"]
        assert out["parameters"]["shared_memory_region"] == outputs.name
        assert out["parameters"]["shared_memory_byte_size"] == 64
        assert out["parameters"].get("shared_memory_offset", 0) == offset
    np.testing.assert_array_equal(outputs.as_numpy("INT32", [1, 16]), A + B)
    np.testing.assert_array_equal(outputs.as_numpy("INT32", [1, 16], offset=64), A - B)


def test_rest_mixed_shm_input_and_body_output(reference_server, regions):
    inputs, outputs = regions
    register(reference_server, inputs)
    register(reference_server, outputs)
    request = shm_request(inputs, outputs, out1_in_shm=False)
    request.inputs[1] = InferInput("INPUT1", [1, 16], "INT32").set_data_from_numpy(B)
    reply = rest_infer(reference_server, request)
    assert reply.status == 200, reply
    response = rest_v2.decode_infer_response(reply.body, reply.headers.get("inference-header-content-length"))
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), A - B)
    assert response.get_output("OUTPUT0").shared_memory == (outputs.name, 64, 0)
    with pytest.raises(ValueError, match="read it from the region"):
        response.as_numpy("OUTPUT0")
    np.testing.assert_array_equal(outputs.as_numpy("INT32", [1, 16]), A + B)


def test_rest_infer_errors(reference_server, regions):
    inputs, outputs = regions
    unknown = rest_infer(reference_server, shm_request(inputs, outputs))
    assert unknown.status == 400 and "Unable to find shared memory region" in unknown.json()["error"]
    register(reference_server, inputs, byte_size=96)  # INPUT1 at 64..128 is out of bounds
    register(reference_server, outputs)
    bounds = rest_infer(reference_server, shm_request(inputs, outputs))
    assert bounds.status == 400 and "Invalid offset + byte size" in bounds.json()["error"]
    call(reference_server, "POST", "/v2/systemsharedmemory/unregister")
    register(reference_server, inputs)
    register(reference_server, outputs)
    request = shm_request(inputs, outputs)
    request.outputs[0].set_shared_memory(outputs.name, 32)  # too small for 64 bytes of OUTPUT0
    small = rest_infer(reference_server, request)
    assert small.status == 400 and "should be at least 64 bytes" in small.json()["error"]


def test_rest_bytes_through_shm(reference_server):
    words = np.array([b"alpha", b"", b"gamma\x00"], dtype=object)
    with SharedMemoryRegion(256) as region:
        ((_, size),) = region.set([words])
        register(reference_server, region)
        x = InferInput("INPUT0", [3], "BYTES").set_shared_memory(region.name, size)
        out = InferRequestedOutput("OUTPUT0").set_shared_memory(region.name, 128, offset=128)
        encoded = rest_v2.encode_infer_request(InferRequest("identity_bytes", [x], outputs=[out]))
        reply = call(reference_server, "POST", "/v2/models/identity_bytes/infer", encoded.body, dict(encoded.headers))
        assert reply.status == 200, reply
        assert list(region.as_numpy("BYTES", [3], offset=128)) == list(words)


def test_unregister_during_use_keeps_views_valid(reference_server, regions):
    inputs, outputs = regions
    register(reference_server, inputs)
    register(reference_server, outputs)
    assert rest_infer(reference_server, shm_request(inputs, outputs)).status == 200
    reference_server.reset()  # unregisters everything on the server side
    assert call(reference_server, "GET", "/v2/systemsharedmemory/status").json() == []
    np.testing.assert_array_equal(outputs.as_numpy("INT32", [1, 16]), A + B)  # the client's mapping is untouched


# -- gRPC ------------------------------------------------------------------------------------------------------


@pytest.fixture
def channel(reference_server):
    with grpc.insecure_channel(reference_server.grpc_address) as ch:
        yield ch


def rpc(channel, name, request):
    return grpc_stub(channel, name)(request, timeout=10)


def test_grpc_register_status_unregister(reference_server, channel, regions):
    inputs, outputs = regions
    assert not rpc(channel, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()).regions
    rpc(
        channel,
        "SystemSharedMemoryRegister",
        pb.SystemSharedMemoryRegisterRequest(name=inputs.name, key=inputs.key, byte_size=128),
    )
    rpc(
        channel,
        "SystemSharedMemoryRegister",
        pb.SystemSharedMemoryRegisterRequest(name="out", key=outputs.key, offset=64, byte_size=64),
    )
    status = rpc(channel, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()).regions
    assert set(status) == {inputs.name, "out"}
    assert (status["out"].key, status["out"].offset, status["out"].byte_size) == (outputs.key, 64, 64)
    one = rpc(channel, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest(name="out")).regions
    assert list(one) == ["out"]
    with pytest.raises(grpc.RpcError) as info:
        rpc(channel, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        rpc(
            channel,
            "SystemSharedMemoryRegister",
            pb.SystemSharedMemoryRegisterRequest(name="out", key=outputs.key, byte_size=8),
        )
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    rpc(channel, "SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest(name="out"))
    assert list(rpc(channel, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()).regions) == [inputs.name]
    rpc(channel, "SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest())
    assert not rpc(channel, "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()).regions
    assert reference_server.count(route="shm_register") == 3
    assert reference_server.count(route="shm_status") == 6
    assert reference_server.count(route="shm_unregister") == 2


def test_grpc_infer_through_shm(reference_server, channel, regions):
    inputs, outputs = regions
    for region in regions:
        rpc(
            channel,
            "SystemSharedMemoryRegister",
            pb.SystemSharedMemoryRegisterRequest(name=region.name, key=region.key, byte_size=128),
        )
    request = shm_request(inputs, outputs, out1_in_shm=False)
    wire = serialize_infer_request(request)
    assert not pb.ModelInferRequest.FromString(wire).raw_input_contents  # nothing but parameters
    raw = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None
    )(wire, timeout=10)
    message = pb.ModelInferResponse.FromString(raw)
    assert message.outputs[0].parameters["shared_memory_region"].string_param == outputs.name
    response = decode_infer_response(raw)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), A - B)
    with pytest.raises(ValueError, match="shared memory region"):
        response.as_numpy("OUTPUT0")
    np.testing.assert_array_equal(outputs.as_numpy("INT32", [1, 16]), A + B)


def test_grpc_infer_unknown_region(reference_server, channel, regions):
    inputs, outputs = regions
    with pytest.raises(grpc.RpcError) as info:
        rpc(channel, "ModelInfer", encode_infer_request(shm_request(inputs, outputs)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unable to find shared memory region" in info.value.details()


def test_cuda_shared_memory_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as info:
        rpc(channel, "CudaSharedMemoryRegister", pb.CudaSharedMemoryRegisterRequest(name="gpu"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_status_json_is_tritons_shape(reference_server, regions):
    inputs, _ = regions
    register(reference_server, inputs)
    body = call(reference_server, "GET", "/v2/systemsharedmemory/status").body
    assert json.loads(body) == [{"name": inputs.name, "key": inputs.key, "offset": 0, "byte_size": 128}]
