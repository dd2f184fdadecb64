"""What the sync gRPC transport relies on in grpcio beyond its public API, asserted: a new grpcio that changes it
fails here (the transport then reports a connect timeout as ReadTimeout instead of ConnectTimeout)."""

from __future__ import annotations

import pytest

grpc = pytest.importorskip("grpc")


def test_the_core_channel_reports_its_connectivity_state() -> None:
    # GRPCTransport.channel_state reads channel._channel.check_connectivity_state(False) and matches the integer it
    # returns against grpc.ChannelConnectivity's values (the first item of each value tuple).
    channel = grpc.insecure_channel("127.0.0.1:1")
    try:
        value = channel._channel.check_connectivity_state(False)
        names = {state.value[0]: state.name for state in grpc.ChannelConnectivity}
        assert names.get(value) == "IDLE"  # a new channel that was not asked to connect
    finally:
        channel.close()


def test_the_transport_reads_it() -> None:
    from inferkit import InferenceGRPCClient

    with InferenceGRPCClient("127.0.0.1:1", retries=0) as client:
        assert client._transport.channel_state() in {"IDLE", "CONNECTING", "TRANSIENT_FAILURE"}
