"""The reference server's gRPC front end, through raw grpcio calls on the method table's paths."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from inferkit.codec.grpc_methods import GRPC_METHODS
from inferkit.codec.grpc_wire import model_config_pb, pb
from tests.testing.helpers import grpc_stub, infer_message

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


@pytest.fixture
def channel(reference_server):
    with grpc.insecure_channel(reference_server.grpc_address) as ch:
        yield ch


def rpc(channel, name, request=None, **kwargs):
    request = request if request is not None else GRPC_METHODS[name].request_type()
    return grpc_stub(channel, name)(request, timeout=10, **kwargs)


def outputs(reply):
    return {
        t.name: np.frombuffer(raw, dtype={"INT32": "<i4", "UINT32": "<u4", "FP32": "<f4"}[t.datatype]).reshape(
            list(t.shape)
        )
        for t, raw in zip(reply.outputs, reply.raw_output_contents)
    }


def test_health_and_metadata(channel):
    assert rpc(channel, "ServerLive").live and rpc(channel, "ServerReady").ready
    meta = rpc(channel, "ServerMetadata")
    assert meta.name == "inferkit-reference" and "binary_tensor_data" in meta.extensions
    assert rpc(channel, "ModelReady", pb.ModelReadyRequest(name="add_sub")).ready
    model = rpc(channel, "ModelMetadata", pb.ModelMetadataRequest(name="versioned"))
    assert list(model.versions) == ["1", "2", "3"] and model.inputs[0].datatype == "INT32"
    assert list(model.inputs[0].shape) == [-1]


def test_model_infer(channel):
    reply = rpc(channel, "ModelInfer", infer_message("add_sub", {"INPUT0": A, "INPUT1": B}, id="x1"))
    assert reply.model_name == "add_sub" and reply.model_version == "1" and reply.id == "x1"
    out = outputs(reply)
    np.testing.assert_array_equal(out["OUTPUT0"], A + B)
    np.testing.assert_array_equal(out["OUTPUT1"], A - B)


def test_model_infer_typed_contents_and_requested_outputs(channel):
    msg = pb.ModelInferRequest(model_name="add_sub")
    for name, arr in (("INPUT0", A), ("INPUT1", B)):
        tensor = msg.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents.extend(arr.reshape(-1).tolist())
    msg.outputs.add(name="OUTPUT1")
    reply = rpc(channel, "ModelInfer", msg)
    assert [t.name for t in reply.outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(outputs(reply)["OUTPUT1"], A - B)


def test_classification_over_grpc(channel):
    msg = infer_message("iris", {"input": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)})
    out = msg.outputs.add(name="probabilities")
    out.parameters["classification"].int64_param = 1
    reply = rpc(channel, "ModelInfer", msg)
    assert reply.outputs[0].datatype == "BYTES"
    assert reply.raw_output_contents[0][4:].decode().endswith(":0:setosa")


def test_config_statistics_repository(channel):
    config = rpc(channel, "ModelConfig", pb.ModelConfigRequest(name="add_sub")).config
    assert config.name == "add_sub" and config.input[0].data_type == model_config_pb.TYPE_INT32
    assert list(config.input[0].dims) == [-1, 16]
    assert rpc(channel, "ModelConfig", pb.ModelConfigRequest(name="repeat")).config.model_transaction_policy.decoupled
    rpc(channel, "ModelInfer", infer_message("add_sub", {"INPUT0": A, "INPUT1": B}))
    stats = rpc(channel, "ModelStatistics", pb.ModelStatisticsRequest(name="add_sub")).model_stats
    assert stats[0].name == "add_sub" and stats[0].inference_count == 1
    assert stats[0].inference_stats.success.count == 1 and stats[0].inference_stats.compute_infer.ns > 0
    assert len(rpc(channel, "ModelStatistics").model_stats) > 3
    index = rpc(channel, "RepositoryIndex").models
    assert any(m.name == "add_sub" and m.state == "READY" for m in index)
    rpc(channel, "RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="add_sub"))
    assert not rpc(channel, "ModelReady", pb.ModelReadyRequest(name="add_sub")).ready
    with pytest.raises(grpc.RpcError) as info:
        rpc(channel, "ModelInfer", infer_message("add_sub", {"INPUT0": A, "INPUT1": B}))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert not any(
        m.name == "add_sub" for m in rpc(channel, "RepositoryIndex", pb.RepositoryIndexRequest(ready=True)).models
    )
    rpc(channel, "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="add_sub"))
    assert rpc(channel, "ModelReady", pb.ModelReadyRequest(name="add_sub")).ready


def test_minimal_rpcs(channel):
    assert not rpc(channel, "SystemSharedMemoryStatus").regions
    assert not rpc(channel, "CudaSharedMemoryStatus").regions
    rpc(channel, "SystemSharedMemoryUnregister")
    rpc(channel, "TraceSetting")
    rpc(channel, "LogSettings")
    with pytest.raises(grpc.RpcError) as info:
        rpc(
            channel, "SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(name="r", key="/k", byte_size=8)
        )
    # System shared memory is implemented (tests/testing/test_server_shm.py): a key that cannot be opened is
    # INTERNAL, as Triton answers.
    assert info.value.code() == grpc.StatusCode.INTERNAL


def test_every_rpc_of_the_table_answers(channel):
    for name, method in GRPC_METHODS.items():
        if method.is_stream:
            continue
        try:
            rpc(channel, name)
        except grpc.RpcError as exc:  # empty requests may be invalid; never UNIMPLEMENTED by accident
            assert exc.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.INTERNAL,  # RepositoryModelLoad of '' (not in the repository), as Triton
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNIMPLEMENTED,
            ), (name, exc)
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                assert "Register" in name


@pytest.mark.parametrize(
    ("model", "arrays", "code", "fragment"),
    [
        ("nope", {"INPUT0": A}, grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'nope' is not found"),
        ("add_sub", {"INPUT0": A[:, :4], "INPUT1": B[:, :4]}, grpc.StatusCode.INVALID_ARGUMENT, "unexpected shape"),
        (
            "add_sub",
            {"INPUT0": A.astype(np.float32), "INPUT1": B},
            grpc.StatusCode.INVALID_ARGUMENT,
            "data-type is 'FP32'",
        ),
        ("add_sub", {"INPUT0": A}, grpc.StatusCode.INVALID_ARGUMENT, "missing required input(s) ['INPUT1']"),
        ("fail", {"INPUT0": np.ones(1, np.float32)}, grpc.StatusCode.INTERNAL, "planned failure"),
        ("repeat", {"IN": np.ones(2, np.int32)}, grpc.StatusCode.INVALID_ARGUMENT, "decoupled"),
    ],
)
def test_errors(channel, model, arrays, code, fragment):
    with pytest.raises(grpc.RpcError) as info:
        rpc(channel, "ModelInfer", infer_message(model, arrays))
    assert info.value.code() == code and fragment in info.value.details()


def test_malformed_raw_contents_are_invalid_argument(channel):
    msg = infer_message("add_sub", {"INPUT0": A, "INPUT1": B})
    msg.raw_input_contents[1] = b"\0" * 3
    with pytest.raises(grpc.RpcError) as info:
        rpc(channel, "ModelInfer", msg)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "INPUT1" in info.value.details()


def test_model_metadata_unknown_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as info:
        rpc(channel, "ModelMetadata", pb.ModelMetadataRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def stream(channel, requests):
    return list(grpc_stub(channel, "ModelStreamInfer")(iter(requests), timeout=10))


def test_stream_decoupled_several_responses_per_request(channel):
    replies = stream(
        channel,
        [
            infer_message("repeat", {"IN": np.array([5, 6, 7], np.int32)}, id="a"),
            infer_message("add_sub", {"INPUT0": A, "INPUT1": B}, id="b"),
        ],
    )
    assert [r.error_message for r in replies] == [""] * 4
    assert [r.infer_response.id for r in replies] == ["a", "a", "a", "b"]
    assert [int(outputs(r.infer_response)["OUT"][0]) for r in replies[:3]] == [5, 6, 7]
    assert [int(outputs(r.infer_response)["IDX"][0]) for r in replies[:3]] == [0, 1, 2]


def test_stream_repeat_count_parameter_and_final_flag(channel):
    msg = infer_message("repeat", {"IN": np.array([9], np.int32)}, id="c")
    msg.parameters["repeat_count"].int64_param = 4
    msg.parameters["triton_enable_empty_final_response"].bool_param = True
    replies = stream(channel, [msg])
    assert len(replies) == 5
    flags = [r.infer_response.parameters["triton_final_response"].bool_param for r in replies]
    assert flags == [False] * 4 + [True] and len(replies[-1].infer_response.outputs) == 0


def test_stream_errors_arrive_as_messages_and_the_stream_goes_on(channel):
    replies = stream(
        channel,
        [
            infer_message("fail_mid_stream", {"IN": np.array([1, 2], np.int32)}, id="f"),
            infer_message("nope", {"IN": np.array([1], np.int32)}, id="g"),
            infer_message("repeat", {"IN": np.array([3], np.int32)}, id="h"),
        ],
    )
    assert [bool(r.error_message) for r in replies] == [False, False, True, True, False]
    assert "planned failure after 2 responses" in replies[2].error_message and replies[2].infer_response.id == "f"
    assert "unknown model" in replies[3].error_message and replies[3].infer_response.id == "g"
    assert replies[4].infer_response.id == "h"


def test_large_message_over_4_mib(reference_server):
    big = np.arange(3 << 20, dtype=np.float32)  # 12 MiB each way: the server lifts gRPC's 4 MiB limit
    msg = infer_message("identity_fp32", {"INPUT0": big})
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(reference_server.grpc_address, options=options) as channel:
        reply = grpc_stub(channel, "ModelInfer")(msg, timeout=30)
    assert reply.raw_output_contents[0] == big.tobytes()
