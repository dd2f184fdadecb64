"""The calls and request controls a tritonclient user has, against real Triton 2.51 (REST and gRPC).

Request controls on Triton's own schedulers: a sequence-batched model (``sequence_sum``: Triton refuses a request
without a ``sequence_id``, keeps a running sum per sequence) and a queue-policy model (``queue_sleep``: a request's
``timeout`` shortens its time in the queue; Triton rejects it with 503 when it runs out). Trace and log settings,
and loads with a new configuration or from file overrides alone.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from inferkit import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from inferkit.errors import InvalidInputError, ServiceUnavailableError, UnimplementedError
from tests.interop import harness

pytestmark = pytest.mark.interop

LOADABLE_MODEL_PY = Path(__file__).parent / "triton_models" / "loadable" / "1" / "model.py"


@pytest.fixture(params=["rest", "grpc"])
def client(request: pytest.FixtureRequest, triton: harness.Server) -> Iterator[Any]:
    if request.param == "rest":
        c: Any = InferenceRESTClient(triton.http_url, RESTConfig(retries=0, timeout=60))
    else:
        c = InferenceGRPCClient(triton.grpc_address, retries=0, timeout=60)
    with c:
        yield c


def _int(value: int) -> InferInput:
    return InferInput("INPUT", [1], "INT32").set_data_from_numpy(np.array([value], np.int32))


def _sleep(seconds: float) -> InferInput:
    return InferInput("INPUT", [1, 1], "FP32").set_data_from_numpy(np.array([[seconds]], np.float32))


@pytest.mark.parametrize("sequence_id", [7, 2**40, "session-a"])
def test_sequence_controls(client: Any, sequence_id: Any) -> None:
    sums = [
        client.infer(
            InferRequest("sequence_sum", [_int(v)], sequence_id=sequence_id, sequence_start=i == 0, sequence_end=i == 2)
        )
        for i, v in enumerate([1, 2, 3])
    ]
    assert [int(r.as_numpy("OUTPUT")[0]) for r in sums] == [1, 3, 6]
    assert [int(r.as_numpy("ENDED")[0]) for r in sums] == [0, 0, 1]


def test_a_sequence_model_refuses_a_request_without_sequence_id(client: Any) -> None:
    with pytest.raises(InvalidInputError, match="must specify a non-zero or non-empty correlation ID"):
        client.infer(InferRequest("sequence_sum", [_int(1)]))


def test_server_side_timeout_rejects_a_queued_request(client: Any) -> None:
    """Three slow requests keep the single instance busy; the fourth may wait 0.1 s only: Triton rejects it."""
    busy = [threading.Thread(target=client.infer, args=(InferRequest("queue_sleep", [_sleep(0.5)]),)) for _ in range(3)]
    for thread in busy:
        thread.start()
        time.sleep(0.05)
    try:
        with pytest.raises(ServiceUnavailableError, match="Request timeout expired"):
            client.infer(InferRequest("queue_sleep", [_sleep(0.0)], timeout=0.1))
    finally:
        for thread in busy:
            thread.join()
    assert client.infer(InferRequest("queue_sleep", [_sleep(0.0)], timeout=5, priority=1)).as_numpy("OUTPUT")[0] == 0


def test_trace_settings(client: Any, triton: harness.Server) -> None:
    base = client.get_trace_settings()
    assert base["trace_level"] == ["OFF"] and isinstance(base["trace_rate"], int) and base["trace_count"] == -1
    try:
        changed = client.update_trace_settings("add_sub", {"trace_rate": 9, "trace_count": 3})
        assert changed == {**base, "trace_rate": 9, "trace_count": 3} == client.get_trace_settings("add_sub")
        assert client.get_trace_settings() == base
    finally:
        assert client.update_trace_settings("add_sub", {"trace_rate": None, "trace_count": None}) == base
    with pytest.raises(InvalidInputError, match="unknown model"):
        client.get_trace_settings("no_such_model")
    with pytest.raises(UnimplementedError, match="trace file location"):
        client.update_trace_settings(settings={"trace_file": "/tmp/x.json"})


def test_log_settings(client: Any) -> None:
    base = client.get_log_settings()
    assert base["log_info"] is True and base["log_verbose_level"] == 0 and isinstance(base["log_format"], str)
    try:
        assert client.update_log_settings({"log_verbose_level": 1}) == {**base, "log_verbose_level": 1}
    finally:
        assert client.update_log_settings({"log_verbose_level": 0}) == base


def _wait_ready(client: Any, name: str, ready: bool = True) -> None:
    deadline = time.monotonic() + 30
    while client.is_model_ready(name) != ready:
        assert time.monotonic() < deadline, f"{name} never became {'ready' if ready else 'unloaded'}"
        time.sleep(0.2)


def test_load_under_a_new_config_and_back(client: Any) -> None:
    client.load_model("loadable")
    try:
        config = client.get_model_config("loadable")
        assert config["max_batch_size"] == 0
        batched = {
            "backend": "python",
            "max_batch_size": 4,
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        }
        client.load_model("loadable", config=json.dumps(batched))
        assert client.get_model_config("loadable")["max_batch_size"] == 4
        client.unload_model("loadable")
        _wait_ready(client, "loadable", ready=False)
        client.load_model("loadable")  # the repository's config.pbtxt again
        assert client.get_model_config("loadable")["max_batch_size"] == 0
    finally:
        client.unload_model("loadable")


def test_load_from_file_overrides_alone(client: Any, request: pytest.FixtureRequest) -> None:
    name = f"from_files_{request.node.callspec.id}"  # in no repository: Triton loads it from the request alone
    config = {
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1, -1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1, -1]}],
    }
    client.load_model(name, config=json.dumps(config), files={"file:1/model.py": LOADABLE_MODEL_PY.read_bytes()})
    try:
        _wait_ready(client, name)
        x = np.array([[1.5, 2.5]], np.float32)
        request_ = InferRequest(name, [InferInput("INPUT0", [1, 2], "FP32").set_data_from_numpy(x)])
        np.testing.assert_array_equal(client.infer(request_).as_numpy("OUTPUT0"), x)
    finally:
        client.unload_model(name, unload_dependents=True)
