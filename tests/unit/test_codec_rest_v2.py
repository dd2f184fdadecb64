"""inferkit.codec.rest_v2: v2 REST bodies in both directions, JSON and binary, golden bytes and every bad input."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferkit.codec import _json, rest_v2
from inferkit.codec.tensors import InferInput, InferOutput, InferRequest, InferRequestedOutput, InferResponse
from inferkit.errors import DecodeError, EncodeError

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
JSON_ABLE = [k for k in NUMERIC if k != "FP16"]  # FP16 is binary in practice; it does go through JSON too


def _request(*inputs: InferInput, **kwargs) -> InferRequest:
    return InferRequest("m", list(inputs), **kwargs)


def _input(name: str, arr: np.ndarray, datatype: str, binary: bool = True) -> InferInput:
    return InferInput(name, list(arr.shape), datatype).set_data_from_numpy(arr, binary_data=binary)  # type: ignore[return-value]


def _server_round_trip(request: InferRequest, binary: bool) -> InferRequest:
    body = rest_v2.encode_infer_request(request, binary=binary)
    return rest_v2.decode_infer_request(body.body, body.json_size, model_name="m")


def _client_round_trip(outputs: list[InferOutput], binary: bool) -> InferResponse:
    body = rest_v2.encode_infer_response(InferResponse("m", outputs, "1", "id-1"), binary_output=binary)
    return rest_v2.decode_infer_response(body.body, body.headers.get(rest_v2.HEADER_LENGTH), model_name="m")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


# -- hypothesis round trips, every datatype, both directions, JSON and binary -----------------------------------
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def numeric_arrays(draw, finite: bool):
    datatype = draw(st.sampled_from(list(NUMERIC)))
    dtype = np.dtype(NUMERIC[datatype])
    if draw(st.booleans()) and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">")
    elements = (
        st.floats(width=dtype.itemsize * 8, allow_nan=not finite, allow_infinity=not finite)
        if dtype.kind == "f"
        else None
    )
    arr = draw(hnp.arrays(dtype, draws_shape := draw(shapes), elements=elements))
    if draw(st.booleans()) and arr.ndim >= 2:  # non-contiguous input
        arr = arr.T
    elif draw(st.booleans()) and arr.ndim == 1 and len(draws_shape):
        arr = np.concatenate([arr, arr])[::2]
    return datatype, arr


@settings(max_examples=80, deadline=None)
@given(numeric_arrays(finite=False), st.booleans())
def test_numeric_binary_round_trips_both_directions(case, to_server):
    datatype, arr = case
    expected = arr.astype(arr.dtype.newbyteorder("<"))
    if to_server:
        got = _server_round_trip(_request(_input("x", arr, datatype)), binary=True).as_numpy("x")
    else:
        got = _client_round_trip([InferOutput("y", arr.shape, datatype).set_data_from_numpy(arr)], True).as_numpy("y")
    assert _same(got, expected)
    assert not got.flags.writeable  # a zero-copy view of the received body


@settings(max_examples=80, deadline=None)
@given(numeric_arrays(finite=True), st.booleans())
def test_numeric_json_round_trips_both_directions(case, to_server):
    datatype, arr = case
    expected = arr.astype(arr.dtype.newbyteorder("<"))
    if to_server:
        got = _server_round_trip(_request(_input("x", arr, datatype, binary=False)), binary=True).as_numpy("x")
    else:
        got = _client_round_trip([InferOutput("y", arr.shape, datatype).set_data_from_numpy(arr)], False).as_numpy("y")
    assert _same(got, expected)


@st.composite
def bytes_arrays(draw):
    kind = draw(st.sampled_from(["object-bytes", "object-str", "S", "U"]))
    shape = draw(shapes)
    size = int(np.prod(shape))
    if kind in ("object-bytes", "S"):
        items = draw(st.lists(st.binary(max_size=10), min_size=size, max_size=size))
        if kind == "S":
            items = [x.rstrip(b"\0") for x in items]  # numpy S drops trailing NULs anyway
    else:
        items = draw(st.lists(st.text(max_size=8), min_size=size, max_size=size))
        if kind == "U":
            items = [x.rstrip("\0") for x in items]
    arr = np.empty(size, dtype=object)
    arr[:] = items
    arr = arr.reshape(shape)
    if kind in ("S", "U"):
        arr = arr.astype("S" if kind == "S" else "U") if size else np.empty(shape, "S1" if kind == "S" else "U1")
    if draw(st.booleans()) and arr.ndim >= 2:
        arr = arr.T
    return kind, arr


def _as_bytes(value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@settings(max_examples=80, deadline=None)
@given(bytes_arrays(), st.booleans(), st.booleans())
def test_bytes_round_trips_both_directions(case, to_server, binary):
    kind, arr = case
    text = kind in ("object-str", "U")
    if not binary and not text:
        try:
            [_as_bytes(x).decode() for x in arr.reshape(-1)]
        except UnicodeDecodeError:
            return  # not UTF-8: JSON cannot carry it (tested separately)
    expected = np.empty(arr.shape, dtype=object)
    expected.reshape(-1)[:] = [_as_bytes(x) for x in arr.reshape(-1)] if arr.size else []
    if to_server:
        got_tensor = _server_round_trip(_request(_input("x", arr, "BYTES", binary)), binary=True).inputs[0]
    else:
        out = InferOutput("y", arr.shape, "BYTES").set_data_from_numpy(arr)
        got_tensor = _client_round_trip([out], binary).outputs[0]
    got = got_tensor.as_numpy()
    assert got.dtype == object and got.shape == arr.shape
    assert [x for x in got.reshape(-1)] == list(expected.reshape(-1))
    if text:
        strs = got_tensor.as_numpy(as_str=True)
        assert list(strs.reshape(-1)) == [x.decode() for x in expected.reshape(-1)]


@pytest.mark.parametrize("source", ["ml_dtypes", "float32", "float64"])
@pytest.mark.parametrize("to_server", [True, False])
def test_bf16_round_trips_as_binary_even_when_json_is_asked(source, to_server):
    values = np.array([[1.0, -2.5, 3.140625], [np.inf, -0.0, 65280.0]], np.float32)
    arr = values.astype(ml_dtypes.bfloat16) if source == "ml_dtypes" else values.astype(source)
    if to_server:
        tensor = _server_round_trip(_request(_input("x", arr, "BF16", binary=False)), binary=False).inputs[0]
    else:
        tensor = _client_round_trip([InferOutput("y", arr.shape, "BF16").set_data_from_numpy(arr)], False).outputs[0]
    assert tensor.as_numpy().dtype == np.dtype(ml_dtypes.bfloat16)
    assert tensor.as_numpy().tobytes() == values.astype(ml_dtypes.bfloat16).tobytes()
    assert _same(tensor.as_numpy(np.float32), values)


def test_decoded_binary_output_is_a_view_of_the_body_and_cached():
    arr = np.arange(1024, dtype=np.float32).reshape(4, 256)
    body = rest_v2.encode_infer_response(
        InferResponse("m", [InferOutput("a", arr.shape, "FP32").set_data_from_numpy(arr)] * 1), binary_output=True
    )
    buffer = bytearray(body.body)
    resp = rest_v2.decode_infer_response(buffer, body.json_size)
    out = resp.as_numpy("a")
    assert np.shares_memory(out, np.frombuffer(buffer, np.uint8))
    assert resp.as_numpy("a") is out


def test_two_binary_outputs_each_view_their_own_slice():
    a = np.arange(3, dtype=np.int32)
    b = np.arange(5, dtype=np.int64) * 7
    outs = [
        InferOutput("a", [3], "INT32").set_data_from_numpy(a),
        InferOutput("b", [5], "INT64").set_data_from_numpy(b),
    ]
    resp = _client_round_trip(outs, True)
    assert _same(resp.as_numpy("a"), a) and _same(resp.as_numpy("b"), b)


def test_mixed_binary_and_json_inputs_and_requested_outputs_survive_the_server_decode():
    req = _request(
        _input("a", np.arange(4, dtype=np.int32), "INT32", binary=True),
        _input("b", np.array([b"x", b"yz"], dtype=object), "BYTES", binary=False),
        _input("c", np.ones((2, 2), np.float16), "FP16", binary=True),
        request_id="r1",
        parameters={"tag": "t", "scale": 0.5},
        sequence_id=7,
        sequence_start=True,
        priority=1,
        outputs=[InferRequestedOutput("o1"), InferRequestedOutput("o2", binary_data=False, class_count=3)],
    )
    got = _server_round_trip(req, binary=True)
    assert got.request_id == "r1"
    assert got.parameters == {
        "tag": "t",
        "scale": 0.5,
        "sequence_id": 7,
        "sequence_start": True,
        "sequence_end": False,
        "priority": 1,
    }
    assert got.is_sequence
    assert [(o.name, o.binary_data, o.class_count) for o in got.outputs or []] == [("o1", True, 0), ("o2", False, 3)]
    assert [t.binary_data for t in got.inputs] == [True, False, True]
    assert list(got.as_numpy("b")) == [b"x", b"yz"]


# -- golden vectors ---------------------------------------------------------------------------------------------
def test_golden_binary_request_body():
    req = _request(
        _input("INPUT0", np.array([[1, 2]], dtype=np.int32), "INT32"),
        _input("TEXT", np.array([b"ab", "é"], dtype=object), "BYTES"),
        request_id="7",
        outputs=[InferRequestedOutput("OUT", binary_data=True)],
    )
    body = rest_v2.encode_infer_request(req)
    header = (
        b'{"id":"7","outputs":[{"name":"OUT","parameters":{"binary_data":true}}],"inputs":['
        b'{"name":"INPUT0","shape":[1,2],"datatype":"INT32","parameters":{"binary_data_size":8}},'
        b'{"name":"TEXT","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":12}}]}'
    )
    assert body.body == header + b"\x01\0\0\0\x02\0\0\0" + b"\x02\0\0\0ab" + b"\x02\0\0\0\xc3\xa9"
    assert body.json_size == len(header)
    assert body.headers == {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def test_golden_json_request_body():
    req = _request(
        _input("X", np.array([[1.5, -2.0]], np.float32), "FP32", binary=False),
        _input("B", np.array([True, False]), "BOOL", binary=False),
        _input("S", np.array(["hi"]), "BYTES", binary=False),
    )
    body = rest_v2.encode_infer_request(req, binary=False)
    assert body.body == (
        b'{"inputs":[{"name":"X","shape":[1,2],"datatype":"FP32","data":[1.5,-2.0]},'
        b'{"name":"B","shape":[2],"datatype":"BOOL","data":[true,false]},'
        b'{"name":"S","shape":[1],"datatype":"BYTES","data":["hi"]}]}'
    )
    assert body.headers == {"Content-Type": "application/json"} and body.json_size is None


def test_golden_binary_response_with_bf16_bits():
    out = InferOutput("Y", [3], "BF16").set_data_from_numpy(np.array([1.0, -2.5, 1.01171875], np.float32))
    body = rest_v2.encode_infer_response(InferResponse("m", [out], model_version="2", id="x"))
    header = (
        b'{"model_name":"m","model_version":"2","id":"x","outputs":['
        b'{"name":"Y","shape":[3],"datatype":"BF16","parameters":{"binary_data_size":6}}]}'
    )
    assert body.body == header + b"\x80\x3f\x20\xc0\x82\x3f"


def test_golden_triton_style_response_decodes():
    header = (
        b'{"model_name":"simple","model_version":"1","outputs":['
        b'{"name":"OUTPUT0","datatype":"INT32","shape":[1,2],"parameters":{"binary_data_size":8}},'
        b'{"name":"OUTPUT1","datatype":"BYTES","shape":[1],"data":["a b"]}]}'
    )
    resp = rest_v2.decode_infer_response(header + b"\x05\0\0\0\xfb\xff\xff\xff", str(len(header)))
    assert resp.model_name == "simple" and resp.model_version == "1"
    assert resp.as_numpy("OUTPUT0").tolist() == [[5, -5]]
    assert list(resp.as_numpy("OUTPUT1")) == [b"a b"] and list(resp.as_numpy("OUTPUT1", as_str=True)) == ["a b"]
    nested = b'{"outputs":[{"name":"o","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]}]}'
    assert rest_v2.decode_infer_response(nested).as_numpy("o").tolist() == [[1, 2], [3, 4]]


def test_request_without_named_outputs_asks_for_all_binary_only_when_binary():
    req = _request(_input("x", np.zeros(1, np.int8), "INT8"))
    assert b'"binary_data_output":true' in rest_v2.encode_infer_request(req).body
    assert b"binary_data" not in rest_v2.encode_infer_request(req, binary=False).body


def test_encoded_body_is_built_once_and_reusable():
    req = _request(_input("x", np.arange(3, dtype=np.int64), "INT64"))
    a = rest_v2.encode_infer_request(req)
    b = rest_v2.encode_infer_request(req)
    assert a.body == b.body and a.content_length == len(a.body)


# -- encode errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: InferInput("x", [2], "FP32").set_data_from_numpy(np.zeros(3, np.float32)),
            r"tensor 'x'.*shape \[3\].*\[2\]",
        ),
        (
            lambda: InferInput("x", [2], "FP32").set_data_from_numpy(np.zeros(2, np.float64)),
            r"tensor 'x'.*FP32.*float64",
        ),
        (lambda: InferInput("x", [2], "BYTES").set_data_from_numpy(np.zeros(2, np.int32)), r"tensor 'x'.*BYTES needs"),
        (lambda: InferInput("x", [2], "FP32").set_data_from_numpy([1.0, 2.0]), r"tensor 'x'.*needs a numpy array"),
        (lambda: InferInput("x", [2], "FLOAT"), r"unknown datatype 'FLOAT'"),
        (lambda: InferInput("x", [-1, 2], "FP32"), r"tensor 'x'.*negative dimension"),
        (lambda: InferInput("x", [1.5], "FP32"), r"tensor 'x'.*non-integer dimension"),
        (lambda: InferInput("x", "12", "FP32"), r"tensor 'x'.*shape must be a list"),
        (lambda: InferInput("", [1], "FP32"), r"tensor name must be a non-empty string"),
        (lambda: InferInput("x", [1], "FP32", parameters={"a": [1]}), r"tensor 'x'.*parameter 'a' has a list value"),
        (lambda: InferInput("x", [1], "FP32", parameters={1: 2}), r"tensor 'x'.*parameter name 1"),
        (lambda: InferInput("x", [1], "FP32", parameters=[1]), r"tensor 'x'.*parameters must be a mapping"),
        (lambda: InferInput("x", [3], "INT32").set_data_from_list([1, 2]), r"tensor 'x'.*2 elements.*needs 3"),
        (lambda: InferInput("x", [2], "INT32").set_data_from_list([1, 2.5]), r"tensor 'x'.*must contain integers"),
        (lambda: InferInput("x", [1], "INT8").set_data_from_list([300]), r"tensor 'x'.*out of range for INT8"),
        (lambda: InferInput("x", [2], "BOOL").set_data_from_list([1, 0]), r"tensor 'x'.*true/false"),
        (lambda: InferInput("x", [1], "BYTES").set_data_from_list([1]), r"tensor 'x'.*must be strings"),
        (lambda: InferInput("x", [1], "BF16").set_data_from_list([1.0]), r"tensor 'x'.*BF16 has no JSON form"),
        (lambda: InferInput("x", [2], "FP32").set_raw_data(b"123"), r"tensor 'x'.*3 raw bytes"),
        (lambda: InferRequest("m", []) and rest_v2.encode_infer_request(InferRequest("m", [])), r"at least one input"),
        (lambda: rest_v2.encode_infer_request(_request(InferInput("x", [1], "FP32"))), r"tensor 'x' has no data"),
        (lambda: InferRequest("m", [InferInput("x", [1], "FP32"), InferInput("x", [1], "FP32")]), r"duplicate input"),
        (lambda: InferRequest("", []), r"model_name must be a non-empty string"),
        (lambda: InferRequest("m", [], request_id=5), r"model 'm': request_id must be a string"),
        (lambda: InferRequest("m", [], parameters={"p": None}), r"model 'm' request: parameter 'p'"),
        (lambda: InferRequestedOutput("o", class_count=-1), r"requested output 'o'"),
        (
            lambda: rest_v2.encode_infer_request(_request(_input("x", np.zeros(1, np.int8), "INT8"), outputs=["o"])),
            r"outputs must be InferRequestedOutput",
        ),
    ],
)
def test_encode_errors_name_the_tensor_and_problem(build, message):
    with pytest.raises(EncodeError, match=message):
        build()


def test_json_encode_refuses_what_json_cannot_carry():
    nan = _input("x", np.array([np.nan], np.float32), "FP32", binary=False)
    with pytest.raises(EncodeError, match=r"tensor 'x'.*NaN or Inf"):
        rest_v2.encode_infer_request(_request(nan), binary=False)
    bad = _input("b", np.array([b"\xff"], dtype=object), "BYTES", binary=False)
    with pytest.raises(EncodeError, match=r"tensor 'b'.*not valid UTF-8"):
        rest_v2.encode_infer_request(_request(bad), binary=False)
    # the same tensors travel fine as binary
    nan.set_data_from_numpy(np.array([np.nan], np.float32), binary_data=True)
    bad.set_data_from_numpy(np.array([b"\xff"], dtype=object), binary_data=True)
    assert rest_v2.encode_infer_request(_request(nan, bad)).json_size


# -- decode errors ------------------------------------------------------------------------------------------------
def _body(tensors: list[dict], data: bytes = b"", key: str = "outputs", **extra) -> tuple[bytes, int]:
    header = json.dumps({**extra, key: tensors}).encode()
    return header + data, len(header)


def _bin(name: str, shape, datatype: str, size) -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}


def _decode_both(body: bytes, length, as_str: bool = False) -> None:
    """Decode as a response and as a request, touching every tensor's data."""
    resp = rest_v2.decode_infer_response(body.replace(b'"inputs"', b'"outputs"'), length, model_name="m")
    for out in resp.outputs:
        out.as_numpy(as_str=as_str)


BAD_BODIES = [
    # (tensors, trailing binary data, header length (None: computed), expected message)
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", -1, r"header is -1 bytes"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", 0, r"header is 0 bytes"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", 10**6, r"header is 1000000 bytes but the body has"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", "12abc", r"not a non-negative integer: '12abc'"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", "1e3", r"not a non-negative integer"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", "9" * 40, r"not a non-negative integer"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", "-5", r"not a non-negative integer"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", 1.5, r"must be an integer, got float"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0", 40, r"not valid JSON"),  # header cut short
    (
        [_bin("o", [2], "INT32", 8)],
        b"\1\0\0\0\2\0\0\0",
        None,
        r"not valid JSON.*no Inference-Header-Content-Length was given",
    ),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0", "auto", r"tensor 'o' declares 8 binary bytes.*only 6 remain"),
    ([_bin("o", [2], "INT32", 8)], b"\1\0\0\0\2\0\0\0\0", "auto", r"1 bytes after the last binary output"),
    (
        [_bin("o", [2], "INT32", 4)],
        b"\1\0\0\0",
        "auto",
        r"tensor 'o' has shape \[2\] of INT32 \(8 bytes\) but binary_data_size 4",
    ),
    ([_bin("o", [2], "INT32", -8)], b"", "auto", r"tensor 'o' has an invalid binary_data_size -8"),
    ([_bin("o", [2], "INT32", "8")], b"", "auto", r"tensor 'o' has an invalid binary_data_size '8'"),
    ([_bin("o", [2], "INT32", True)], b"", "auto", r"tensor 'o' has an invalid binary_data_size True"),
    ([_bin("o", [2], "INT32", 8.0)], b"", "auto", r"tensor 'o' has an invalid binary_data_size 8.0"),
    (
        [_bin("o", [2], "INT32", 2**70)],
        b"",
        "auto",
        r"tensor 'o' (declares \d+ binary bytes|has an invalid binary_data_size)",
    ),
    ([_bin("o", [10**12, 10**12], "FP32", 4)], b"abcd", "auto", r"tensor 'o' has shape .* but binary_data_size 4"),
    ([_bin("a", [1], "INT8", 1), _bin("b", [1], "INT8", 2)], b"\1\2", "auto", r"tensor 'b' declares 2 binary bytes"),
    ([_bin("o", [2], "BYTES", 4)], b"\5\0\0\0", "auto", r"tensor 'o': 2 BYTES elements need at least 8 bytes"),
    ([_bin("o", [1], "BYTES", 6)], b"\5\0\0\0ab", "auto", r"tensor 'o': BYTES element 0 declares 5 bytes but only 2"),
    ([_bin("o", [1], "BYTES", 7)], b"\1\0\0\0abc", "auto", r"tensor 'o': 2 bytes left over after 1 BYTES elements"),
    ([_bin("o", [2], "BYTES", 7)], b"\1\0\0\0a\0\0", "auto", r"tensor 'o'.*(length prefix|at least)"),
    (
        [{"name": "o", "shape": [2], "datatype": "INT32", "data": [1]}],
        b"",
        None,
        r"tensor 'o': data has 1 elements but shape \[2\] needs 2",
    ),
    (
        [{"name": "o", "shape": [2], "datatype": "INT32", "data": [1, "2"]}],
        b"",
        None,
        r"tensor 'o': INT32 data must contain integers, found strings",
    ),
    (
        [{"name": "o", "shape": [2], "datatype": "INT32", "data": [1, [2]]}],
        b"",
        None,
        r"tensor 'o': data is not a regular list",
    ),
    (
        [{"name": "o", "shape": [2], "datatype": "FP32", "data": {"a": 1}}],
        b"",
        None,
        r"tensor 'o': data must be a list",
    ),
    ([{"name": "o", "shape": [2], "datatype": "FP32", "data": "12"}], b"", None, r"tensor 'o': data must be a list"),
    ([{"name": "o", "shape": [1], "datatype": "BF16", "data": [1.0]}], b"", None, r"tensor 'o': BF16 has no JSON form"),
    (
        [{"name": "o", "shape": [1], "datatype": "BYTES", "data": [None]}],
        b"",
        None,
        r"tensor 'o': BYTES JSON data must be strings",
    ),
    ([{"name": "o", "shape": [1], "datatype": "FLOAT", "data": [1]}], b"", None, r"unknown datatype 'FLOAT'"),
    ([{"name": "o", "shape": [1], "datatype": 5, "data": [1]}], b"", None, r"unknown datatype 5"),
    ([{"name": "o", "shape": "1", "datatype": "FP32", "data": [1]}], b"", None, r"tensor 'o': shape must be a list"),
    ([{"name": "o", "shape": [-1], "datatype": "FP32", "data": [1]}], b"", None, r"tensor 'o'.*negative dimension"),
    (
        [{"name": "o", "shape": [True], "datatype": "FP32", "data": [1]}],
        b"",
        None,
        r"tensor 'o'.*non-integer dimension",
    ),
    ([{"name": "o", "datatype": "FP32", "data": [1]}], b"", None, r"tensor 'o' lacks its shape or datatype"),
    ([{"name": "o", "shape": [1], "data": [1]}], b"", None, r"unknown datatype ''|tensor 'o' lacks"),
    ([{"name": "o", "shape": [1], "datatype": "FP32"}], b"", None, r"tensor 'o' has neither data nor binary_data_size"),
    ([{"shape": [1], "datatype": "FP32", "data": [1]}], b"", None, r"outputs\[0\] has no name"),
    ([{"name": 3, "shape": [1], "datatype": "FP32", "data": [1]}], b"", None, r"outputs\[0\] has no name"),
    (["o"], b"", None, r"outputs\[0\] is not an object"),
    (
        [{"name": "o", "shape": [1], "datatype": "FP32", "data": [1], "parameters": [1]}],
        b"",
        None,
        r"tensor 'o': parameters must be a mapping",
    ),
    (
        [{"name": "o", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"p": {}}}],
        b"",
        None,
        r"tensor 'o': parameter 'p' has a dict",
    ),
]


@pytest.mark.parametrize(("tensors", "data", "length", "message"), BAD_BODIES)
def test_bad_response_bodies_raise_decode_errors_naming_the_problem(tensors, data, length, message):
    body, header_len = _body(tensors, data)
    length = header_len if length == "auto" else length
    with pytest.raises(DecodeError, match=message):
        _decode_both(body, length)


@pytest.mark.parametrize(("tensors", "data", "length", "message"), BAD_BODIES)
def test_bad_request_bodies_raise_decode_errors_on_the_server_side(tensors, data, length, message):
    body, header_len = _body(tensors, data, key="inputs")
    length = header_len if length == "auto" else length
    with pytest.raises(DecodeError, match=message.replace("outputs", "inputs").replace("output", "input")):
        req = rest_v2.decode_infer_request(body, length, model_name="m")
        for tensor in req.inputs:
            tensor.as_numpy()


def test_invalid_utf8_with_as_str_names_the_tensor():
    body, length = _body([_bin("o", [2], "BYTES", 10)], b"\1\0\0\0a\1\0\0\0\xff")
    resp = rest_v2.decode_infer_response(body, length)
    assert list(resp.as_numpy("o")) == [b"a", b"\xff"]
    with pytest.raises(DecodeError, match=r"tensor 'o'.*not valid UTF-8"):
        resp.as_numpy("o", as_str=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"infer response JSON is not valid JSON"),
        (b"{", r"not valid JSON"),
        (b'{"outputs": [}', r"not valid JSON"),
        (b"\xff\xfe{}", r"not valid JSON"),
        (b"[1]", r"JSON body must be an object, got list"),
        (b"null", r"JSON body must be an object, got NoneType"),
        (b'{"outputs": {}}', r"'outputs' must be a list, got dict"),
        (b'{"outputs": [], "parameters": 5}', r"parameters must be a mapping"),
        (b'{"outputs": [], "parameters": {"a": null}}', r"parameter 'a' has a NoneType"),
        (b'{"outputs": [], "id": [1]}', r"'id' must be a string"),
        (b'{"outputs": [], "model_version": {}}', r"'model_version' must be a string"),
        (b"[" * 100_000 + b"]" * 100_000, r"(nested too deeply|not valid JSON)"),
        (b'{"outputs":' + b"[" * 5000 + b"]" * 5000 + b"}", r"(nested too deeply|not valid JSON)"),
    ],
)
def test_malformed_or_wrongly_typed_response_json(body, message):
    with pytest.raises(DecodeError, match=message):
        rest_v2.decode_infer_response(body)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({}, r"request for model 'm': no 'inputs'"),
        ({"inputs": {}}, r"'inputs' must be a list"),
        ({"inputs": [], "outputs": {}}, r"'outputs' must be a list"),
        ({"inputs": [], "outputs": [{"parameters": {}}]}, r"every requested output needs a name"),
        (
            {"inputs": [], "outputs": [{"name": "o", "parameters": {"classification": -1}}]},
            r"output 'o': classification",
        ),
        (
            {"inputs": [], "outputs": [{"name": "o", "parameters": {"classification": "3"}}]},
            r"output 'o': classification",
        ),
        ({"inputs": [], "outputs": [{"name": "o", "parameters": []}]}, r"parameters must be a mapping"),
        ({"inputs": [], "id": 5}, r"'id' must be a string"),
        ({"inputs": [], "parameters": {"sequence_id": [1]}}, r"parameter 'sequence_id' has a list"),
    ],
)
def test_malformed_request_json(header, message):
    with pytest.raises(DecodeError, match=message):
        rest_v2.decode_infer_request(json.dumps(header).encode(), None, model_name="m")


def test_deep_nesting_inside_bytes_data_is_refused():
    data = "[" * 100 + '"a"' + "]" * 100
    body = ('{"outputs":[{"name":"o","shape":[1],"datatype":"BYTES","data":' + data + "}]}").encode()
    with pytest.raises(DecodeError, match=r"tensor 'o': BYTES data is nested more than 64 levels"):
        rest_v2.decode_infer_response(body).as_numpy("o")


def test_stdlib_json_backend_gives_the_same_bodies_and_errors(monkeypatch):
    req = _request(_input("x", np.array([1.5, 2], np.float32), "FP32", binary=False))
    fast = rest_v2.encode_infer_request(req, binary=False).body
    monkeypatch.setattr(_json, "_dumps", None)
    monkeypatch.setattr(_json, "_loads", None)
    monkeypatch.setattr(_json, "_backend", "")
    import builtins

    real_import = builtins.__import__

    def no_orjson(name, *args, **kwargs):
        if name == "orjson":
            raise ImportError("no orjson")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_orjson)
    assert _json.backend() == "json"
    assert json.loads(rest_v2.encode_infer_request(req, binary=False).body) == json.loads(fast)
    assert _server_round_trip(req, binary=False).as_numpy("x").tolist() == [1.5, 2.0]
    with pytest.raises(DecodeError, match="nested too deeply|not valid JSON"):
        rest_v2.decode_infer_response(b"[" * 100_000)
    with pytest.raises(DecodeError, match="not valid JSON"):
        rest_v2.decode_infer_response(b"\xff")
    monkeypatch.undo()
    _json._dumps = _json._loads = None
    _json._backend = ""


# -- error bodies and capabilities --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": "model not found"}', "model not found"),
        (b'{"detail": "bad"}', "bad"),
        (b'{"detail": [{"loc": ["body", "inputs"], "msg": "field required"}]}', "body.inputs: field required"),
        (b'{"message": "m"}', "m"),
        (b"plain text failure", "plain text failure"),
        (b"", "fallback"),
        (b'{"other": 1}', "{'other': 1}"),
        (b"\xff\xfe", "\ufffd\ufffd"),
    ],
)
def test_error_bodies(body, expected):
    assert rest_v2.decode_error_body(body, default="fallback") == expected


def test_encode_error_body_round_trips():
    assert rest_v2.decode_error_body(rest_v2.encode_error_body("no model 'x'")) == "no model 'x'"


def test_supports_binary():
    assert rest_v2.supports_binary({"extensions": ["classification", "binary_tensor_data"]})
    assert not rest_v2.supports_binary({"extensions": ["classification"]})
    assert not rest_v2.supports_binary({"extensions": "binary_tensor_data"})
    assert not rest_v2.supports_binary({})
