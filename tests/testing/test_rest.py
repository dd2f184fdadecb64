"""The reference server's REST front end, through raw http.client calls: every route, JSON and binary,
compression, KServe v1 and errors."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from tests.testing.helpers import HEADER_LENGTH, add_sub_body, binary_body, call, split_binary

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


def test_health_and_server_metadata(reference_server):
    assert call(reference_server, "GET", "/v2/health/live").status == 200
    assert call(reference_server, "GET", "/v2/health/ready").status == 200
    meta = call(reference_server, "GET", "/v2").json()
    assert meta["name"] == "inferkit-reference" and meta["version"]
    for ext in (
        "binary_tensor_data",
        "model_configuration",
        "statistics",
        "model_repository",
        "classification",
        "sequence",
        "schedule_policy",
    ):
        assert ext in meta["extensions"]


def test_model_metadata_and_versions(reference_server):
    meta = call(reference_server, "GET", "/v2/models/add_sub").json()
    assert meta == {
        "name": "add_sub",
        "versions": ["1"],
        "platform": "python",
        "inputs": [{"name": f"INPUT{i}", "datatype": "INT32", "shape": [-1, 16]} for i in range(2)],
        "outputs": [{"name": f"OUTPUT{i}", "datatype": "INT32", "shape": [-1, 16]} for i in range(2)],
    }
    assert call(reference_server, "GET", "/v2/models/versioned").json()["versions"] == ["1", "2", "3"]
    assert call(reference_server, "GET", "/v2/models/versioned/versions/2").status == 200
    missing = call(reference_server, "GET", "/v2/models/versioned/versions/9")
    assert missing.status == 404 and "version 9" in missing.json()["error"]


def test_model_ready(reference_server):
    assert call(reference_server, "GET", "/v2/models/add_sub/ready").status == 200
    assert call(reference_server, "GET", "/v2/models/versioned/versions/3/ready").status == 200
    # Triton 2.51 (tests/interop/test_reference_vs_triton.py): an unknown model or version is a 400 on this route.
    assert call(reference_server, "GET", "/v2/models/nope/ready").status == 400
    assert call(reference_server, "GET", "/v2/models/add_sub/versions/7/ready").status == 400


def test_infer_json(reference_server):
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", add_sub_body(A, B, id="req-7"))
    assert reply.status == 200, reply
    body = reply.json()
    assert body["model_name"] == "add_sub" and body["model_version"] == "1" and body["id"] == "req-7"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["OUTPUT0"]["shape"] == [1, 16] and out["OUTPUT0"]["datatype"] == "INT32"
    assert out["OUTPUT0"]["data"] == (A + B).reshape(-1).tolist()
    assert out["OUTPUT1"]["data"] == (A - B).reshape(-1).tolist()


def test_infer_on_a_version_reports_it(reference_server):
    body = {"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}
    reply = call(reference_server, "POST", "/v2/models/versioned/versions/2/infer", body)
    assert reply.json()["model_version"] == "2"
    assert call(reference_server, "POST", "/v2/models/versioned/infer", body).json()["model_version"] == "3"


def test_infer_binary_inputs_and_outputs(reference_server):
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, A.tobytes(), B.tobytes())
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", body, headers)
    assert reply.status == 200, reply
    head, raw = split_binary(reply)
    assert [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [64, 64]
    assert "data" not in head["outputs"][0]
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT0"], "<i4"), (A + B).reshape(-1))
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT1"], "<i4"), (A - B).reshape(-1))


def test_infer_per_output_binary_and_selection(reference_server):
    body = add_sub_body(A, B, outputs=[{"name": "OUTPUT1", "parameters": {"binary_data": True}}])
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", body)
    head, raw = split_binary(reply)
    assert [o["name"] for o in head["outputs"]] == ["OUTPUT1"]
    np.testing.assert_array_equal(np.frombuffer(raw["OUTPUT1"], "<i4"), (A - B).reshape(-1))
    # one binary, one JSON output
    body = add_sub_body(
        A,
        B,
        outputs=[
            {"name": "OUTPUT0", "parameters": {"binary_data": False}},
            {"name": "OUTPUT1", "parameters": {"binary_data": True}},
        ],
    )
    head, raw = split_binary(call(reference_server, "POST", "/v2/models/add_sub/infer", body))
    assert head["outputs"][0]["data"] == (A + B).reshape(-1).tolist() and list(raw) == ["OUTPUT1"]


def test_bytes_tensors_json_and_binary(reference_server):
    words = ["alpha", "", "gamma ✓"]
    body = {"inputs": [{"name": "INPUT0", "shape": [3], "datatype": "BYTES", "data": words}]}
    reply = call(reference_server, "POST", "/v2/models/identity_bytes/infer", body)
    assert reply.json()["outputs"][0]["data"] == words
    raw = b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)
    header = {
        "inputs": [{"name": "INPUT0", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    payload, headers = binary_body(header, raw)
    _, out = split_binary(call(reference_server, "POST", "/v2/models/identity_bytes/infer", payload, headers))
    assert out["OUTPUT0"] == raw


def test_bf16_and_fp16_binary(reference_server):
    bits = np.array([0x3F80, 0x4000, 0xC040], dtype="<u2")  # 1.0, 2.0, -3.0 in bfloat16
    for model, datatype in (("identity_bf16", "BF16"), ("identity_fp16", "FP16")):
        header = {
            "inputs": [{"name": "INPUT0", "shape": [3], "datatype": datatype, "parameters": {"binary_data_size": 6}}],
            "parameters": {"binary_data_output": True},
        }
        payload, headers = binary_body(header, bits.tobytes())
        reply = call(reference_server, "POST", f"/v2/models/{model}/infer", payload, headers)
        head, out = split_binary(reply)
        assert head["outputs"][0]["datatype"] == datatype and out["OUTPUT0"] == bits.tobytes()


def test_classification(reference_server):
    body = {
        "inputs": [
            {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
    }
    out = call(reference_server, "POST", "/v2/models/iris/infer", body).json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
    first, second = out["data"][0].split(":"), out["data"][2].split(":")
    assert first[1:] == ["0", "setosa"] and second[1:] == ["2", "virginica"]
    assert float(first[0]) > 0.9 and float(out["data"][1].split(":")[0]) < float(first[0])
    # a model without labels: "score:index"
    body = add_sub_body(A, B, outputs=[{"name": "OUTPUT0", "parameters": {"classification": 3}}])
    out = call(reference_server, "POST", "/v2/models/add_sub/infer", body).json()["outputs"][0]
    assert out["data"] == ["18.000000:15", "17.000000:14", "16.000000:13"]


def test_iris_classifier_is_accurate(reference_server):
    from inferkit.testing._iris import load_iris

    x, y = load_iris()
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    out = {o["name"]: o for o in call(reference_server, "POST", "/v2/models/iris/infer", body).json()["outputs"]}
    predicted = np.array(out["probabilities"]["data"]).reshape(150, 3).argmax(axis=1)
    assert (predicted == y).mean() > 0.9


def test_model_config(reference_server):
    config = call(reference_server, "GET", "/v2/models/add_sub/config").json()
    assert config["name"] == "add_sub" and config["max_batch_size"] == 0
    assert {k: config["input"][0][k] for k in ("name", "data_type", "dims", "optional")} == {
        "name": "INPUT0",
        "data_type": "TYPE_INT32",
        "dims": [-1, 16],
        "optional": False,
    }
    # Triton 2.51 prints every field with its default, and the transaction policy only when it is set.
    assert config["input"][0]["format"] == "FORMAT_NONE" and config["default_model_filename"] == "model.py"
    assert "model_transaction_policy" not in config
    iris = call(reference_server, "GET", "/v2/models/iris/config").json()
    assert iris["max_batch_size"] == 1024 and iris["input"][0]["dims"] == [4]
    assert iris["output"][1]["data_type"] == "TYPE_STRING"
    assert call(reference_server, "GET", "/v2/models/repeat/config").json()["model_transaction_policy"]["decoupled"]
    assert call(reference_server, "GET", "/v2/models/nope/config").status == 404


def test_statistics(reference_server):
    for _ in range(2):
        call(reference_server, "POST", "/v2/models/add_sub/infer", add_sub_body(A, B))
    call(reference_server, "POST", "/v2/models/add_sub/infer", add_sub_body(A[:, :8], B[:, :8]))  # fails: shape
    stats = call(reference_server, "GET", "/v2/models/add_sub/stats").json()["model_stats"]
    assert len(stats) == 1
    entry = stats[0]
    assert entry["name"] == "add_sub" and entry["version"] == "1"
    assert entry["inference_count"] == 2 and entry["execution_count"] == 2 and entry["last_inference"] > 0
    inference = entry["inference_stats"]
    assert set(inference) == {
        *("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"),
        *("cache_hit", "cache_miss"),  # as Triton 2.51, always present
    }
    assert entry["response_stats"] == {} and entry["memory_usage"] == []
    assert inference["success"]["count"] == 2 and inference["fail"]["count"] == 1
    assert inference["compute_infer"]["ns"] > 0
    everything = call(reference_server, "GET", "/v2/models/stats").json()["model_stats"]
    assert {s["name"] for s in everything} >= {"add_sub", "iris", "versioned"}
    assert len(call(reference_server, "GET", "/v2/models/versioned/versions/2/stats").json()["model_stats"]) == 1


def test_repository_index_load_unload(reference_server):
    index = call(reference_server, "POST", "/v2/repository/index").json()
    assert {"name": "add_sub", "version": "1", "state": "READY"} in index
    assert call(reference_server, "POST", "/v2/repository/models/add_sub/unload").status == 200
    assert call(reference_server, "GET", "/v2/models/add_sub/ready").status == 400
    assert call(reference_server, "POST", "/v2/models/add_sub/infer", add_sub_body(A, B)).status == 404
    assert call(reference_server, "GET", "/v1/models/add_sub").status == 503
    index = call(reference_server, "POST", "/v2/repository/index", {}).json()
    assert {"name": "add_sub", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    ready_only = call(reference_server, "POST", "/v2/repository/index", {"ready": True}).json()
    assert all(e["name"] != "add_sub" for e in ready_only)
    assert call(reference_server, "POST", "/v2/repository/models/add_sub/load", {}).status == 200
    assert call(reference_server, "POST", "/v2/models/add_sub/infer", add_sub_body(A, B)).status == 200
    # As Triton 2.51: loading a model that is not in the repository is a 500; unloading one is a no-op (200).
    assert call(reference_server, "POST", "/v2/repository/models/nope/load").status == 500
    assert call(reference_server, "POST", "/v2/repository/models/nope/unload").status == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_request_decompression_and_response_compression(reference_server, encoding):
    raw = json.dumps(add_sub_body(A, B)).encode()
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    reply = call(
        reference_server,
        "POST",
        "/v2/models/add_sub/infer",
        packed,
        {"Content-Encoding": encoding, "Accept-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert reply.status == 200 and reply.headers["content-encoding"] == encoding
    plain = gzip.decompress(reply.body) if encoding == "gzip" else zlib.decompress(reply.body)
    assert json.loads(plain)["outputs"][0]["data"] == (A + B).reshape(-1).tolist()


def test_compressed_binary_reply_keeps_uncompressed_header_length(reference_server):
    body = add_sub_body(A, B, parameters={"binary_data_output": True})
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", body, {"Accept-Encoding": "gzip"})
    plain = gzip.decompress(reply.body)
    length = int(reply.headers[HEADER_LENGTH.lower()])
    assert len(plain) == length + 128 and json.loads(plain[:length])["outputs"][0]["name"] == "OUTPUT0"


def test_no_compression_unless_asked(reference_server):
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", add_sub_body(A, B))
    assert "content-encoding" not in reply.headers


def test_v1_routes(reference_server):
    assert call(reference_server, "GET", "/").json() == {"status": "alive"}
    assert "iris" in call(reference_server, "GET", "/v1/models").json()["models"]
    assert call(reference_server, "GET", "/v1/models/iris").json() == {"name": "iris", "ready": True}
    assert call(reference_server, "GET", "/v1/models/nope").status == 404
    reply = call(
        reference_server, "POST", "/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    )
    predictions = reply.json()["predictions"]
    assert [p["label"] for p in predictions] == ["setosa", "virginica"] and len(predictions[0]["probabilities"]) == 3
    single = call(reference_server, "POST", "/v1/models/identity_fp32:predict", {"instances": [1.5, 2.5]}).json()
    assert single == {"predictions": [1.5, 2.5]}
    explained = call(reference_server, "POST", "/v1/models/iris:explain", {"instances": [[5.1, 3.5, 1.4, 0.2]]}).json()
    assert explained["predictions"] == ["setosa"] and "petal_length" in explained["explanations"][0]["contributions"]
    assert call(reference_server, "POST", "/v1/models/add_sub:explain", {"instances": [[1] * 16]}).status == 501
    assert call(reference_server, "POST", "/v1/models/iris:predict", {"rows": []}).status == 400
    assert call(reference_server, "POST", "/v1/models/nope:predict", {"instances": [1]}).status == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            add_sub_body(A[:, :8], B[:, :8]),
            "unexpected shape for input 'INPUT0' for model 'add_sub'. Expected [-1,16], got [1,8]",
        ),
        (
            {
                "inputs": [
                    {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16},
                    {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [0] * 16},
                ]
            },
            "inference input 'INPUT0' data-type is 'FP32', but model 'add_sub' expects 'INT32'",
        ),
        (
            {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [0] * 16}]},
            "missing required input(s) ['INPUT1']",
        ),
        ({"inputs": [{"name": "X", "shape": [1], "datatype": "INT32", "data": [0]}]}, "unexpected inference input 'X'"),
        (add_sub_body(A, B, outputs=[{"name": "NOPE"}]), "unexpected inference output 'NOPE'"),
    ],
)
def test_invalid_requests_are_400(reference_server, body, fragment):
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", body)
    assert reply.status == 400, reply
    assert fragment in reply.json()["error"]


def test_unparseable_bodies_are_500_like_triton(reference_server):
    # Triton 2.51 answers 500 for a v2 body it cannot parse (tests/interop/test_reference_vs_triton.py checks it).
    assert call(reference_server, "POST", "/v2/models/add_sub/infer", b"{not json").status == 500
    count_mismatch = {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [0] * 3}]}
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", count_mismatch)
    assert reply.status == 500 and "INPUT0" in reply.json()["error"]
    body, headers = binary_body(
        {"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}}]},
        b"\0" * 10,
    )
    reply = call(reference_server, "POST", "/v2/models/add_sub/infer", body, headers)
    assert reply.status == 500 and "INPUT0" in reply.json()["error"]
    headers[HEADER_LENGTH] = "999999"
    assert call(reference_server, "POST", "/v2/models/add_sub/infer", body, headers).status == 500


def test_unknown_model_is_404(reference_server):
    for method, path in (
        ("GET", "/v2/models/nope"),
        ("POST", "/v2/models/nope/infer"),
    ):
        reply = call(reference_server, method, path, add_sub_body(A, B) if method == "POST" else None)
        assert reply.status == 404 and reply.json()["error"] == "Request for unknown model: 'nope' is not found"
    # Statistics of an unknown model: Triton 2.51 answers 400, not 404.
    reply = call(reference_server, "GET", "/v2/models/nope/stats")
    assert reply.status == 400 and "nope" in reply.json()["error"]


def test_model_exception_is_500_with_message(reference_server):
    body = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    reply = call(reference_server, "POST", "/v2/models/fail/infer", body)
    assert reply.status == 500 and "planned failure" in reply.json()["error"]


def test_decoupled_model_over_rest_is_rejected(reference_server):
    body = {"inputs": [{"name": "IN", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}
    reply = call(reference_server, "POST", "/v2/models/repeat/infer", body)
    assert reply.status == 400 and "decoupled" in reply.json()["error"]


def test_sequence_parameters_reach_the_model(reference_server):
    def send(value, **params):
        body = {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "INT32", "data": [value]}], "parameters": params}
        return call(reference_server, "POST", "/v2/models/sequence/infer", body).json()["outputs"][0]["data"][0]

    assert send(5, sequence_id=42, sequence_start=True) == 5
    assert send(7, sequence_id=42) == 12
    assert send(1, sequence_id=43, sequence_start=True) == 1
    assert send(3, sequence_id=42, sequence_end=True) == 15


def test_large_binary_request(reference_server):
    big = np.arange(1 << 20, dtype=np.float32)  # 4 MiB, over aiohttp's default 1 MiB body limit
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [big.size], "datatype": "FP32", "parameters": {"binary_data_size": big.nbytes}}
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, big.tobytes())
    _, out = split_binary(call(reference_server, "POST", "/v2/models/identity_fp32/infer", body, headers))
    assert out["OUTPUT0"] == big.tobytes()
