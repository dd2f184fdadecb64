"""inferkit.codec.rest_v1 (v1 bodies and the v1 <-> v2 mapping) and inferkit.codec.routes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inferkit.codec import rest_v1
from inferkit.codec.grpc_methods import SERVICE_NAME, method_path
from inferkit.codec.routes import Route, v1, v2
from inferkit.codec.tensors import InferInput, InferOutput, InferRequest, InferResponse
from inferkit.errors import DecodeError, EncodeError


# -- v1 bodies --------------------------------------------------------------------------------------------------
def test_encode_predict_request_instances_and_inputs():
    assert json.loads(rest_v1.encode_predict_request([[1, 2], [3, 4]])) == {"instances": [[1, 2], [3, 4]]}
    arr = np.array([[1.5, 2.0]], np.float32)
    assert json.loads(rest_v1.encode_predict_request(arr)) == {"instances": [[1.5, 2.0]]}
    assert json.loads(rest_v1.encode_predict_request(np.array([b"a", b"b"], dtype=object))) == {"instances": ["a", "b"]}
    body = rest_v1.encode_predict_request(inputs={"x": [1]}, extra={"signature_name": "s"})
    assert json.loads(body) == {"signature_name": "s", "inputs": {"x": [1]}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of instances or inputs"),
        ({"instances": [1], "inputs": [1]}, "exactly one of instances or inputs"),
        ({"instances": np.array(3)}, "batch axis"),
    ],
)
def test_encode_predict_request_errors(kwargs, message):
    with pytest.raises(EncodeError, match=message):
        rest_v1.encode_predict_request(model_name="m", **kwargs)


def test_decode_v1_bodies():
    assert rest_v1.decode_predict_response(b'{"predictions": [1, 2]}') == {"predictions": [1, 2]}
    assert rest_v1.decode_explain_response(b'{"explanations": {"a": 1}}') == {"explanations": {"a": 1}}
    assert rest_v1.decode_explain_response(b"[1]") == [1]
    assert rest_v1.decode_predict_request(b'{"instances": [[1]]}', model_name="m") == {"instances": [[1]]}
    assert rest_v1.decode_predict_request(b'{"inputs": {"a": [1]}}', model_name="m") == {"inputs": {"a": [1]}}
    assert json.loads(rest_v1.encode_predict_response(np.array([0.5, 1.0]))) == {"predictions": [0.5, 1.0]}


@pytest.mark.parametrize(
    ("fn", "body", "message"),
    [
        (rest_v1.decode_predict_response, b'{"result": 1}', r"model 'm' has no 'predictions'"),
        (rest_v1.decode_predict_response, b"[1]", r"model 'm' has no 'predictions'"),
        (rest_v1.decode_predict_response, b"{", r"v1 predict response of model 'm' JSON|not valid JSON"),
        (rest_v1.decode_explain_response, b"nope", r"v1 explain response of model 'm'"),
        (rest_v1.decode_predict_request, b"[1]", r"must be a JSON object"),
        (rest_v1.decode_predict_request, b'{"instances": 5}', r"'instances' must be a list"),
        (rest_v1.decode_predict_request, b'{"rows": []}', r"needs 'instances' or 'inputs'"),
        (rest_v1.decode_predict_request, b"[" * 100_000, r"nested too deeply|not valid JSON"),
    ],
)
def test_decode_v1_errors(fn, body, message):
    with pytest.raises(DecodeError, match=message):
        fn(body, model_name="m")


# -- v1 <-> v2 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("instances", "datatype", "dtype"),
    [
        ([[1, 2], [3, 4]], "INT64", np.int64),
        ([[1.5], [2.0]], "FP64", np.float64),
        ([True, False], "BOOL", np.bool_),
        (["a", "b"], "BYTES", object),
    ],
)
def test_v1_instances_to_v2_infers_the_datatype(instances, datatype, dtype):
    req = rest_v1.v1_instances_to_v2_request({"instances": instances}, "m")
    (tensor,) = req.inputs
    assert (
        tensor.name == "input-0"
        and tensor.datatype == datatype
        and tensor.shape == [len(instances), *np.shape(instances)[1:]]
    )
    arr = tensor.as_numpy()
    assert arr.dtype == np.dtype(dtype)
    assert arr.tolist() == instances  # BYTES inputs keep the caller's str until they are serialized


def test_v1_dict_rows_become_one_input_per_key_and_back():
    body = {"instances": [{"a": 1, "b": [0.5, 1.5]}, {"a": 2, "b": [2.5, 3.5]}]}
    req = rest_v1.v1_instances_to_v2_request(body, "m")
    assert [(t.name, t.shape, t.datatype) for t in req.inputs] == [("a", [2], "INT64"), ("b", [2, 2], "FP64")]
    assert rest_v1.v2_request_to_v1_body(req) == body


def test_v1_inputs_forms():
    req = rest_v1.v1_instances_to_v2_request({"inputs": {"x": [[1, 2]], "y": ["s"]}}, "m")
    assert [t.name for t in req.inputs] == ["x", "y"]
    req = rest_v1.v1_instances_to_v2_request({"inputs": [[1, 2]]}, "m", input_name="in")
    assert req.inputs[0].name == "in" and req.inputs[0].shape == [1, 2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": []}, "non-empty list of rows"),
        ({"instances": 5}, "non-empty list of rows"),
        ({"instances": [[1, 2], [3]]}, "not a regular"),
        ({"instances": [{"a": 1}, {"b": 2}]}, "same keys"),
        ({"rows": []}, "needs 'instances' or 'inputs'"),
        ({"instances": [{"a": 1 + 2j}]}, "complex|datatype"),
    ],
)
def test_v1_to_v2_errors(body, message):
    with pytest.raises(EncodeError, match=message):
        rest_v1.v1_instances_to_v2_request(body, "m")


def test_v2_to_v1_response_one_and_several_outputs():
    one = InferResponse("m", [InferOutput("o", [2, 2], "FP32").set_data_from_numpy(np.eye(2, dtype=np.float32))])
    assert rest_v1.v2_response_to_v1_body(one) == {"predictions": [[1.0, 0.0], [0.0, 1.0]]}
    two = InferResponse(
        "m",
        [
            InferOutput("label", [2], "BYTES").set_data_from_numpy(np.array([b"cat", b"dog"], dtype=object)),
            InferOutput("score", [2], "FP64").set_data_from_numpy(np.array([0.9, 0.1])),
        ],
    )
    assert rest_v1.v2_response_to_v1_body(two) == {
        "predictions": [{"label": "cat", "score": 0.9}, {"label": "dog", "score": 0.1}]
    }
    mismatched = InferResponse(
        "m",
        [
            InferOutput("a", [2], "INT8").set_data_from_numpy(np.zeros(2, np.int8)),
            InferOutput("b", [3], "INT8").set_data_from_numpy(np.zeros(3, np.int8)),
        ],
    )
    with pytest.raises(EncodeError, match="share their first dimension"):
        rest_v1.v2_response_to_v1_body(mismatched)


def test_v1_response_to_v2_and_round_trip():
    resp = rest_v1.v1_body_to_v2_response({"predictions": [[0.1, 0.9], [0.8, 0.2]]}, "m")
    assert resp.model_name == "m" and resp.outputs[0].name == "output-0" and resp.outputs[0].datatype == "FP64"
    assert rest_v1.v2_response_to_v1_body(resp) == {"predictions": [[0.1, 0.9], [0.8, 0.2]]}
    with pytest.raises(DecodeError, match="no 'predictions'"):
        rest_v1.v1_body_to_v2_response({}, "m")
    with pytest.raises(DecodeError, match="non-empty list"):
        rest_v1.v1_body_to_v2_response({"predictions": []}, "m")


def test_v2_request_to_v1_single_input():
    x = InferInput("x", [2, 1], "INT32").set_data_from_numpy(np.array([[1], [2]], np.int32))
    assert rest_v1.v2_request_to_v1_body(InferRequest("m", [x])) == {"instances": [[1], [2]]}


# -- routes ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (v2.server_live(), ("GET", "/v2/health/live")),
        (v2.server_ready(), ("GET", "/v2/health/ready")),
        (v2.server_metadata(), ("GET", "/v2")),
        (v2.model_metadata("m"), ("GET", "/v2/models/m")),
        (v2.model_metadata("m", "2"), ("GET", "/v2/models/m/versions/2")),
        (v2.model_metadata("m", ""), ("GET", "/v2/models/m")),
        (v2.model_ready("m", "1"), ("GET", "/v2/models/m/versions/1/ready")),
        (v2.model_config("m"), ("GET", "/v2/models/m/config")),
        (v2.model_statistics(), ("GET", "/v2/models/stats")),
        (v2.model_statistics("m", "3"), ("GET", "/v2/models/m/versions/3/stats")),
        (v2.infer("m"), ("POST", "/v2/models/m/infer")),
        (v2.infer("a b/c", 1), ("POST", "/v2/models/a%20b%2Fc/versions/1/infer")),  # type: ignore[arg-type]
        (v2.generate("llm"), ("POST", "/v2/models/llm/generate")),
        (v2.generate("llm", stream=True), ("POST", "/v2/models/llm/generate_stream")),
        (v2.repository_index(), ("POST", "/v2/repository/index")),
        (v2.repository_load("m"), ("POST", "/v2/repository/models/m/load")),
        (v2.repository_unload("m"), ("POST", "/v2/repository/models/m/unload")),
        (v1.server_live(), ("GET", "/")),
        (v1.list_models(), ("GET", "/v1/models")),
        (v1.model_ready("m"), ("GET", "/v1/models/m")),
        (v1.predict("m"), ("POST", "/v1/models/m:predict")),
        (v1.explain("a/b"), ("POST", "/v1/models/a%2Fb:explain")),
    ],
)
def test_routes(route, expected):
    assert isinstance(route, Route) and tuple(route) == expected


@pytest.mark.parametrize("bad", ["", None, 3])
def test_routes_reject_empty_model_names(bad):
    with pytest.raises(ValueError, match="model name"):
        v2.infer(bad)  # type: ignore[arg-type]


def test_grpc_path():
    # gRPC paths have one home, the method table (routes.py holds REST routes only).
    assert SERVICE_NAME == "inference.GRPCInferenceService"
    assert method_path("ModelInfer") == "/inference.GRPCInferenceService/ModelInfer"
