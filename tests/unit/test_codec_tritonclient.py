"""Wire compatibility with the tritonclient wheel (used only as a reference implementation in tests).

Request bodies built by tritonclient's public ``InferenceServerClient.generate_request_body`` must decode with our
server side, and response bodies from our server side must parse with its ``parse_response_body``, for every
datatype, JSON and binary. Documented differences accounted for below: tritonclient >= 2.6x takes and returns BF16
as ``ml_dtypes.bfloat16`` (older versions used float32), and returns JSON BYTES as ``str`` (we return bytes, or
str with ``as_str=True``).
"""

from __future__ import annotations

from importlib.metadata import version

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferkit.codec import rest_v2
from inferkit.codec.tensors import InferOutput, InferRequestedOutput, InferResponse

th = pytest.importorskip("tritonclient.http")
tc_utils = pytest.importorskip("tritonclient.utils")

NUMERIC = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _sample(datatype: str, shape=(2, 3)) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(datatype)) % 2**32)
    n = int(np.prod(shape))
    if datatype == "BYTES":
        return np.array([f"s{i}-é".encode() * (i % 3) for i in range(n)], dtype=object).reshape(shape)
    if datatype == "BF16":
        return rng.normal(size=shape).astype(ml_dtypes.bfloat16)
    dtype = np.dtype(NUMERIC[datatype])
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


# tritonclient before 2.6x has BF16 as float32 arrays (it rounds them itself) and no bfloat16 arrays to compare.
_TC_BF16 = np.dtype(tc_utils.triton_to_np_dtype("BF16"))
needs_tc_bfloat16 = pytest.mark.skipif(
    _TC_BF16 != np.dtype(ml_dtypes.bfloat16),
    reason=f"tritonclient {version('tritonclient')} has BF16 as {_TC_BF16} arrays, not ml_dtypes.bfloat16",
)
ALL = [*NUMERIC, pytest.param("BF16", marks=needs_tc_bfloat16), "BYTES"]


def _json_capable(datatype: str) -> bool:
    return datatype != "BF16"


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", ALL)
def test_tritonclient_request_decodes_on_our_server_side(datatype, binary):
    arr = _sample(datatype)
    binary = binary or not _json_capable(datatype)
    tin = th.InferInput("INPUT0", list(arr.shape), datatype)
    tin.set_data_from_numpy(arr, binary_data=binary)
    other = th.InferInput("INPUT1", [2], "INT32")
    other.set_data_from_numpy(np.array([7, -7], np.int32), binary_data=not binary)
    outputs = [th.InferRequestedOutput("OUT0", binary_data=True), th.InferRequestedOutput("OUT1", class_count=2)]
    body, json_size = th.InferenceServerClient.generate_request_body(
        [tin, other],
        outputs=outputs,
        request_id="req-1",
        parameters={"custom": "yes", "n": 3},
    )
    req = rest_v2.decode_infer_request(body, json_size, model_name="m")
    assert req.request_id == "req-1"
    assert req.parameters == {"custom": "yes", "n": 3}
    assert [(o.name, o.binary_data, o.class_count) for o in req.outputs or []] == [
        ("OUT0", True, 0),
        ("OUT1", True, 2),  # tritonclient asks for binary by default
    ]
    got = req.as_numpy("INPUT0")
    assert got.shape == arr.shape and got.dtype == arr.dtype
    assert got.tobytes() == arr.tobytes() if datatype != "BYTES" else list(got.ravel()) == list(arr.ravel())
    assert req.as_numpy("INPUT1").tolist() == [7, -7]


def test_tritonclient_sequence_and_priority_parameters_arrive():
    tin = th.InferInput("X", [1], "FP32")
    tin.set_data_from_numpy(np.ones(1, np.float32))
    body, json_size = th.InferenceServerClient.generate_request_body(
        [tin], sequence_id=42, sequence_start=True, sequence_end=False, priority=3, timeout=1000
    )
    req = rest_v2.decode_infer_request(body, json_size, model_name="m")
    assert req.parameters["sequence_id"] == 42 and req.parameters["sequence_start"] is True
    assert req.parameters["priority"] == 3 and req.parameters["timeout"] == 1000
    assert req.is_sequence


def _triton_parse(outputs: list[InferOutput], binary: bool):
    encoded = rest_v2.encode_infer_response(
        InferResponse("m", outputs, model_version="1", id="r-9", parameters={"p": 1.5}), binary_output=binary
    )
    return th.InferenceServerClient.parse_response_body(encoded.body, header_length=encoded.json_size)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("datatype", ALL)
def test_our_response_parses_with_tritonclient(datatype, binary):
    arr = _sample(datatype)
    outputs = [
        InferOutput("OUT", arr.shape, datatype).set_data_from_numpy(arr),
        InferOutput("EXTRA", [3], "FP64").set_data_from_numpy(np.array([1.0, 2.5, -3.0])),
    ]
    result = _triton_parse(outputs, binary)
    response = result.get_response()
    assert response["model_name"] == "m" and response["id"] == "r-9" and response["parameters"] == {"p": 1.5}
    theirs = result.as_numpy("OUT")
    ours = rest_v2.decode_infer_response(
        *_encoded(outputs, binary),
    ).as_numpy("OUT")
    assert theirs.shape == ours.shape == arr.shape
    if datatype == "BYTES":
        expected = list(arr.ravel())
        if binary:
            assert list(theirs.ravel()) == expected
        else:  # tritonclient returns JSON BYTES as str
            assert [x.encode() for x in theirs.ravel()] == expected
        assert list(ours.ravel()) == expected
    else:
        assert theirs.dtype == ours.dtype == arr.dtype
        assert theirs.tobytes() == ours.tobytes() == arr.tobytes()
    assert result.as_numpy("EXTRA").tolist() == [1.0, 2.5, -3.0]


def _encoded(outputs, binary):
    e = rest_v2.encode_infer_response(
        InferResponse("m", outputs, model_version="1", id="r-9", parameters={"p": 1.5}), binary_output=binary
    )
    return e.body, e.json_size


@needs_tc_bfloat16
def test_bf16_from_float32_parses_as_the_rounded_values_in_tritonclient():
    values = np.array([1.0, -2.5, 1.01171875, np.inf], np.float32)
    result = _triton_parse([InferOutput("Y", [4], "BF16").set_data_from_numpy(values)], binary=False)
    assert result.as_numpy("Y").tobytes() == values.astype(ml_dtypes.bfloat16).tobytes()


def test_requested_outputs_choose_binary_per_output_as_tritonclient_expects():
    a = np.arange(4, dtype=np.int32)
    outs = [
        InferOutput("A", [4], "INT32").set_data_from_numpy(a),
        InferOutput("B", [4], "INT32").set_data_from_numpy(a),
    ]
    tout = [th.InferRequestedOutput("A", binary_data=True), th.InferRequestedOutput("B", binary_data=False)]
    tin = th.InferInput("X", [1], "INT8")
    tin.set_data_from_numpy(np.zeros(1, np.int8))
    body, json_size = th.InferenceServerClient.generate_request_body([tin], outputs=tout)
    requested = rest_v2.decode_infer_request(body, json_size, model_name="m").outputs
    encoded = rest_v2.encode_infer_response(InferResponse("m", outs), requested=requested)
    assert encoded.body.count(b"binary_data_size") == 1
    result = th.InferenceServerClient.parse_response_body(encoded.body, header_length=encoded.json_size)
    assert result.as_numpy("A").tolist() == result.as_numpy("B").tolist() == [0, 1, 2, 3]


@st.composite
def arrays(draw):
    datatype = draw(st.sampled_from(list(NUMERIC)))
    dtype = np.dtype(NUMERIC[datatype])
    elements = st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False) if dtype.kind == "f" else None
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=50, deadline=None)
@given(arrays(), st.booleans())
def test_property_tritonclient_to_us_and_back(case, binary):
    datatype, arr = case
    tin = th.InferInput("X", list(arr.shape), datatype)
    tin.set_data_from_numpy(arr, binary_data=binary)
    body, json_size = th.InferenceServerClient.generate_request_body([tin])
    got = rest_v2.decode_infer_request(body, json_size, model_name="m").as_numpy("X")
    assert got.dtype == arr.dtype and np.array_equal(got, arr)
    result = _triton_parse([InferOutput("Y", arr.shape, datatype).set_data_from_numpy(got)], binary)
    assert np.array_equal(result.as_numpy("Y"), arr)


def test_our_requested_outputs_are_understood_like_tritonclients():
    # the request-side parameters we send match the names tritonclient uses
    tout = th.InferRequestedOutput("O", binary_data=True, class_count=3)
    ours = InferRequestedOutput("O", binary_data=True, class_count=3)
    assert tout._get_tensor()["parameters"] == {**ours.wire_parameters(), "binary_data": True}
