"""inferkit.codec.grpc_*: tensors <-> protobuf messages, both directions, both forms (messages and wire bytes)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from inferkit.codec import grpc_infer_decode, grpc_reply_reader
from inferkit.codec.grpc_infer_decode import (
    _plain_response,
    _response_from_message,
    decode_infer_request,
    decode_infer_response,
)
from inferkit.codec.grpc_infer_encode import (
    buffers_size,
    encode_infer_request,
    encode_infer_response,
    encode_request,
    join_request_parts,
    request_parts,
    serialize_infer_request,
    serialize_infer_response,
)
from inferkit.codec.grpc_messages import (
    model_config_to_dict,
    model_metadata_to_dict,
    model_ready_request,
    model_statistics_request,
    model_statistics_to_dict,
    repository_index_to_list,
    repository_load_request,
    repository_unload_request,
    server_metadata_to_dict,
)
from inferkit.codec.grpc_reply_reader import ReplyReader
from inferkit.codec.grpc_stream import decode_stream_response, encode_stream_response, serialize_stream_response
from inferkit.codec.grpc_wire import model_config_pb, pb
from inferkit.codec.tensors import InferInput, InferOutput, InferRequest, InferRequestedOutput, InferResponse
from inferkit.errors import (
    DecodeError,
    EncodeError,
    InternalServerError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
)

NUMERIC = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-32768, 1, 32767]], np.int16),
    "INT32": np.array([[-(2**31), 5, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**63), 7, 2**63 - 1]], np.int64),
    "UINT8": np.array([[0, 1, 255]], np.uint8),
    "UINT16": np.array([[0, 1, 65535]], np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1]], np.uint64),
    "FP16": np.array([[-1.5, 0.0, 65504.0]], np.float16),
    "FP32": np.array([[-1.5, np.inf, np.nan]], np.float32),
    "FP64": np.array([[-1.5, 1e300, -0.0]], np.float64),
}
BYTES = np.array([[b"", b"abc", "h\u00e9llo".encode()]], dtype=object)
BF16_SRC = np.array([[1.0, -2.5, 3.0e38]], np.float32)
TYPED = [dt for dt in NUMERIC if dt not in ("FP16",)] + ["BYTES"]
ALL = [*NUMERIC, "BYTES", "BF16"]


def _array(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return BYTES
    if datatype == "BF16":
        return BF16_SRC
    return NUMERIC[datatype]


def _input(datatype: str, name: str = "X") -> InferInput:
    arr = _array(datatype)
    return InferInput(name, list(arr.shape), datatype).set_data_from_numpy(arr)


def _output(datatype: str, name: str = "Y") -> InferOutput:
    arr = _array(datatype)
    return InferOutput(name, list(arr.shape), datatype).set_data_from_numpy(arr)


def _check(tensor, datatype: str) -> None:
    expected = _array(datatype)
    if datatype == "BF16":
        got = tensor.as_numpy(np.float32)
        np.testing.assert_allclose(got, BF16_SRC, rtol=1e-2)
        return
    got = tensor.as_numpy()
    assert got.shape == expected.shape
    if datatype == "BYTES":
        assert got.tolist() == expected.tolist()
    else:
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.fixture(params=["small", "split"])
def split_mode(request, monkeypatch):
    """Run each decode through both paths: protobuf parses the whole reply, or raw contents are sliced out."""
    if request.param == "split":
        monkeypatch.setattr(grpc_infer_decode, "_SPLIT_THRESHOLD", 0)
    return request.param


# -- round trips ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ALL)
def test_request_round_trip_raw_every_datatype(datatype, split_mode):
    req = InferRequest("m", [_input(datatype)], request_id="r-1", model_version="3")
    wire = serialize_infer_request(req)
    assert pb.ModelInferRequest.FromString(wire) == encode_infer_request(req)
    for form in (wire, encode_infer_request(req)):
        back = decode_infer_request(form)
        assert (back.model_name, back.request_id, back.model_version) == ("m", "r-1", "3")
        tensor = back.inputs[0]
        assert (tensor.name, tensor.shape, tensor.datatype) == ("X", [1, 3], datatype)
        _check(tensor, datatype)


@pytest.mark.parametrize("datatype", ALL)
def test_response_round_trip_raw_every_datatype(datatype, split_mode):
    resp = InferResponse("m", [_output(datatype), _output("INT32", "Z")], model_version="1", id="abc")
    wire = serialize_infer_response(resp)
    assert pb.ModelInferResponse.FromString(wire) == encode_infer_response(resp)
    for form in (wire, encode_infer_response(resp)):
        back = decode_infer_response(form)
        assert (back.model_name, back.model_version, back.id) == ("m", "1", "abc")
        assert [t.name for t in back.outputs] == ["Y", "Z"]
        _check(back.outputs[0], datatype)
        _check(back.outputs[1], "INT32")


@pytest.mark.parametrize("datatype", TYPED)
def test_typed_contents_round_trip(datatype):
    resp = InferResponse("m", [_output(datatype)])
    msg = encode_infer_response(resp, raw=False)
    assert len(msg.raw_output_contents) == 0
    assert msg.outputs[0].HasField("contents")
    _check(decode_infer_response(msg).outputs[0], datatype)
    _check(decode_infer_response(msg.SerializeToString()).outputs[0], datatype)
    req = encode_infer_request(InferRequest("m", [_input(datatype)]), raw=False)
    _check(decode_infer_request(req.SerializeToString()).inputs[0], datatype)


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_fp16_bf16_have_no_typed_contents(datatype):
    with pytest.raises(EncodeError, match="raw"):
        encode_infer_request(InferRequest("m", [_input(datatype)]), raw=False)
    msg = pb.ModelInferResponse(model_name="m")
    out = msg.outputs.add(name="Y", datatype=datatype, shape=[1])
    out.contents.fp32_contents.append(1.0)
    with pytest.raises(DecodeError, match="'Y'.*raw contents"):
        decode_infer_response(msg)


def test_typed_contents_from_a_hand_built_reply():
    msg = pb.ModelInferResponse(model_name="m", id="x")
    a = msg.outputs.add(name="A", datatype="FP32", shape=[2, 2])
    a.contents.fp32_contents.extend([1, 2, 3, 4])
    b = msg.outputs.add(name="B", datatype="BYTES", shape=[2])
    b.contents.bytes_contents.extend([b"x", b"yz"])
    c = msg.outputs.add(name="C", datatype="UINT8", shape=[1])
    c.contents.uint_contents.append(200)
    resp = decode_infer_response(msg.SerializeToString())
    np.testing.assert_array_equal(resp.as_numpy("A"), np.array([[1, 2], [3, 4]], np.float32))
    assert resp.as_numpy("B").tolist() == [b"x", b"yz"]
    assert resp.as_numpy("C").dtype == np.uint8 and resp.as_numpy("C")[0] == 200


def test_empty_tensor_without_contents_is_fine():
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="E", datatype="FP32", shape=[0, 4])
    assert decode_infer_response(msg).as_numpy("E").shape == (0, 4)


# -- parameters and requested outputs ------------------------------------------------------------------------


def test_parameters_map_each_type_and_back():
    params = {"b": True, "i": -5, "big": 2**63, "f": 0.25, "s": "text", "zero": 0}
    req = InferRequest("m", [_input("INT32")], parameters=params)
    msg = encode_infer_request(req)
    assert msg.parameters["b"].WhichOneof("parameter_choice") == "bool_param"
    assert msg.parameters["i"].WhichOneof("parameter_choice") == "int64_param"
    assert msg.parameters["big"].WhichOneof("parameter_choice") == "uint64_param"
    assert msg.parameters["f"].WhichOneof("parameter_choice") == "double_param"
    assert msg.parameters["s"].WhichOneof("parameter_choice") == "string_param"
    assert msg.parameters["zero"].WhichOneof("parameter_choice") == "int64_param"
    back = decode_infer_request(serialize_infer_request(req)).parameters
    assert back == params
    assert type(back["b"]) is bool and type(back["f"]) is float


def test_parameter_out_of_range_is_an_encode_error():
    req = InferRequest("m", [_input("INT32")], parameters={"huge": 2**64})
    with pytest.raises(EncodeError, match="'huge'"):
        serialize_infer_request(req)


def test_tensor_and_response_parameters_travel():
    x = _input("INT32")
    x.parameters = {"p": 1}
    req = InferRequest("m", [x])
    assert decode_infer_request(serialize_infer_request(req)).inputs[0].parameters == {"p": 1}
    resp = InferResponse("m", [_output("FP32")], parameters={"sequence_end": True})
    assert decode_infer_response(serialize_infer_response(resp)).parameters == {"sequence_end": True}


def test_requested_outputs_and_classification():
    req = InferRequest(
        "m",
        [_input("FP32")],
        outputs=[InferRequestedOutput("A", class_count=3), InferRequestedOutput("B", parameters={"k": "v"})],
    )
    msg = encode_infer_request(req)
    assert [o.name for o in msg.outputs] == ["A", "B"]
    assert msg.outputs[0].parameters["classification"].int64_param == 3
    assert "binary_data" not in msg.outputs[0].parameters  # a REST notion; gRPC is always binary
    back = decode_infer_request(msg)
    assert back.outputs is not None
    assert [(o.name, o.class_count, o.parameters) for o in back.outputs] == [("A", 3, {}), ("B", 0, {"k": "v"})]


def test_no_requested_outputs_means_none():
    assert decode_infer_request(serialize_infer_request(InferRequest("m", [_input("FP32")]))).outputs is None


# -- validation -----------------------------------------------------------------------------------------------


def _resp_msg(raws: list[bytes]) -> object:
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="A", datatype="FP32", shape=[2])
    msg.outputs.add(name="B", datatype="INT8", shape=[3])
    msg.raw_output_contents.extend(raws)
    return msg


def test_raw_contents_count_must_match_outputs(split_mode):
    msg = _resp_msg([b"\0" * 8])
    with pytest.raises(DecodeError, match=r"1 raw output contents for 2 outputs \('A', 'B'\)"):
        decode_infer_response(msg.SerializeToString(), model_name="m")


def test_raw_size_must_match_shape(split_mode):
    msg = _resp_msg([b"\0" * 8, b"\0" * 4])
    with pytest.raises(DecodeError, match=r"output 'B' has shape \[3\] of INT8 \(3 bytes\) but 4 bytes"):
        decode_infer_response(msg.SerializeToString())


def test_typed_count_must_match_shape():
    msg = pb.ModelInferResponse(model_name="m")
    out = msg.outputs.add(name="A", datatype="INT32", shape=[3])
    out.contents.int_contents.extend([1, 2])
    with pytest.raises(DecodeError, match="'A' has 2 values in contents.int_contents but shape \\[3\\] needs 3"):
        decode_infer_response(msg)


def test_typed_value_out_of_range():
    msg = pb.ModelInferResponse(model_name="m")
    out = msg.outputs.add(name="A", datatype="INT8", shape=[1])
    out.contents.int_contents.append(1000)
    with pytest.raises(DecodeError, match="'A'.*out of range for INT8"):
        decode_infer_response(msg)


def test_missing_data_and_mixed_contents():
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="A", datatype="INT32", shape=[1])
    with pytest.raises(DecodeError, match="'A' has no data"):
        decode_infer_response(msg)
    msg.outputs[0].contents.int_contents.append(1)
    msg.raw_output_contents.append(b"\0" * 4)
    with pytest.raises(DecodeError, match="'A' has both typed contents and raw contents"):
        decode_infer_response(msg)


def test_bad_bytes_elements_name_the_tensor():
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="S", datatype="BYTES", shape=[2])
    msg.raw_output_contents.append(b"\x05\0\0\0ab")
    resp = decode_infer_response(msg)
    with pytest.raises(DecodeError, match="'S'"):
        resp.as_numpy("S")


def test_unknown_datatype_from_the_peer_is_a_decode_error():
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="A", datatype="FP8", shape=[1])
    msg.raw_output_contents.append(b"\0")
    with pytest.raises(DecodeError, match="FP8"):
        decode_infer_response(msg)


@pytest.mark.parametrize("cut", [1, 5, 30])
def test_truncated_wire_bytes(cut, split_mode):
    resp = InferResponse("m", [_output("FP64")])
    wire = serialize_infer_response(resp)
    with pytest.raises(DecodeError):
        decode_infer_response(wire[:-cut])


def test_garbage_is_a_decode_error(split_mode):
    with pytest.raises(DecodeError):
        decode_infer_response(b"\xff" * 100)


def test_encode_errors_name_model_and_tensor():
    with pytest.raises(EncodeError, match="model 'm'.*at least one input"):
        serialize_infer_request(InferRequest("m", []))
    with pytest.raises(EncodeError, match="'X' has no data"):
        serialize_infer_request(InferRequest("m", [InferInput("X", [1], "FP32")]))


def test_request_model_name_required():
    with pytest.raises(DecodeError, match="model_name"):
        decode_infer_request(pb.ModelInferRequest())


# -- copies ---------------------------------------------------------------------------------------------------


def test_decoding_wire_bytes_is_zero_copy():
    big = np.arange(1 << 18, dtype=np.float32)  # 1 MiB: above the split threshold
    wire = serialize_infer_response(InferResponse("m", [InferOutput("Y", [big.size], "FP32").set_data_from_numpy(big)]))
    resp = decode_infer_response(wire)
    arr = resp.as_numpy("Y")
    assert np.shares_memory(arr, np.frombuffer(wire, np.uint8))
    assert not arr.flags.writeable
    assert resp.as_numpy("Y") is arr
    np.testing.assert_array_equal(arr, big)


def test_building_a_request_copies_the_tensor_once():
    big = np.ones(4 << 20, dtype=np.float32)  # 16 MiB
    req = InferRequest("m", [InferInput("X", [big.size], "FP32").set_data_from_numpy(big)])
    tracemalloc.start()
    try:
        wire = serialize_infer_request(req)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(wire) > big.nbytes
    assert peak < big.nbytes * 1.1, peak


# -- streams --------------------------------------------------------------------------------------------------


def test_stream_response_round_trip(split_mode):
    resp = InferResponse("m", [_output("FP32")], id="s1")
    for form in (serialize_stream_response(resp), encode_stream_response(resp)):
        back = decode_stream_response(form, model_name="m")
        assert back.id == "s1"
        _check(back.outputs[0], "FP32")
    assert pb.ModelStreamInferResponse.FromString(serialize_stream_response(resp)) == encode_stream_response(resp)


@pytest.mark.parametrize(
    ("message", "cls", "code"),
    [
        ("model failed at step 3", InternalServerError, "INTERNAL"),
        ("INVALID_ARGUMENT: shape [1] is wrong", InvalidInputError, "INVALID_ARGUMENT"),
        ("Request for unknown model: 'x' is not found", NotFoundError, "NOT_FOUND"),
        ("[request id: 7] unexpected shape for input 'A'", InvalidInputError, "INVALID_ARGUMENT"),
        ("UNAVAILABLE: draining", ServiceUnavailableError, "UNAVAILABLE"),
    ],
)
def test_stream_error_is_typed(message, cls, code):
    for form in (
        serialize_stream_response(InferResponse("m", [], id="rid"), error=message),
        encode_stream_response(InferResponse("m", [], id="rid"), error=message),
    ):
        with pytest.raises(cls) as info:
            decode_stream_response(form, model_name="m")
        assert info.value.grpc_code == code
        assert info.value.model_name == "m"
        assert info.value.request_id == "rid"
        assert message in str(info.value)


def test_stream_error_without_response():
    with pytest.raises(InternalServerError, match="boom"):
        decode_stream_response(serialize_stream_response(error="boom"))


# -- dicts ----------------------------------------------------------------------------------------------------


def test_model_metadata_dict_has_rest_shape():
    msg = pb.ModelMetadataResponse(name="m", versions=["1"], platform="python")
    msg.inputs.add(name="X", datatype="FP32", shape=[-1, 16])
    assert model_metadata_to_dict(msg) == {
        "name": "m",
        "versions": ["1"],
        "platform": "python",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [],
    }


def test_server_metadata_dict():
    msg = pb.ServerMetadataResponse(name="s", version="2", extensions=["a", "b"])
    assert server_metadata_to_dict(msg) == {"name": "s", "version": "2", "extensions": ["a", "b"]}


def test_model_config_dict_keeps_int64_as_int_and_proto_names():
    cfg = model_config_pb.ModelConfig(name="m", max_batch_size=8, backend="python")
    inp = cfg.input.add(name="X", data_type=model_config_pb.TYPE_FP32, dims=[-1, 16])
    del inp
    d = model_config_to_dict(pb.ModelConfigResponse(config=cfg))
    assert d["name"] == "m" and d["max_batch_size"] == 8
    assert d["input"][0]["dims"] == [-1, 16]
    assert d["input"][0]["data_type"] == "TYPE_FP32"
    assert "dynamic_batching" not in d  # message fields at default are left out; scalars are printed
    assert d["output"] == []


def test_statistics_dict():
    stats = pb.ModelStatisticsResponse()
    s = stats.model_stats.add(name="m", version="1", inference_count=2**40, execution_count=3)
    s.inference_stats.success.count = 5
    s.inference_stats.success.ns = 123
    d = model_statistics_to_dict(stats)
    entry = d["model_stats"][0]
    assert entry["inference_count"] == 2**40 and isinstance(entry["inference_count"], int)
    assert entry["inference_stats"]["success"] == {"count": 5, "ns": 123}


def test_repository_index_list():
    msg = pb.RepositoryIndexResponse()
    msg.models.add(name="a", version="1", state="READY")
    msg.models.add(name="b", state="UNAVAILABLE", reason="unloaded")
    assert repository_index_to_list(msg) == [
        {"name": "a", "version": "1", "state": "READY"},
        {"name": "b", "state": "UNAVAILABLE", "reason": "unloaded"},
    ]


def test_small_request_builders():
    assert model_ready_request("m", "2") == pb.ModelReadyRequest(name="m", version="2")
    assert model_statistics_request() == pb.ModelStatisticsRequest()
    load = repository_load_request("m", {"config": "{}", "flag": True, "n": 3, "file:1/model.py": b"x"})
    assert load.parameters["config"].string_param == "{}"
    assert load.parameters["file:1/model.py"].bytes_param == b"x"
    with pytest.raises(EncodeError):
        repository_unload_request("m", {"x": 1.5})


# -- cross-check with tritonclient's messages ------------------------------------------------------------------

tc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as tc_pb  # noqa: E402
from tritonclient.grpc._infer_result import InferResult as TCInferResult  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request as tc_request  # noqa: E402


def _tritonclient_takes_float_parameters() -> bool:
    x = tc.InferInput("X", [1], "INT32")
    x.set_data_from_numpy(np.zeros(1, np.int32))
    try:
        tc_request("m", [x], "", "", None, 0, False, False, 0, None, {"p": 1.5})
    except Exception:  # noqa: BLE001 - tritonclient < 2.4x: InferenceServerException "datatype <float> not supported"
        return False
    return True


TC_FLOAT_PARAMETERS = _tritonclient_takes_float_parameters()


def _tritonclient_takes_bfloat16() -> bool:
    """tritonclient before 2.6x has BF16 as float32 arrays (no ml_dtypes.bfloat16 to compare with ours)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from tritonclient.utils import triton_to_np_dtype

    return np.dtype(triton_to_np_dtype("BF16")) == np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("datatype", [dt for dt in ALL if dt != "BF16"] + ["BF16"])
def test_tritonclient_request_parses_with_ours(datatype):
    arr = _array(datatype)
    if datatype == "BF16":
        if not _tritonclient_takes_bfloat16():
            pytest.skip("this tritonclient has BF16 as float32 arrays, not ml_dtypes.bfloat16")
        import ml_dtypes

        arr = BF16_SRC.astype(ml_dtypes.bfloat16)
    x = tc.InferInput("X", list(arr.shape), datatype)
    x.set_data_from_numpy(arr)
    p = 1.5 if TC_FLOAT_PARAMETERS else "1.5"  # see test_tritonclient_float_parameter_parses_with_ours
    theirs = tc_request(
        "m", [x], "2", "rid", [tc.InferRequestedOutput("Y", class_count=2)], 5, True, False, 0, None, {"p": p}
    )
    ours = decode_infer_request(theirs.SerializeToString())
    assert (ours.model_name, ours.model_version, ours.request_id) == ("m", "2", "rid")
    assert ours.parameters == {"sequence_id": 5, "sequence_start": True, "sequence_end": False, "p": p}
    assert ours.outputs is not None and ours.outputs[0].class_count == 2
    _check(ours.inputs[0], datatype)


@pytest.mark.skipif(not TC_FLOAT_PARAMETERS, reason="this tritonclient refuses float request parameters")
def test_tritonclient_float_parameter_parses_with_ours():
    x = tc.InferInput("X", [1], "INT32")
    x.set_data_from_numpy(np.zeros(1, np.int32))
    theirs = tc_request("m", [x], "", "", None, 0, False, False, 0, None, {"p": 1.5})
    assert decode_infer_request(theirs.SerializeToString()).parameters == {"p": 1.5}


@pytest.mark.parametrize("datatype", ALL)
def test_our_request_parses_with_tritonclient(datatype):
    req = InferRequest(
        "m",
        [_input(datatype)],
        request_id="rid",
        parameters={"flag": False},
        priority=3,
        outputs=[InferRequestedOutput("Y", class_count=4)],
    )
    theirs = tc_pb.ModelInferRequest.FromString(serialize_infer_request(req))
    assert theirs.model_name == "m" and theirs.id == "rid"
    assert theirs.inputs[0].name == "X" and theirs.inputs[0].datatype == datatype
    assert list(theirs.inputs[0].shape) == [1, 3]
    assert theirs.raw_input_contents[0] == bytes(req.inputs[0].wire_bytes())
    assert theirs.parameters["priority"].int64_param == 3
    assert theirs.parameters["flag"].WhichOneof("parameter_choice") == "bool_param"
    assert theirs.outputs[0].parameters["classification"].int64_param == 4


@pytest.mark.parametrize("datatype", [dt for dt in ALL if dt != "BF16"])
def test_our_response_reads_with_tritonclient(datatype):
    resp = InferResponse("m", [_output(datatype)], id="rid")
    theirs = TCInferResult(tc_pb.ModelInferResponse.FromString(serialize_infer_response(resp)))
    got = theirs.as_numpy("Y")
    if datatype == "BYTES":
        assert got.tolist() == BYTES.tolist()
    else:
        np.testing.assert_array_equal(got, _array(datatype))


@pytest.mark.parametrize("raw", [True, False])
def test_tritonclient_style_response_reads_with_ours(raw, split_mode):
    msg = tc_pb.ModelInferResponse(model_name="m", model_version="1", id="rid")
    out = msg.outputs.add(name="Y", datatype="FP32", shape=[2, 2])
    data = np.array([[1, 2], [3, 4]], np.float32)
    if raw:
        msg.raw_output_contents.append(data.tobytes())
    else:
        out.contents.fp32_contents.extend(data.reshape(-1).tolist())
    msg.parameters["triton_final_response"].bool_param = True
    resp = decode_infer_response(msg.SerializeToString())
    np.testing.assert_array_equal(resp.as_numpy("Y"), data)
    assert resp.parameters == {"triton_final_response": True}
    stream = tc_pb.ModelStreamInferResponse(error_message="", infer_response=msg)
    np.testing.assert_array_equal(decode_stream_response(stream.SerializeToString()).as_numpy("Y"), data)


def test_decoded_response_has_every_slot_set():
    resp = decode_infer_response(serialize_infer_response(InferResponse("m", [_output("INT32")])))
    for name in InferResponse.__slots__:
        getattr(resp, name)
    assert resp.parameters == {} and resp.id is None and resp.model_version is None


@pytest.mark.parametrize("raw", [True, False])
def test_decoded_tensors_have_every_slot_set(raw):
    from inferkit.codec.tensors import InferTensor

    msg = encode_infer_response(InferResponse("m", [_output("INT32"), _output("BYTES", "S")]), raw=raw)
    for tensor in decode_infer_response(msg).outputs:
        slots = {name for cls in type(tensor).__mro__ for name in getattr(cls, "__slots__", ())}
        assert slots == set(InferTensor.__slots__)
        for name in slots:
            getattr(tensor, name)  # every slot was assigned (an unset slot raises AttributeError)


def test_negative_dimension_from_the_peer():
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="A", datatype="FP32", shape=[-1])
    with pytest.raises(DecodeError, match="'A' has a negative dimension"):
        decode_infer_response(msg)


def test_request_parts_join_to_the_wire_form():
    req = InferRequest("m", [_input("FP32"), _input("BYTES", "S")], request_id="x")
    header, buffers = request_parts(req)
    assert join_request_parts(header, buffers) == serialize_infer_request(req)
    assert buffers_size(buffers) == sum(len(bytes(b)) for b in buffers)


def test_encode_request_joins_small_requests_and_splits_large_ones():
    req = InferRequest("m", [_input("FP32"), _input("BYTES", "S")], request_id="x", model_version="2")
    wire, rest = encode_request(req, 1 << 30)
    assert rest is None and wire == serialize_infer_request(req)
    header, buffers = encode_request(req, 1)  # 1 byte: everything counts as large
    assert (header, [bytes(b) for b in buffers]) == tuple(
        [request_parts(req)[0], [bytes(b) for b in request_parts(req)[1]]]
    )
    assert join_request_parts(header, buffers) == wire
    parsed = decode_infer_request(wire)
    assert parsed.model_version == "2" and parsed.request_id == "x"
    _check(parsed.get_input("X"), "FP32")
    _check(parsed.get_input("S"), "BYTES")


def _general_decode(wire: bytes) -> InferResponse:
    msg = pb.ModelInferResponse.FromString(wire)
    return _response_from_message(msg, msg.raw_output_contents, "m", "test")


def _same_response(a: InferResponse, b: InferResponse) -> None:
    assert (a.model_name, a.model_version, a.id, a.parameters) == (b.model_name, b.model_version, b.id, b.parameters)
    assert [t.name for t in a.outputs] == [t.name for t in b.outputs]
    for x, y in zip(a.outputs, b.outputs):
        assert (x.shape, x.datatype, x.parameters, type(x)) == (y.shape, y.datatype, y.parameters, type(y))
        np.testing.assert_array_equal(x.as_numpy(), y.as_numpy())
        assert x.as_numpy().dtype == y.as_numpy().dtype
        for slot in InferOutput.__mro__[1].__slots__:
            getattr(x, slot)  # every slot assigned on the fast path too


def test_plain_replies_take_the_fast_path_and_match_the_general_one():
    numeric = [dt for dt in NUMERIC]
    resp = InferResponse(
        "m", [_output(dt, f"O{i}") for i, dt in enumerate(numeric)], model_version="3", id="r1", parameters={"p": 1}
    )
    wire = serialize_infer_response(resp)
    msg = pb.ModelInferResponse.FromString(wire)
    assert _plain_response(msg, "m") is not None  # every output numeric, raw, without parameters
    fast = decode_infer_response(wire, model_name="m")
    _same_response(fast, _general_decode(wire))
    assert fast.parameters == {"p": 1} and fast.id == "r1" and fast.model_version == "3"
    for i, dt in enumerate(numeric):
        _check(fast.get_output(f"O{i}"), dt)
        assert fast.as_numpy(f"O{i}") is fast.get_output(f"O{i}").as_numpy()  # the response's shortcut agrees


@pytest.mark.parametrize(
    "case", ["bytes", "bf16", "tensor_parameters", "typed_and_raw", "size_mismatch", "negative_dims", "count"]
)
def test_replies_that_are_not_plain_go_the_general_way(case):
    msg = pb.ModelInferResponse(model_name="m")
    out = msg.outputs.add(name="Y", datatype="INT32", shape=[2])
    raw = np.array([1, 2], np.int32).tobytes()
    if case == "bytes":
        out.datatype, out.shape[:] = "BYTES", [1]
        raw = b"\x02\x00\x00\x00hi"
    elif case == "bf16":
        out.datatype, raw = "BF16", b"\x80\x3f\x00\x40"
    elif case == "tensor_parameters":
        out.parameters["note"].string_param = "x"
    elif case == "typed_and_raw":
        out.contents.int_contents.extend([1, 2])
    elif case == "size_mismatch":
        raw = raw[:4]
    elif case == "negative_dims":
        out.shape[:] = [-1, -2]  # a product of 2 elements: the byte count alone cannot catch it
    msg.raw_output_contents.append(raw)
    if case == "count":
        msg.raw_output_contents.append(raw)
    assert _plain_response(msg, "m") is None
    wire = msg.SerializeToString()
    if case in ("typed_and_raw", "size_mismatch", "negative_dims", "count"):
        with pytest.raises(DecodeError, match="'Y'|raw output contents"):
            decode_infer_response(wire, model_name="m")
        return
    resp = decode_infer_response(wire, model_name="m")
    _same_response(resp, _general_decode(wire))
    if case == "bytes":
        assert resp.as_numpy("Y").tolist() == [b"hi"]
    elif case == "tensor_parameters":
        assert resp.outputs[0].parameters == {"note": "x"}


# -- ReplyReader: the per-model reader with a learned layout -------------------------------------------------------


def _reply(outputs, **kwargs) -> bytes:
    return serialize_infer_response(InferResponse("m", outputs, **kwargs))


def _int_outputs(a, b):
    return [
        InferOutput("OUTPUT0", list(a.shape), "INT32").set_data_from_numpy(a),
        InferOutput("OUTPUT1", list(b.shape), "FP32").set_data_from_numpy(b),
    ]


def test_reply_reader_learns_the_layout_and_reads_later_replies_without_protobuf(monkeypatch):
    reader = ReplyReader("m")
    first = _reply(
        _int_outputs(np.arange(16, dtype=np.int32).reshape(1, 16), np.ones(3, np.float32)),
        model_version="1",
        parameters={"k": "v"},
    )
    _same_response(reader(first), _general_decode(first))
    assert reader._layout is not None
    # From now on the layout serves: protobuf is not called at all.
    no_parse = lambda data: pytest.fail("protobuf parse on a learned layout")  # noqa: E731
    for module in (grpc_reply_reader, grpc_infer_decode):  # the reader's own parse, and the full path's
        monkeypatch.setattr(module, "_RESPONSE_FROM_STRING", no_parse)
    for k in range(3):
        a, b = np.arange(16, dtype=np.int32).reshape(1, 16) * k, np.full(3, k, np.float32)
        wire = _reply(_int_outputs(a, b), model_version="1", parameters={"k": "v"})
        got = reader(wire)
        np.testing.assert_array_equal(got.as_numpy("OUTPUT0"), a)
        np.testing.assert_array_equal(got.as_numpy("OUTPUT1"), b)
        assert got.model_version == "1" and got.parameters == {"k": "v"} and got.id is None
        assert not got.as_numpy("OUTPUT0").flags.writeable  # a view of the received bytes, as on the full path
        got.parameters["x"] = 1  # each response has a dict of its own
    assert reader(wire).parameters == {"k": "v"}


def test_reply_reader_rejects_a_lying_reply_that_keeps_the_header_and_the_length():
    reader = ReplyReader("m")
    a, b = np.arange(16, dtype=np.int32).reshape(1, 16), np.ones(3, np.float32)
    good = _reply(_int_outputs(a, b))
    reader(good)
    # Same header and total length, but the raw contents are split 60 + 16 bytes instead of 64 + 12.
    msg = pb.ModelInferResponse.FromString(good)
    raw0, raw1 = msg.raw_output_contents
    msg.raw_output_contents[:] = [raw0[:60], raw0[60:] + raw1]
    lying = msg.SerializeToString()
    assert len(lying) == len(good) and lying.startswith(reader._layout[1])
    with pytest.raises(DecodeError, match="'OUTPUT0'"):
        reader(lying)
    np.testing.assert_array_equal(reader(good).as_numpy("OUTPUT0"), a)  # still usable


@pytest.mark.parametrize("case", ["id", "shapes_change", "raw_first", "not_plain", "truncated"])
def test_reply_reader_matches_the_full_decode_on_every_other_reply(case):
    reader = ReplyReader("m")
    for k in range(1, 2 * ReplyReader.MAX_MISSES + 3):
        a, b = np.arange(16, dtype=np.int32).reshape(1, 16) + k, np.ones(3, np.float32) * k
        if case == "shapes_change":
            a = np.arange(k, dtype=np.int32).reshape(1, k)
        wire = _reply(_int_outputs(a, b), id=f"r{k}" if case == "id" else None)
        if case == "raw_first":  # a valid message with the raw contents before the outputs
            msg = pb.ModelInferResponse.FromString(wire)
            raws = pb.ModelInferResponse(raw_output_contents=list(msg.raw_output_contents)).SerializeToString()
            del msg.raw_output_contents[:]
            wire = raws + msg.SerializeToString()
        if case == "not_plain":
            wire = _reply([*_int_outputs(a, b), _output("BYTES", "S")])
        if case == "truncated":
            reader(_reply(_int_outputs(a, b)))
            with pytest.raises(DecodeError):
                reader(wire[:-3])
            continue
        got = reader(wire)
        _same_response(got, _general_decode(wire))
        np.testing.assert_array_equal(got.as_numpy("OUTPUT0"), a)
        if case == "id":
            assert got.id == f"r{k}" and reader._layout is None
        if case in ("raw_first", "not_plain"):
            assert reader._layout is None
    if case == "shapes_change":
        assert reader._misses == ReplyReader.MAX_MISSES  # stopped learning
