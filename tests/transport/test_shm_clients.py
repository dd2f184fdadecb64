"""System shared memory through the four clients (REST/gRPC, sync/aio) against the reference server.

One case table drives every client: the sync clients are called directly, the async ones through ``asyncio.run``
with the same method names and arguments (parity is asserted in tests/unit/test_parity.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("grpc")

import inferkit.aio as aio  # noqa: E402
from inferkit import InferenceGRPCClient, InferenceRESTClient  # noqa: E402
from inferkit.codec.tensors import InferInput, InferRequest, InferRequestedOutput  # noqa: E402
from inferkit.errors import ConflictError, EncodeError, InvalidInputError, NotFoundError  # noqa: E402
from inferkit.shm import SharedMemoryRegion  # noqa: E402

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
KINDS = ("rest", "grpc", "aio_rest", "aio_grpc")


class Caller:
    """Calls a client method by name, sync or async alike (a fresh client per call for aio: one event loop each)."""

    def __init__(self, kind: str, server: Any) -> None:
        self.kind = kind
        self.server = server
        self._sync: Any = None
        if kind == "rest":
            self._sync = InferenceRESTClient(server.http_url)
        elif kind == "grpc":
            self._sync = InferenceGRPCClient(server.grpc_address)

    def _make_async(self) -> Any:
        if self.kind == "aio_rest":
            return aio.InferenceRESTClient(self.server.http_url)
        return aio.InferenceGRPCClient(self.server.grpc_address)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self._sync is not None:
            return getattr(self._sync, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            async def main() -> Any:
                async with self._make_async() as client:
                    return await asyncio.wait_for(getattr(client, name)(*args, **kwargs), 20)

            return asyncio.run(main())

        return call

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()


@pytest.fixture(params=KINDS)
def client(request: pytest.FixtureRequest, reference_server: Any):
    caller = Caller(request.param, reference_server)
    try:
        yield caller
    finally:
        caller.close()


@pytest.fixture
def regions():
    before = {n for n in os.listdir("/dev/shm") if n.startswith("inferkit_")}
    with SharedMemoryRegion(128, name="in") as inputs, SharedMemoryRegion(128, name="out") as outputs:
        inputs.set([A, B])
        yield inputs, outputs
    assert {n for n in os.listdir("/dev/shm") if n.startswith("inferkit_")} <= before  # nothing leaked


def shm_request(inputs: SharedMemoryRegion, outputs: SharedMemoryRegion) -> InferRequest:
    return InferRequest(
        "add_sub",
        [
            InferInput("INPUT0", [1, 16], "INT32").set_shared_memory(inputs.name, 64),
            InferInput("INPUT1", [1, 16], "INT32").set_shared_memory(inputs.name, 64, offset=64),
        ],
        outputs=[outputs.requested_output("OUTPUT0", 64), InferRequestedOutput("OUTPUT1")],
    )


def test_register_status_unregister(client, regions):
    inputs, outputs = regions
    assert client.get_system_shared_memory_status() == []
    client.register_system_shared_memory(inputs.name, inputs.key, inputs.byte_size)
    client.register_system_shared_memory(outputs.name, outputs.key, 64, offset=64)
    assert sorted(client.get_system_shared_memory_status(), key=lambda r: r["name"]) == [
        {"name": "in", "key": inputs.key, "offset": 0, "byte_size": 128},
        {"name": "out", "key": outputs.key, "offset": 64, "byte_size": 64},
    ]
    assert client.get_system_shared_memory_status("out") == [
        {"name": "out", "key": outputs.key, "offset": 64, "byte_size": 64}
    ]
    # As Triton: REST says 400, gRPC ALREADY_EXISTS; one meaning, one class on both.
    with pytest.raises(ConflictError, match="already in manager") as info:
        client.register_system_shared_memory(inputs.name, inputs.key, inputs.byte_size)
    assert info.value.status_code == (409 if client.kind.endswith("grpc") else 400)
    with pytest.raises(NotFoundError):
        client.get_system_shared_memory_status("nope")
    client.unregister_system_shared_memory("out")
    assert [r["name"] for r in client.get_system_shared_memory_status()] == ["in"]
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == []
    assert client.server.count(route="shm_register") == 3
    assert client.server.count(route="shm_unregister") == 2


def test_infer_with_inputs_and_an_output_in_shared_memory(client, regions):
    inputs, outputs = regions
    client.register_system_shared_memory(inputs.name, inputs.key, inputs.byte_size)
    client.register_system_shared_memory(outputs.name, outputs.key, outputs.byte_size)
    response = client.infer(shm_request(inputs, outputs))
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), A - B)  # in the reply, as usual
    out0 = response.get_output("OUTPUT0")
    assert out0.shared_memory == ("out", 64, 0) and (out0.datatype, out0.shape) == ("INT32", [1, 16])
    with pytest.raises(ValueError, match="read it from the region"):
        out0.as_numpy()
    np.testing.assert_array_equal(outputs.as_numpy(out0.datatype, out0.shape), A + B)
    # The same regions serve the next request without registering again.
    inputs.set([B, A])
    client.infer(shm_request(inputs, outputs))
    np.testing.assert_array_equal(outputs.as_numpy("INT32", [1, 16]), A + B)


def test_server_errors_are_typed(client, regions):
    inputs, outputs = regions
    with pytest.raises(InvalidInputError, match="Unable to find shared memory region"):
        client.infer(shm_request(inputs, outputs))
    client.register_system_shared_memory(inputs.name, inputs.key, 96)  # INPUT1 (64..128) out of bounds
    client.register_system_shared_memory(outputs.name, outputs.key, outputs.byte_size)
    with pytest.raises(InvalidInputError, match="Invalid offset"):
        client.infer(shm_request(inputs, outputs))


def test_bad_registration_arguments_fail_before_sending(client, regions):
    inputs, _ = regions
    for args in (("", inputs.key, 8), ("r", "", 8), ("r", inputs.key, -1), ("r", inputs.key, 8, -4)):
        with pytest.raises(EncodeError):
            client.register_system_shared_memory(*args)
    assert client.server.count(route="shm_register") == 0


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_large_tensor_round_trip(kind, reference_server):
    """4 MiB in and out through shared memory: nothing but parameters crosses the socket."""
    arr = np.random.default_rng(0).random(1 << 20, dtype=np.float32)
    with SharedMemoryRegion(arr.nbytes) as src, SharedMemoryRegion(arr.nbytes) as dst:
        x = src.infer_input("INPUT0", arr)
        cls = InferenceRESTClient if kind == "rest" else InferenceGRPCClient
        url = reference_server.http_url if kind == "rest" else reference_server.grpc_address
        with cls(url) as c:
            c.register_system_shared_memory(src.name, src.key, src.byte_size)
            c.register_system_shared_memory(dst.name, dst.key, dst.byte_size)
            try:
                response = c.infer(InferRequest("identity_fp32", [x], outputs=[dst.requested_output("OUTPUT0")]))
            finally:
                c.unregister_system_shared_memory()
        out = response.get_output("OUTPUT0")
        np.testing.assert_array_equal(dst.as_numpy(out.datatype, out.shape), arr)
