"""Fault injection and counters of the reference server, seen from raw HTTP and raw gRPC clients."""

from __future__ import annotations

import http.client
import json
import socket

import grpc
import numpy as np
import pytest

from inferkit.codec.grpc_methods import GRPC_METHODS
from inferkit.testing import Fault
from tests.testing.helpers import HEADER_LENGTH, add_sub_body, call, grpc_stub, infer_message, split_binary

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.int32)
INFER = "/v2/models/add_sub/infer"


def infer(server, body=None, **kwargs):
    return call(server, "POST", INFER, body or add_sub_body(A, B), **kwargs)


def test_status_fault_with_retry_after_applies_times_then_clears(reference_server):
    reference_server.inject(
        Fault(route="infer", model="add_sub", action="status", status=503, retry_after=1.0, times=2)
    )
    first, second, third = infer(reference_server), infer(reference_server), infer(reference_server)
    assert first.status == second.status == 503 and third.status == 200
    assert first.headers["retry-after"] == "1" and "injected fault" in first.json()["error"]
    assert reference_server.count(route="infer", model="add_sub") == 3


def test_fault_scoped_to_model_route_and_protocol(reference_server):
    reference_server.inject(Fault(route="infer", model="iris", action="status", status=500, times=None))
    assert infer(reference_server).status == 200
    reference_server.inject(Fault(route="model_metadata", action="status", status=429, times=None, protocol="grpc"))
    assert call(reference_server, "GET", "/v2/models/add_sub").status == 200
    reference_server.inject(Fault(action="status", status=502, times=None))  # every route
    assert call(reference_server, "GET", "/v2/health/live").status == 502
    assert infer(reference_server).status == 502
    reference_server.reset()
    assert infer(reference_server).status == 200 and reference_server.count() == 1


def test_grpc_status_fault_over_rest_maps_to_http(reference_server):
    reference_server.inject(Fault(route="infer", action="grpc_status", code="RESOURCE_EXHAUSTED"))
    assert infer(reference_server).status == 429


def test_delay_then_normal_answer(reference_server):
    reference_server.inject(Fault(route="infer", action="delay", seconds=0.05))
    assert infer(reference_server).status == 200
    reference_server.inject(Fault(route="infer", action="delay", seconds=2.0))
    with pytest.raises(socket.timeout):
        infer(reference_server, timeout=0.2)


def test_drop_before_closes_without_answer(reference_server):
    reference_server.inject(Fault(route="infer", action="drop_before"))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        infer(reference_server)
    assert infer(reference_server).status == 200
    assert reference_server.count(route="infer") == 2


@pytest.mark.parametrize("action", ["drop_during", "truncate"])
def test_cut_short_replies(reference_server, action):
    reference_server.inject(Fault(route="infer", action=action))
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)) as info:
        infer(reference_server)
    if isinstance(info.value, http.client.IncompleteRead):
        assert info.value.expected > 0 and len(info.value.partial) > 0


def test_lie_header_length(reference_server):
    reference_server.inject(Fault(route="infer", action="lie_header_length"))
    reply = infer(reference_server, add_sub_body(A, B, parameters={"binary_data_output": True}))
    assert reply.status == 200 and int(reply.headers[HEADER_LENGTH.lower()]) > len(reply.body)
    reference_server.inject(Fault(route="infer", action="lie_header_length", value=10))
    reply = infer(reference_server, add_sub_body(A, B, parameters={"binary_data_output": True}))
    with pytest.raises(ValueError):
        json.loads(reply.body[: int(reply.headers[HEADER_LENGTH.lower()])])


def test_lie_binary_size(reference_server):
    reference_server.inject(Fault(route="infer", action="lie_binary_size"))
    reply = infer(reference_server)  # asked for JSON: the fault forces binary outputs, then lies
    length = int(reply.headers[HEADER_LENGTH.lower()])
    header = json.loads(reply.body[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes[0] == 68 and sum(sizes) != len(reply.body) - length


def test_malformed_json(reference_server):
    reference_server.inject(Fault(route="model_metadata", action="malformed_json"))
    reply = call(reference_server, "GET", "/v2/models/add_sub")
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(reply.body)


def test_trickle_delivers_the_whole_body(reference_server):
    reference_server.inject(Fault(route="infer", action="trickle", chunk_size=7, seconds=0.001))
    reply = infer(reference_server, add_sub_body(A, B, parameters={"binary_data_output": True}))
    _, out = split_binary(reply)
    np.testing.assert_array_equal(np.frombuffer(out["OUTPUT0"], "<i4"), (A + B).reshape(-1))


def test_counters_count_every_attempt_rest_and_grpc(reference_server):
    call(reference_server, "GET", "/v2/health/live")
    call(reference_server, "GET", "/v2/models/nope")
    infer(reference_server)
    with grpc.insecure_channel(reference_server.grpc_address) as channel:
        grpc_stub(channel, "ModelInfer")(infer_message("add_sub", {"INPUT0": A, "INPUT1": B}), timeout=10)
        grpc_stub(channel, "ServerLive")(GRPC_METHODS["ServerLive"].request_type(), timeout=10)
    assert reference_server.count(route="infer", model="add_sub") == 2
    assert reference_server.count(route="live") == 2
    assert reference_server.count(route="model_metadata", model="nope") == 1
    assert reference_server.count(model="add_sub") == 2 and reference_server.count() == 5


def test_fault_validation():
    with pytest.raises(ValueError):
        Fault(action="explode")
    with pytest.raises(ValueError):
        Fault(route="nowhere")
    with pytest.raises(ValueError):
        Fault(times=0)


# -- gRPC --------------------------------------------------------------------------------------------------


@pytest.fixture
def grpc_infer(reference_server):
    with grpc.insecure_channel(reference_server.grpc_address) as channel:
        stub = grpc_stub(channel, "ModelInfer")
        yield lambda **kw: stub.with_call(
            infer_message("add_sub", {"INPUT0": A, "INPUT1": B}), timeout=kw.get("timeout", 10)
        )


def test_grpc_status_fault_with_retry_after(reference_server, grpc_infer):
    reference_server.inject(Fault(route="infer", action="status", status=503, retry_after=0.5, times=1))
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "injected fault" in info.value.details()
    trailing = dict(info.value.trailing_metadata())
    assert trailing["retry-after"] == "0.5" and trailing["grpc-retry-pushback-ms"] == "500"
    reply, _ = grpc_infer()
    assert reply.model_name == "add_sub"
    assert reference_server.count(route="infer") == 2


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(route="infer", action="grpc_status", code="RESOURCE_EXHAUSTED"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Fault(route="infer", action="status", status=404), grpc.StatusCode.NOT_FOUND),
        (Fault(route="infer", action="drop_before"), grpc.StatusCode.UNAVAILABLE),
        (Fault(route="infer", action="drop_during"), grpc.StatusCode.UNAVAILABLE),
        (Fault(route="infer", action="truncate"), grpc.StatusCode.UNAVAILABLE),
        (Fault(route="infer", action="malformed_json"), grpc.StatusCode.INTERNAL),
    ],
)
def test_grpc_faults(reference_server, grpc_infer, fault, code):
    reference_server.inject(fault)
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer()
    assert info.value.code() == code


def test_grpc_delay_meets_the_deadline(reference_server, grpc_infer):
    reference_server.inject(Fault(route="infer", action="delay", seconds=2.0))
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_grpc_lie_binary_size(reference_server, grpc_infer):
    reference_server.inject(Fault(route="infer", action="lie_binary_size"))
    reply, _ = grpc_infer()
    assert len(reply.raw_output_contents[0]) == 68  # shape [1,16] INT32 says 64


def test_grpc_stream_faults(reference_server):
    with grpc.insecure_channel(reference_server.grpc_address) as channel:
        stream = grpc_stub(channel, "ModelStreamInfer")
        requests = [infer_message("repeat", {"IN": np.array([1, 2], np.int32)}, id=str(i)) for i in range(2)]
        reference_server.inject(Fault(route="stream_infer", model="repeat", action="status", status=503))
        replies = list(stream(iter(requests), timeout=10))
        assert "injected fault" in replies[0].error_message and replies[0].infer_response.id == "0"
        assert [r.infer_response.id for r in replies[1:]] == ["1", "1"]
        assert reference_server.count(route="stream_infer", model="repeat") == 2
        reference_server.inject(Fault(route="stream_infer", action="grpc_status", code="UNAVAILABLE"))
        with pytest.raises(grpc.RpcError) as info:
            list(stream(iter(requests), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
